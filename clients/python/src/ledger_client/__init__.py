"""Typed Python client for the ledger.v1 credit ledger gRPC service.

>>> from ledger_client import LedgerClient, LedgerError, Reason, to_minor
>>> with LedgerClient("127.0.0.1:50051") as ledger:          # doctest: +SKIP
...     account = ledger.create_account(currency="USD", external_ref="customer-42")
...     ledger.credit(account.name, to_minor("25.00", "USD"), "USD", kind="top_up")

:class:`AsyncLedgerClient` has the same methods for asyncio (grpc.aio), each awaited:

>>> async with AsyncLedgerClient("127.0.0.1:50051") as ledger:   # doctest: +SKIP
...     account = await ledger.create_account(currency="USD", external_ref="customer-42")

The generated messages and stubs are in the ``ledger.v1`` package of the same
distribution.
"""

from ._async.client import AsyncLedgerClient
from ._sync.client import LedgerClient
from .conventions import (
    check_length,
    from_signed_amount,
    signed_transaction_request,
    to_signed_amount,
    to_signed_balance,
)
from .dates import date_from_proto, date_to_proto, datetime_from_proto, timestamp_to_proto
from .errors import ERROR_DOMAIN, FieldViolation, LedgerError, Reason
from .money import exponent, from_minor, is_iso_currency, register_unit, to_minor
from .requests import (
    IMPORT_REPLY_BYTES,
    MAX_IMPORT_CHUNK,
    AccountStatusLike,
    CreditOptions,
    DirectionLike,
    KindLike,
    TransactionOptions,
    TransactionStatusLike,
    TypeLike,
    capture_request,
    hold_request,
    new_request_id,
    refund_request,
    transaction_request,
)
from .retry import RETRYABLE_CODES, RetryPolicy

__all__ = [
    "ERROR_DOMAIN",
    "IMPORT_REPLY_BYTES",
    "MAX_IMPORT_CHUNK",
    "RETRYABLE_CODES",
    "AccountStatusLike",
    "AsyncLedgerClient",
    "CreditOptions",
    "DirectionLike",
    "FieldViolation",
    "KindLike",
    "LedgerClient",
    "LedgerError",
    "Reason",
    "RetryPolicy",
    "TransactionOptions",
    "TransactionStatusLike",
    "TypeLike",
    "capture_request",
    "check_length",
    "date_from_proto",
    "date_to_proto",
    "datetime_from_proto",
    "exponent",
    "from_minor",
    "from_signed_amount",
    "hold_request",
    "is_iso_currency",
    "new_request_id",
    "refund_request",
    "register_unit",
    "signed_transaction_request",
    "timestamp_to_proto",
    "to_minor",
    "to_signed_amount",
    "to_signed_balance",
    "transaction_request",
]
