"""Which API scope each ledger RPC needs, read from the `(ledger.v1.required_scope)`
method option in the protos: the contract is the one place that says it."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import descriptor_pool
from ledger.v1 import auth_pb2

from ledger_server.core.auth import SCOPES


def required_scopes(services: Iterable[str]) -> dict[str, str]:
    """`/package.Service/Method` -> scope. Fails closed: a method without a valid scope
    stops the server from starting rather than serving it unauthenticated."""
    scopes = {}
    for name in services:
        service = descriptor_pool.Default().FindServiceByName(name)
        for method in service.methods:
            scope = method.GetOptions().Extensions[auth_pb2.required_scope]
            if scope not in SCOPES:
                raise RuntimeError(
                    f"{method.full_name} has no valid (ledger.v1.required_scope) option: {scope!r}"
                )
            scopes[f"/{service.full_name}/{method.name}"] = scope
    return scopes
