"""What both clients (LedgerClient and AsyncLedgerClient) share: the request builders
that batches and imports take, the argument checks every method makes before it calls,
and the paging helpers."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeAlias, TypedDict

from ledger.v1 import account_pb2, transaction_pb2, transaction_service_pb2

from .dates import date_to_proto, timestamp_to_proto

__all__ = [
    "IMPORT_REPLY_BYTES",
    "MAX_IMPORT_CHUNK",
    "AccountStatusLike",
    "CreditOptions",
    "DirectionLike",
    "KindLike",
    "TransactionOptions",
    "TransactionStatusLike",
    "TypeLike",
    "capture_request",
    "hold_request",
    "new_request_id",
    "refund_request",
    "transaction_request",
]

#: The most items one ImportTransactions chunk (and one batch) may carry.
MAX_IMPORT_CHUNK = 1000

#: How large :meth:`LedgerClient.import_transactions` lets one call's reply grow, each
#: item's result estimated as its request plus 512 bytes: the server refuses a call whose
#: results would pass its message limit (4 MiB by default) with IMPORT_TOO_LARGE, so a
#: larger import is sent as several calls.
IMPORT_REPLY_BYTES = 3 * 1024 * 1024

#: A transaction direction: ``transaction_pb2.DIRECTION_CREDIT`` / ``DIRECTION_DEBIT`` or
#: the strings ``"credit"`` / ``"debit"`` (any case; ``"DIRECTION_CREDIT"`` also works).
DirectionLike: TypeAlias = transaction_pb2.Direction.ValueType | str
#: An account status as its number or its name (``"frozen"``, ``"ACCOUNT_STATUS_FROZEN"``).
AccountStatusLike: TypeAlias = account_pb2.AccountStatus.ValueType | str
#: A transaction kind: a ``transaction_pb2.TRANSACTION_KIND_*`` value or its short name,
#: ``"adjustment"``, ``"top_up"`` (or ``"top-up"``), ``"promotion"``, ``"purchase"``.
KindLike: TypeAlias = transaction_pb2.TransactionKind.ValueType | str
#: A transaction type: a ``transaction_pb2.TRANSACTION_TYPE_*`` value or its short name,
#: ``"standard"``, ``"hold"``, ``"capture"``, ``"refund"``, ``"transfer"``, ``"expiry"``.
TypeLike: TypeAlias = transaction_pb2.TransactionType.ValueType | str
#: A transaction status: a ``transaction_pb2.TRANSACTION_STATUS_*`` value or its short name,
#: ``"pending"``, ``"posted"``, ``"voided"``, ``"captured"``, ``"partially_refunded"``,
#: ``"refunded"``.
TransactionStatusLike: TypeAlias = transaction_pb2.TransactionStatus.ValueType | str


def transaction_request(
    *,
    account: str,
    direction: DirectionLike,
    amount: int,
    currency: str,
    kind: KindLike | None = None,
    description: str = "",
    posting_date: datetime.date | None = None,
    external_id: str = "",
    metadata: Mapping[str, str] | None = None,
    expire_time: datetime.datetime | None = None,
    request_id: str | None = None,
) -> transaction_service_pb2.CreateTransactionRequest:
    """A CreateTransactionRequest (with a request_id: a new UUID unless given), for
    :meth:`LedgerClient.batch_create_transactions` and
    :meth:`LedgerClient.import_transactions`; arguments as for
    :meth:`LedgerClient.create_transaction`."""
    resolved = _direction(direction)
    if expire_time is not None and resolved != transaction_pb2.DIRECTION_CREDIT:
        raise ValueError("only a credit can expire: expire_time needs direction credit")
    transaction = _transaction(
        account=account,
        direction=resolved,
        amount=amount,
        currency=currency,
        kind=_kind(kind),
        description=description,
        posting_date=posting_date,
        external_id=external_id,
        metadata=metadata,
        expire_time=expire_time,
    )
    return transaction_service_pb2.CreateTransactionRequest(
        transaction=transaction, request_id=_check_request_id(request_id)
    )


def hold_request(
    *,
    account: str,
    amount: int,
    currency: str,
    kind: KindLike | None = None,
    description: str = "",
    posting_date: datetime.date | None = None,
    external_id: str = "",
    metadata: Mapping[str, str] | None = None,
    expire_time: datetime.datetime | None = None,
    request_id: str | None = None,
) -> transaction_service_pb2.CreateTransactionRequest:
    """A batch item that places a hold (type HOLD, a debit) instead of posting, for
    :meth:`LedgerClient.batch_create_transactions`; arguments as for
    :meth:`LedgerClient.create_hold` (``expire_time``: when the hold lapses)."""
    request = transaction_request(
        account=account,
        direction=transaction_pb2.DIRECTION_DEBIT,
        amount=amount,
        currency=currency,
        kind=kind,
        description=description,
        posting_date=posting_date,
        external_id=external_id,
        metadata=metadata,
        request_id=request_id,
    )
    request.transaction.type = transaction_pb2.TRANSACTION_TYPE_HOLD
    if expire_time is not None:  # set here: transaction_request refuses it on a debit, as it should
        request.transaction.expire_time.CopyFrom(timestamp_to_proto(expire_time))
    return request


def capture_request(
    hold_name: str,
    *,
    amount: int = 0,
    description: str = "",
    posting_date: datetime.date | None = None,
    external_id: str = "",
    request_id: str | None = None,
) -> transaction_service_pb2.CreateTransactionRequest:
    """A batch item that captures the pending hold ``hold_name`` (type CAPTURE), for
    :meth:`LedgerClient.batch_create_transactions`; arguments as for
    :meth:`LedgerClient.capture_hold`. Its result is the posted CAPTURE debit (its
    ``related_transaction`` is the hold)."""
    return _settlement(
        transaction_pb2.TRANSACTION_TYPE_CAPTURE,
        hold_name,
        amount=amount,
        description=description,
        posting_date=posting_date,
        external_id=external_id,
        request_id=request_id,
    )


def refund_request(
    transaction_name: str,
    *,
    amount: int = 0,
    description: str = "",
    posting_date: datetime.date | None = None,
    external_id: str = "",
    metadata: Mapping[str, str] | None = None,
    request_id: str | None = None,
) -> transaction_service_pb2.CreateTransactionRequest:
    """A batch item that refunds the posted transaction ``transaction_name`` (type
    REFUND), for :meth:`LedgerClient.batch_create_transactions`; arguments as for
    :meth:`LedgerClient.refund`. Its result is the REFUND transaction."""
    return _settlement(
        transaction_pb2.TRANSACTION_TYPE_REFUND,
        transaction_name,
        amount=amount,
        description=description,
        posting_date=posting_date,
        external_id=external_id,
        metadata=metadata,
        request_id=request_id,
    )


def _settlement(
    type_: transaction_pb2.TransactionType.ValueType,
    related: str,
    *,
    amount: int,
    description: str,
    posting_date: datetime.date | None,
    external_id: str,
    request_id: str | None,
    metadata: Mapping[str, str] | None = None,
) -> transaction_service_pb2.CreateTransactionRequest:
    """A capture or refund as a transaction: its account, currency and direction are
    those of what it settles, so they are left unset."""
    transaction = _transaction(
        account="",
        direction=transaction_pb2.DIRECTION_UNSPECIFIED,
        amount=amount,
        currency="",
        description=description,
        posting_date=posting_date,
        external_id=external_id,
        metadata=metadata,
    )
    transaction.type = type_
    transaction.related_transaction = related
    return transaction_service_pb2.CreateTransactionRequest(
        transaction=transaction, request_id=_check_request_id(request_id)
    )


def _transaction(
    *,
    account: str,
    direction: transaction_pb2.Direction.ValueType,
    amount: int,
    currency: str,
    kind: transaction_pb2.TransactionKind.ValueType = transaction_pb2.TRANSACTION_KIND_UNSPECIFIED,
    description: str = "",
    posting_date: datetime.date | None = None,
    external_id: str = "",
    metadata: Mapping[str, str] | None = None,
    expire_time: datetime.datetime | None = None,
    counterparty_account: str = "",
) -> transaction_pb2.Transaction:
    """The Transaction message of a create, a hold or a transfer."""
    transaction = transaction_pb2.Transaction(
        account=account,
        counterparty_account=counterparty_account,
        direction=direction,
        amount=_check_amount(amount),
        currency=currency,
        kind=kind,
        description=description,
        external_id=external_id,
    )
    if posting_date is not None:
        transaction.posting_date.CopyFrom(date_to_proto(posting_date))
    if expire_time is not None:
        transaction.expire_time.CopyFrom(timestamp_to_proto(expire_time))
    if metadata:
        transaction.metadata.update(metadata)
    return transaction


class TransactionOptions(TypedDict, total=False):
    """The optional arguments of :meth:`LedgerClient.credit` and :meth:`LedgerClient.debit`,
    as in :meth:`LedgerClient.create_transaction`."""

    kind: KindLike | None
    description: str
    posting_date: datetime.date | None
    external_id: str
    metadata: Mapping[str, str] | None
    request_id: str | None
    timeout: float | None


class CreditOptions(TransactionOptions, total=False):
    """The optional arguments of :meth:`LedgerClient.credit`: those of a debit plus
    ``expire_time``, when the credit lot expires (an aware datetime in the future)."""

    expire_time: datetime.datetime | None


def new_request_id() -> str:
    """A fresh idempotency key (a random UUID, as AIP-155 asks)."""
    return str(uuid.uuid4())


def _import_calls(
    chunks: list[transaction_service_pb2.ImportTransactionsRequest], reply_bytes: int
) -> list[list[transaction_service_pb2.ImportTransactionsRequest]]:
    """`chunks` grouped into calls whose replies stay within ``reply_bytes`` (estimated),
    each with at least one chunk; no chunks make one call that sends none, as before."""
    calls: list[list[transaction_service_pb2.ImportTransactionsRequest]] = [[]]
    estimate = 0
    for chunk in chunks:
        size = sum(item.ByteSize() + 512 for item in chunk.requests)
        if calls[-1] and estimate + size > reply_bytes:
            calls.append([])
            estimate = 0
        calls[-1].append(chunk)
        estimate += size
    return calls


def _check_request_id(request_id: str | None) -> str:
    if request_id is None:
        return new_request_id()
    if not isinstance(request_id, str):
        raise TypeError(f"request_id must be a str, not {type(request_id).__name__}")
    try:
        uuid.UUID(request_id)
    except ValueError:
        raise ValueError(f"request_id must be a UUID string, got {request_id!r}") from None
    return request_id


def _enum_value(value: int | str, enum: Any, prefix: str, what: str, allow_zero: bool) -> int:
    """Resolve an enum value given as its number or as its (short) name."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a str or an enum value, not bool")
    if isinstance(value, str):
        key = value.strip().upper().replace("-", "_")
        if not key.startswith(prefix):
            key = prefix + key
        try:
            number = int(enum.Value(key))
        except ValueError:
            number = -1
    elif isinstance(value, int):
        number = value if value in enum.values() else -1
    else:
        raise TypeError(f"{what} must be a str or an enum value, not {type(value).__name__}")
    if number < 0 or (number == 0 and not allow_zero):
        allowed = ", ".join(repr(k[len(prefix) :].lower()) for k, v in enum.items() if v != 0)
        raise ValueError(f"invalid {what} {value!r}: expected one of {allowed}")
    return number


def _direction(value: DirectionLike) -> transaction_pb2.Direction.ValueType:
    number = _enum_value(value, transaction_pb2.Direction, "DIRECTION_", "direction", allow_zero=False)
    return transaction_pb2.Direction.ValueType(number)


def _account_status(value: AccountStatusLike) -> account_pb2.AccountStatus.ValueType:
    number = _enum_value(value, account_pb2.AccountStatus, "ACCOUNT_STATUS_", "status", allow_zero=False)
    return account_pb2.AccountStatus.ValueType(number)


def _kind(value: KindLike | None) -> transaction_pb2.TransactionKind.ValueType:
    if value is None:
        return transaction_pb2.TRANSACTION_KIND_UNSPECIFIED
    number = _enum_value(value, transaction_pb2.TransactionKind, "TRANSACTION_KIND_", "kind", allow_zero=True)
    return transaction_pb2.TransactionKind.ValueType(number)


def _type(value: TypeLike | None) -> transaction_pb2.TransactionType.ValueType:
    if value is None:
        return transaction_pb2.TRANSACTION_TYPE_UNSPECIFIED
    number = _enum_value(
        value, transaction_pb2.TransactionType, "TRANSACTION_TYPE_", "type", allow_zero=False
    )
    return transaction_pb2.TransactionType.ValueType(number)


def _status(value: TransactionStatusLike) -> transaction_pb2.TransactionStatus.ValueType:
    number = _enum_value(
        value, transaction_pb2.TransactionStatus, "TRANSACTION_STATUS_", "status", allow_zero=False
    )
    return transaction_pb2.TransactionStatus.ValueType(number)


def _check_amount(amount: int) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(
            f"amount must be an int number of minor units, not {type(amount).__name__}; "
            "convert decimal amounts with ledger_client.to_minor()"
        )
    return amount


def _with_token(metadata: Sequence[tuple[str, str]], token: str | None) -> list[tuple[str, str]]:
    return [*metadata, ("authorization", f"Bearer {token}")] if token else list(metadata)


class Page(Protocol):
    """A List method's response: its items and the token of the page after it."""

    @property
    def next_page_token(self) -> str: ...


def next_token(current: str, following: str) -> str:
    """The token of the page after the one read with ``current``."""
    if following and following == current:
        # A server bug; without this check the iteration would never end.
        raise RuntimeError(f"the server returned the same page token twice: {following!r}")
    return following
