"""Domain errors as gRPC statuses (api/errors.py): what a status carries, and that it stays
within what gRPC clients accept in a call's trailers (8 KiB by default)."""

from __future__ import annotations

import base64
import urllib.parse

import grpc
from google.rpc import error_details_pb2, status_pb2

from ledger_server.api.errors import MAX_MESSAGE_BYTES, ledger_status
from ledger_server.core.errors import FieldViolation, LedgerError, invalid


def grpc_message_size(message: str) -> int:
    """grpc-message as gRPC sends it: percent-encoded outside printable ASCII and for '%'."""
    return len(urllib.parse.quote(message.encode(), safe=bytes(range(0x20, 0x7F)).replace(b"%", b"")))


def details(status: status_pb2.Status) -> tuple[error_details_pb2.ErrorInfo, error_details_pb2.BadRequest]:
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(bad)
    return info, bad


def test_a_few_violations_are_all_listed_and_the_message_kept() -> None:
    status = ledger_status(
        invalid([FieldViolation("amount", "must be positive"), FieldViolation("currency", "required")])
    )
    info, bad = details(status)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert status.message == "invalid request: amount, currency"
    assert [v.field for v in bad.field_violations] == ["amount", "currency"]
    assert info.reason == "INVALID_REQUEST" and "omitted_violations" not in info.metadata


def test_thousands_of_violations_fit_in_the_trailers_and_say_how_many_are_left_out() -> None:
    violations = [
        FieldViolation(
            f"requests[{i // 50}].transaction.metadata['key_{i % 50}']",
            "values must be at most 500 characters",
        )
        for i in range(5000)
    ]
    status = ledger_status(invalid(violations))
    info, bad = details(status)
    listed = len(bad.field_violations)
    assert 0 < listed < 5000
    assert [v.field for v in bad.field_violations] == [v.field for v in violations[:listed]]
    assert info.metadata["omitted_violations"] == str(5000 - listed)
    assert status.message.startswith(f"{5000 - listed} more field violations not listed; invalid request: ")
    trailers = grpc_message_size(status.message) + len(base64.b64encode(status.SerializeToString()))
    assert trailers < 6 * 1024


def test_a_long_message_is_cut_to_its_encoded_budget() -> None:
    for char in ("a", "%", "Ē", "\x07", "𗰛"):
        message = ledger_status(LedgerError(invalid([]).category, "X", char * 5000)).message
        assert (
            message.endswith("...")
            and MAX_MESSAGE_BYTES - 12 < grpc_message_size(message) <= MAX_MESSAGE_BYTES
        )
    short = "account accounts/Ē not found"
    assert ledger_status(LedgerError(invalid([]).category, "X", short)).message == short
