"""Domain errors -> gRPC status with google.rpc details. Every error carries an ErrorInfo
whose reason a client can switch on; internals never leave the server."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from ledger_server.core.errors import Category, LedgerError

DOMAIN = "ledger.v1"
CODES = {category: grpc.StatusCode[category.value] for category in Category}


def _pack(*details: object) -> list[any_pb2.Any]:
    packed = []
    for detail in details:
        any_ = any_pb2.Any()
        any_.Pack(detail)  # type: ignore[arg-type]
        packed.append(any_)
    return packed


def status_of(
    code: grpc.StatusCode, reason: str, message: str, metadata: dict[str, str] | None = None
) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
    return status_pb2.Status(code=code.value[0], message=message, details=_pack(info))


def ledger_status(err: LedgerError) -> status_pb2.Status:
    status = status_of(CODES[err.category], err.reason, err.message, err.metadata)
    if err.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in err.violations
            ]
        )
        status.details.extend(_pack(bad))
    if err.resource:
        resource_type, name = err.resource
        status.details.extend(
            _pack(error_details_pb2.ResourceInfo(resource_type=resource_type, resource_name=name))
        )
    return status


def unavailable(reason: str, message: str, retry_after_ms: int = 200) -> status_pb2.Status:
    status = status_of(grpc.StatusCode.UNAVAILABLE, reason, message)
    delay = error_details_pb2.RetryInfo()
    delay.retry_delay.FromMilliseconds(retry_after_ms)
    status.details.extend(_pack(delay))
    return status
