"""Registers servicers from their service descriptors, by method name, like the generated
add_*Servicer_to_server, but serializing responses deterministically: protobuf writes
map entries in hash order otherwise, and a request_id retry must get back the very
bytes of the first response (which the ledger stores deterministically serialized)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

_HANDLER_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _serialize(message: Message) -> bytes:
    return message.SerializeToString(deterministic=True)


def add_servicer(server: grpc.Server, service_name: str, servicer: Any) -> None:
    service = descriptor_pool.Default().FindServiceByName(service_name)
    handlers = {
        method.name: _HANDLER_KINDS[(method.client_streaming, method.server_streaming)](
            getattr(servicer, method.name),
            request_deserializer=message_factory.GetMessageClass(method.input_type).FromString,
            response_serializer=_serialize,
        )
        for method in service.methods
    }
    server.add_registered_method_handlers(service_name, handlers)
