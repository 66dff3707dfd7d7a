"""grpcurl needs only the address: reflection lists every service and describes every
method, message, field and enum value with its .proto comment."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ledger_server.api.server import LedgerServer

# FileDescriptorProto field numbers, the path elements of source_code_info locations.
MESSAGE, ENUM, SERVICE = 4, 5, 6
FIELD, NESTED_MESSAGE, VALUE, METHOD = 2, 3, 2, 2


@pytest.fixture
def reflection_stub(server: LedgerServer) -> Iterator[reflection_pb2_grpc.ServerReflectionStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield reflection_pb2_grpc.ServerReflectionStub(channel)


def ask(
    stub: reflection_pb2_grpc.ServerReflectionStub, **request: str
) -> reflection_pb2.ServerReflectionResponse:
    replies = list(
        stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**request)]), timeout=10)
    )
    assert len(replies) == 1
    return replies[0]


def test_list_shows_ledger_health_and_reflection(
    reflection_stub: reflection_pb2_grpc.ServerReflectionStub,
) -> None:
    names = {s.name for s in ask(reflection_stub, list_services="").list_services_response.service}
    assert names == {
        "ledger.v1.AccountService",
        "ledger.v1.TransactionService",
        "ledger.v1.AdminService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


def _undocumented(fd: descriptor_pb2.FileDescriptorProto) -> list[str]:
    documented = {tuple(loc.path) for loc in fd.source_code_info.location if loc.leading_comments.strip()}
    missing = []

    def need(path: tuple[int, ...], what: str) -> None:
        if path not in documented:
            missing.append(what)

    def walk_message(msg: descriptor_pb2.DescriptorProto, path: tuple[int, ...]) -> None:
        need(path, msg.name)
        for i, f in enumerate(msg.field):
            need((*path, FIELD, i), f"{msg.name}.{f.name}")
        for i, nested in enumerate(msg.nested_type):
            if not nested.options.map_entry:
                walk_message(nested, (*path, NESTED_MESSAGE, i))

    for i, msg in enumerate(fd.message_type):
        walk_message(msg, (MESSAGE, i))
    for i, enum in enumerate(fd.enum_type):
        need((ENUM, i), enum.name)
        for j, value in enumerate(enum.value):
            need((ENUM, i, VALUE, j), value.name)
    for i, service in enumerate(fd.service):
        need((SERVICE, i), service.name)
        for j, method in enumerate(service.method):
            need((SERVICE, i, METHOD, j), f"{service.name}.{method.name}")
    return missing


@pytest.mark.parametrize("service", ["ledger.v1.AccountService", "ledger.v1.TransactionService"])
def test_describe_shows_every_element_with_its_comment(
    reflection_stub: reflection_pb2_grpc.ServerReflectionStub, service: str
) -> None:
    reply = ask(reflection_stub, file_containing_symbol=service)
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in reply.file_descriptor_response.file_descriptor_proto
    ]
    ours = [f for f in files if f.package == "ledger.v1"]
    assert any(s.name == service.rsplit(".", 1)[1] for f in ours for s in f.service)
    for fd in ours:
        assert _undocumented(fd) == [], fd.name
