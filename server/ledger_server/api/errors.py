"""Domain errors -> gRPC status with google.rpc details. Every error carries an ErrorInfo
whose reason a client can switch on; internals never leave the server."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from ledger_server.api.replies import that_fit
from ledger_server.core.errors import Category, LedgerError

DOMAIN = "ledger.v1"
CODES = {category: grpc.StatusCode[category.value] for category in Category}

# A status travels in the call's trailers, which gRPC clients refuse above 8 KiB by default
# (grpc.max_metadata_size): grpc-message percent-encoded (a byte outside printable ASCII
# takes three), and the Status, the message in it again, base64-encoded (4/3). An atomic
# batch's field violations alone can run to megabytes, so a status is cut to these
# budgets (~4.5 KiB of trailers at most) and says how many violations it left out: every
# client then receives it as sent.
MAX_MESSAGE_BYTES = 512  # grpc-message, once encoded
MAX_VIOLATIONS_BYTES = 2048  # the BadRequest detail, serialized


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
    return status_pb2.Status(code=code.value[0], message=_clipped(message), details=_pack(info))


def _clipped(message: str) -> str:
    """`message`, cut short if it would take more than MAX_MESSAGE_BYTES as grpc-message."""
    if len(message) * 12 <= MAX_MESSAGE_BYTES:  # 4 bytes a character, 3 each encoded
        return message
    room = MAX_MESSAGE_BYTES - len("...")
    for end, char in enumerate(message):
        room -= 1 if " " <= char <= "~" and char != "%" else 3 * len(char.encode("utf-8", "replace"))
        if room < 0:
            return message[:end] + "..."
    return message


def _violations(err: LedgerError) -> tuple[error_details_pb2.BadRequest, int]:
    """The BadRequest of `err`'s first violations that fit MAX_VIOLATIONS_BYTES, and how many
    did not fit."""
    listed = that_fit(
        (
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in err.violations
        ),
        MAX_VIOLATIONS_BYTES,
    )
    return error_details_pb2.BadRequest(field_violations=listed), len(err.violations) - len(listed)


def ledger_status(err: LedgerError) -> status_pb2.Status:
    if not err.violations:
        status = status_of(CODES[err.category], err.reason, err.message, err.metadata)
    else:
        bad, omitted = _violations(err)
        metadata, message = err.metadata, err.message
        if omitted:  # said first, where clipping the message cannot cut it off
            metadata = {**metadata, "omitted_violations": str(omitted)}
            message = f"{omitted} more field violations not listed; {message}"
        status = status_of(CODES[err.category], err.reason, message, metadata)
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
