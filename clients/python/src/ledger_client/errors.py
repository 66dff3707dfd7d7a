"""The one exception the client raises for a failed RPC, with the ledger's rich error
details (google.rpc.ErrorInfo and google.rpc.BadRequest) already decoded."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = ["ERROR_DOMAIN", "FieldViolation", "LedgerError", "Reason"]

#: ErrorInfo.domain of every error the ledger returns.
ERROR_DOMAIN: Final = "ledger.v1"

_DETAILS_KEY: Final = "grpc-status-details-bin"


class Reason:
    """The values of :attr:`LedgerError.reason`: the names of ``ledger.v1.ErrorReason``
    without their ``ERROR_REASON_`` prefix. Compare ``err.reason`` with these."""

    INVALID_REQUEST: Final = "INVALID_REQUEST"
    CURRENCY_MISMATCH: Final = "CURRENCY_MISMATCH"
    INVALID_PAGE_TOKEN: Final = "INVALID_PAGE_TOKEN"
    ACCOUNT_NOT_FOUND: Final = "ACCOUNT_NOT_FOUND"
    TRANSACTION_NOT_FOUND: Final = "TRANSACTION_NOT_FOUND"
    DUPLICATE_EXTERNAL_ID: Final = "DUPLICATE_EXTERNAL_ID"
    REQUEST_ID_REUSED: Final = "REQUEST_ID_REUSED"
    INSUFFICIENT_FUNDS: Final = "INSUFFICIENT_FUNDS"
    ACCOUNT_NOT_ACTIVE: Final = "ACCOUNT_NOT_ACTIVE"
    BALANCE_OVERFLOW: Final = "BALANCE_OVERFLOW"
    STORE_UNAVAILABLE: Final = "STORE_UNAVAILABLE"
    SHUTTING_DOWN: Final = "SHUTTING_DOWN"
    INTERNAL: Final = "INTERNAL"
    TOKEN_MISSING: Final = "TOKEN_MISSING"
    TOKEN_MALFORMED: Final = "TOKEN_MALFORMED"
    TOKEN_INVALID: Final = "TOKEN_INVALID"
    TOKEN_EXPIRED: Final = "TOKEN_EXPIRED"
    TOKEN_REVOKED: Final = "TOKEN_REVOKED"
    MISSING_SCOPE: Final = "MISSING_SCOPE"
    HOLD_NOT_PENDING: Final = "HOLD_NOT_PENDING"
    AMOUNT_EXCEEDS_HOLD: Final = "AMOUNT_EXCEEDS_HOLD"
    NOT_A_HOLD: Final = "NOT_A_HOLD"
    NOT_REFUNDABLE: Final = "NOT_REFUNDABLE"
    AMOUNT_EXCEEDS_REFUNDABLE: Final = "AMOUNT_EXCEEDS_REFUNDABLE"
    DEADLINE_EXCEEDED: Final = "DEADLINE_EXCEEDED"
    IMPORT_TOO_LARGE: Final = "IMPORT_TOO_LARGE"
    ACCOUNT_NOT_EMPTY: Final = "ACCOUNT_NOT_EMPTY"
    BALANCE_BELOW_FLOOR: Final = "BALANCE_BELOW_FLOOR"
    POSTING_DATE_TOO_EARLY: Final = "POSTING_DATE_TOO_EARLY"
    TENANT_CALL_LIMIT: Final = "TENANT_CALL_LIMIT"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field of a request, from google.rpc.BadRequest: ``field`` is the path
    of the field (``transaction.amount``), ``description`` says what is wrong."""

    field: str
    description: str


class LedgerError(Exception):
    """A failed ledger RPC.

    Attributes:
        code: the gRPC status code.
        message: the status message from the server.
        reason: ErrorInfo.reason (``"INSUFFICIENT_FUNDS"``, see :class:`Reason`), or None
            when the server sent no ErrorInfo (e.g. a proxy or transport failure).
        domain: ErrorInfo.domain (``"ledger.v1"``), or None.
        error_metadata: ErrorInfo.metadata, e.g. ``{"available": "100", ...}``.
        field_violations: the BadRequest field violations (INVALID_ARGUMENT only).
        status: the whole decoded google.rpc.Status, or None.
        request_id: the idempotency key that was sent, for mutations. After an error that
            left the outcome unknown (DEADLINE_EXCEEDED, UNAVAILABLE after the last
            attempt) the same call can be repeated with this request_id safely.
        attempts: how many attempts were made (more than 1 after retries).

    The original :class:`grpc.RpcError` is the ``__cause__``.
    """

    code: grpc.StatusCode
    message: str
    reason: str | None
    domain: str | None
    error_metadata: dict[str, str]
    field_violations: list[FieldViolation]
    status: status_pb2.Status | None
    request_id: str | None
    attempts: int

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str | None = None,
        domain: str | None = None,
        error_metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        status: status_pb2.Status | None = None,
        request_id: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.error_metadata = dict(error_metadata or {})
        self.field_violations = list(field_violations)
        self.status = status
        self.request_id = request_id
        self.attempts = attempts

    @classmethod
    def from_rpc_error(
        cls, error: grpc.RpcError, *, request_id: str | None = None, attempts: int = 1
    ) -> LedgerError:
        """Decode a :class:`grpc.RpcError` (its code, message and the google.rpc.Status
        in its ``grpc-status-details-bin`` trailer). The result's ``__cause__`` is not
        set here: raise it with ``raise ... from error``."""
        code = _code_of(error)
        message = _details_of(error)
        status = _status_of(error)
        reason: str | None = None
        domain: str | None = None
        error_metadata: dict[str, str] = {}
        violations: list[FieldViolation] = []
        if status is not None:
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason = info.reason or None
                    domain = info.domain or None
                    error_metadata = dict(info.metadata)
                elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad_request = error_details_pb2.BadRequest()
                    detail.Unpack(bad_request)
                    violations.extend(
                        FieldViolation(field=v.field, description=v.description)
                        for v in bad_request.field_violations
                    )
            if not message:
                message = status.message
        return cls(
            code,
            message,
            reason=reason,
            domain=domain,
            error_metadata=error_metadata,
            field_violations=violations,
            status=status,
            request_id=request_id,
            attempts=attempts,
        )

    def __str__(self) -> str:
        head = self.code.name
        if self.reason:
            head += f" {self.reason}"
        text = f"{head}: {self.message}" if self.message else head
        if self.error_metadata:
            pairs = ", ".join(f"{k}={v}" for k, v in sorted(self.error_metadata.items()))
            text += f" ({pairs})"
        if self.field_violations:
            text += "; " + "; ".join(f"{v.field}: {v.description}" for v in self.field_violations)
        extras = []
        if self.request_id:
            extras.append(f"request_id={self.request_id}")
        if self.attempts > 1:
            extras.append(f"after {self.attempts} attempts")
        if extras:
            text += f" [{', '.join(extras)}]"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, message={self.message!r}, "
            f"reason={self.reason!r}, error_metadata={self.error_metadata!r}, "
            f"field_violations={self.field_violations!r})"
        )


def _code_of(error: grpc.RpcError) -> grpc.StatusCode:
    try:
        code = error.code()
    except Exception:  # an RpcError that is not a grpc.Call
        return grpc.StatusCode.UNKNOWN
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _details_of(error: grpc.RpcError) -> str:
    try:
        details = error.details()
    except Exception:
        return ""
    return details if isinstance(details, str) else ""


def _status_of(error: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status in the trailers, via grpc_status; if grpc_status refuses it
    because its code or message differ from the call's (a proxy rewrote them), the
    trailer is decoded anyway: the details are still the server's."""
    try:
        status: status_pb2.Status | None = rpc_status.from_call(error)
        return status
    except ValueError:
        pass
    except Exception:  # not a grpc.Call: no trailers to read
        return None
    try:
        # grpc's _Metadatum entries are (key, value) named tuples; plain tuples work too.
        entries: Iterable[Any] = error.trailing_metadata() or ()
        for key, value in entries:
            if key == _DETAILS_KEY and isinstance(value, bytes):
                return status_pb2.Status.FromString(value)
    except Exception:
        return None
    return None
