"""Server reflection that keeps the .proto comments.

The stock servicer re-serializes descriptors from the runtime pool, which drops
source_code_info, so `grpcurl describe` would show no documentation. This one answers
with the FileDescriptorProtos of the descriptor set generated next to the stubs (built
with --include_source_info) wherever it has them. It is the asyncio servicer: an open
reflection stream waits on the event loop, not in a worker thread."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

# The package exposes it only through enable_server_reflection(); this subclass needs it.
from grpc_reflection.v1alpha._async import ReflectionServicer


def _documented_files() -> dict[str, bytes]:
    data = resources.files("ledger.v1").joinpath("descriptor_set.binpb").read_bytes()
    return {f.name: f.SerializeToString() for f in descriptor_pb2.FileDescriptorSet.FromString(data).file}


class DocumentedReflectionServicer(ReflectionServicer):  # type: ignore[misc]
    def __init__(self, service_names: Iterable[str]) -> None:
        super().__init__(service_names)
        self._documented = _documented_files()

    async def ServerReflectionInfo(
        self, request_iterator: AsyncIterable[Any], context: Any
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for response in super().ServerReflectionInfo(request_iterator, context):
            files = response.file_descriptor_response.file_descriptor_proto
            for i, data in enumerate(files):
                name = descriptor_pb2.FileDescriptorProto.FromString(data).name
                files[i] = self._documented.get(name, data)
            yield response
