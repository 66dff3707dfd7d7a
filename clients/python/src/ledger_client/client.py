"""A typed, synchronous client for the ledger.v1 AccountService, TransactionService and
AdminService."""

from __future__ import annotations

import datetime
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeAlias, TypedDict, TypeVar

import grpc
from google.protobuf import field_mask_pb2
from ledger.v1 import (
    account_pb2,
    account_service_pb2,
    account_service_pb2_grpc,
    admin_service_pb2,
    admin_service_pb2_grpc,
    transaction_pb2,
    transaction_service_pb2,
    transaction_service_pb2_grpc,
)
from typing_extensions import Unpack  # typing.Unpack needs Python 3.11

from .dates import date_to_proto, timestamp_to_proto
from .errors import LedgerError
from .retry import RetryPolicy, call_with_retry

__all__ = [
    "IMPORT_REPLY_BYTES",
    "MAX_IMPORT_CHUNK",
    "AccountStatusLike",
    "CreditOptions",
    "DirectionLike",
    "KindLike",
    "LedgerClient",
    "TransactionOptions",
    "TransactionStatusLike",
    "TypeLike",
    "new_request_id",
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


_C = TypeVar("_C", bound="LedgerClient")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_StatusRequest = TypeVar(
    "_StatusRequest",
    account_service_pb2.FreezeAccountRequest,
    account_service_pb2.UnfreezeAccountRequest,
    account_service_pb2.CloseAccountRequest,
)


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


class LedgerClient:
    """A client for one ledger server.

    Every call has a deadline (``timeout`` seconds, retries included), sends the API
    ``token`` as ``authorization: Bearer <token>`` plus any other ``metadata``, retries UNAVAILABLE
    up to ``max_attempts`` attempts in all with exponential backoff and full jitter, and
    raises :class:`LedgerError` for any failed RPC. Mutations carry a ``request_id``
    (a new UUID unless one is given) that is the same on every retry, so a retried
    create is applied at most once.

    Use it as a context manager, or call :meth:`close`. It is safe to share between
    threads.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float = 10.0,
        max_attempts: int = 4,
        initial_backoff: float = 0.05,
        max_backoff: float = 2.0,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        # Validate before opening a channel, so that a bad argument leaks nothing.
        policy = RetryPolicy(
            max_attempts=max_attempts, initial_backoff=initial_backoff, max_backoff=max_backoff
        )
        if credentials is None:
            channel = grpc.insecure_channel(target, options=list(options))
        else:
            channel = grpc.secure_channel(target, credentials, options=list(options))
        self._setup(
            channel, owns_channel=True, metadata=_with_token(metadata, token), timeout=timeout, policy=policy
        )

    @classmethod
    def from_channel(
        cls: type[_C],
        channel: grpc.Channel,
        *,
        token: str | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float = 10.0,
        max_attempts: int = 4,
        initial_backoff: float = 0.05,
        max_backoff: float = 2.0,
        close_channel: bool = False,
    ) -> _C:
        """A client over an existing channel (e.g. one with interceptors). The channel
        stays the caller's: :meth:`close` closes it only if ``close_channel`` is true."""
        policy = RetryPolicy(
            max_attempts=max_attempts, initial_backoff=initial_backoff, max_backoff=max_backoff
        )
        client = cls.__new__(cls)
        client._setup(
            channel,
            owns_channel=close_channel,
            metadata=_with_token(metadata, token),
            timeout=timeout,
            policy=policy,
        )
        return client

    def _setup(
        self,
        channel: grpc.Channel,
        *,
        owns_channel: bool,
        metadata: Sequence[tuple[str, str]],
        timeout: float,
        policy: RetryPolicy,
    ) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError("timeout must be a number of seconds")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        self._channel = channel
        self._owns_channel = owns_channel
        self._metadata: tuple[tuple[str, str], ...] = tuple((str(k), str(v)) for k, v in metadata)
        self._timeout = float(timeout)
        self._policy = policy
        self._closed = False
        self._accounts = account_service_pb2_grpc.AccountServiceStub(channel)
        self._transactions = transaction_service_pb2_grpc.TransactionServiceStub(channel)
        self._admin = admin_service_pb2_grpc.AdminServiceStub(channel)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def channel(self) -> grpc.Channel:
        """The underlying gRPC channel."""
        return self._channel

    @property
    def timeout(self) -> float:
        """The default deadline of each call in seconds, retries included."""
        return self._timeout

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._policy

    def close(self) -> None:
        """Close the channel (if this client opened it). Idempotent."""
        if not self._closed:
            self._closed = True
            if self._owns_channel:
                self._channel.close()

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------

    def _call(
        self,
        rpc: grpc.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        *,
        timeout: float | None,
        request_id: str | None = None,
    ) -> _Resp:
        def attempt(remaining: float) -> _Resp:
            return rpc(request, timeout=remaining, metadata=self._metadata)

        return self._retrying(attempt, timeout=timeout, request_id=request_id)

    def _call_stream(
        self,
        rpc: grpc.StreamUnaryMultiCallable[_Req, _Resp],
        messages: Sequence[_Req],
        *,
        timeout: float | None,
    ) -> _Resp:
        """A client-streaming call; every attempt sends the whole of ``messages`` again."""

        def attempt(remaining: float) -> _Resp:
            return rpc(iter(messages), timeout=remaining, metadata=self._metadata)

        return self._retrying(attempt, timeout=timeout, request_id=None)

    def _retrying(
        self, attempt: Callable[[float], _Resp], *, timeout: float | None, request_id: str | None
    ) -> _Resp:
        attempts = 0

        def count(number: int) -> None:
            nonlocal attempts
            attempts = number

        budget = self._timeout if timeout is None else timeout
        try:
            return call_with_retry(attempt, self._policy, timeout=budget, on_attempt=count)
        except grpc.RpcError as error:
            raise LedgerError.from_rpc_error(error, request_id=request_id, attempts=attempts) from error

    # -- AccountService ----------------------------------------------------------------

    def create_account(
        self,
        *,
        currency: str,
        external_ref: str = "",
        balance_floor: int = 0,
        metadata: Mapping[str, str] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> account_pb2.Account:
        """Open an account in ``currency`` (ISO 4217 or a custom credit unit) for the
        holder ``external_ref``. ``balance_floor`` (minor units, <= 0) allows an
        overdraft down to it."""
        request_id = _check_request_id(request_id)
        account = account_pb2.Account(
            currency=currency, external_ref=external_ref, balance_floor=balance_floor
        )
        if metadata:
            account.metadata.update(metadata)
        request = account_service_pb2.CreateAccountRequest(account=account, request_id=request_id)
        response = self._call(self._accounts.CreateAccount, request, timeout=timeout, request_id=request_id)
        return response.account

    def get_account(self, name: str, *, timeout: float | None = None) -> account_pb2.Account:
        """Read one account (``accounts/{id}``) with its current balances."""
        request = account_service_pb2.GetAccountRequest(name=name)
        return self._call(self._accounts.GetAccount, request, timeout=timeout).account

    def update_account(
        self,
        name: str,
        *,
        external_ref: str | None = None,
        balance_floor: int | None = None,
        metadata: Mapping[str, str] | None = None,
        reason: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> account_pb2.Account:
        """Change the account ``name``'s ``external_ref``, ``balance_floor`` (raise or
        lower a credit line) or ``metadata`` (replaced whole): the ones given, the rest
        stay; ``reason`` is kept with the change (:meth:`list_account_updates`). A floor
        above the available balance raises BALANCE_BELOW_FLOOR."""
        request_id = _check_request_id(request_id)
        account = account_pb2.Account(name=name)
        paths: list[str] = []
        if external_ref is not None:
            account.external_ref = external_ref
            paths.append("external_ref")
        if balance_floor is not None:
            account.balance_floor = balance_floor
            paths.append("balance_floor")
        if metadata is not None:
            account.metadata.update(metadata)
            paths.append("metadata")
        if not paths:
            raise ValueError("nothing to update: give external_ref, balance_floor or metadata")
        request = account_service_pb2.UpdateAccountRequest(
            account=account,
            update_mask=field_mask_pb2.FieldMask(paths=paths),
            request_id=request_id,
            reason=reason,
        )
        return self._call(
            self._accounts.UpdateAccount, request, timeout=timeout, request_id=request_id
        ).account

    def freeze_account(
        self, name: str, *, reason: str = "", request_id: str | None = None, timeout: float | None = None
    ) -> account_pb2.Account:
        """Freeze the account ``name`` (``accounts/{id}``): it refuses postings, holds,
        captures, refunds and transfers until unfrozen; its holds can still be voided.
        ``reason`` (at most 500 characters) becomes its ``status_reason``. Freezing a
        frozen account changes nothing; a closed one raises ACCOUNT_NOT_ACTIVE."""
        request = account_service_pb2.FreezeAccountRequest(name=name, reason=reason)
        return self._change_status(self._accounts.FreezeAccount, request, request_id, timeout)

    def unfreeze_account(
        self, name: str, *, reason: str = "", request_id: str | None = None, timeout: float | None = None
    ) -> account_pb2.Account:
        """Make the frozen account ``name`` active again. Unfreezing an active account
        changes nothing; a closed one raises ACCOUNT_NOT_ACTIVE."""
        request = account_service_pb2.UnfreezeAccountRequest(name=name, reason=reason)
        return self._change_status(self._accounts.UnfreezeAccount, request, request_id, timeout)

    def close_account(
        self, name: str, *, reason: str = "", request_id: str | None = None, timeout: float | None = None
    ) -> account_pb2.Account:
        """Close the account ``name`` for good. Raises ACCOUNT_NOT_EMPTY unless its posted,
        pending and expiring balances are all 0: move the balance out and capture or void
        its holds first. Closing a closed account changes nothing."""
        request = account_service_pb2.CloseAccountRequest(name=name, reason=reason)
        return self._change_status(self._accounts.CloseAccount, request, request_id, timeout)

    def _change_status(
        self,
        rpc: grpc.UnaryUnaryMultiCallable[_StatusRequest, Any],
        request: _StatusRequest,
        request_id: str | None,
        timeout: float | None,
    ) -> account_pb2.Account:
        request.request_id = _check_request_id(request_id)
        response = self._call(rpc, request, timeout=timeout, request_id=request.request_id)
        account: account_pb2.Account = response.account
        return account

    def get_balance_as_of(
        self,
        account: str,
        *,
        time: datetime.datetime | None = None,
        posting_date: datetime.date | None = None,
        timeout: float | None = None,
    ) -> int:
        """The posted balance of ``account`` in minor units as of a moment or a date; pass
        exactly one. ``time`` (an aware datetime): after every transaction the ledger had
        recorded by then. ``posting_date``: after every transaction whose posting date is
        on or before it (backfills count on the day they are dated). 0 before the first."""
        if (time is None) == (posting_date is None):
            raise ValueError("pass exactly one of time= and posting_date=")
        request = account_service_pb2.GetAccountBalanceRequest(name=account)
        if time is not None:
            request.as_of_time.CopyFrom(timestamp_to_proto(time))
        else:
            assert posting_date is not None
            request.as_of_posting_date.CopyFrom(date_to_proto(posting_date))
        return self._call(self._accounts.GetAccountBalance, request, timeout=timeout).posted

    def list_accounts(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        external_ref: str = "",
        status: AccountStatusLike | None = None,
        timeout: float | None = None,
    ) -> account_service_pb2.ListAccountsResponse:
        """One page of accounts, oldest first (page_size 0 = the server's default, 50),
        optionally only those of ``external_ref`` or in ``status`` (``"frozen"``, say)."""
        request = account_service_pb2.ListAccountsRequest(
            page_size=page_size,
            page_token=page_token,
            external_ref=external_ref,
            status=account_pb2.ACCOUNT_STATUS_UNSPECIFIED if status is None else _account_status(status),
        )
        return self._call(self._accounts.ListAccounts, request, timeout=timeout)

    def iter_accounts(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        external_ref: str = "",
        status: AccountStatusLike | None = None,
        timeout: float | None = None,
    ) -> Iterator[account_pb2.Account]:
        """Every account (of ``external_ref`` and in ``status``, if given), following
        next_page_token. Each page is its own call with its own deadline and retries."""
        return _every(
            lambda token: self.list_accounts(
                page_size=page_size,
                page_token=token,
                external_ref=external_ref,
                status=status,
                timeout=timeout,
            ),
            lambda page: page.accounts,
            page_token,
        )

    def list_account_status_changes(
        self, account: str, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> account_service_pb2.ListAccountStatusChangesResponse:
        """One page of the status changes of ``account`` (``accounts/{id}``), newest
        first: ``previous_status``, ``status``, ``reason``, ``change_time`` and
        ``changed_by`` of each freeze, unfreeze and close."""
        request = account_service_pb2.ListAccountStatusChangesRequest(
            parent=account, page_size=page_size, page_token=page_token
        )
        return self._call(self._accounts.ListAccountStatusChanges, request, timeout=timeout)

    def iter_account_status_changes(
        self, account: str, *, page_size: int = 0, timeout: float | None = None
    ) -> Iterator[account_pb2.AccountStatusChange]:
        """Every status change of ``account``, newest first, following next_page_token."""
        return _every(
            lambda token: self.list_account_status_changes(
                account, page_size=page_size, page_token=token, timeout=timeout
            ),
            lambda page: page.status_changes,
        )

    def list_account_updates(
        self, account: str, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> account_service_pb2.ListAccountUpdatesResponse:
        """One page of the updates of ``account``'s details (``accounts/{id}``), newest
        first: ``changed_fields``, their ``previous`` and ``current`` values, ``reason``,
        ``update_time`` and ``updated_by`` of each :meth:`update_account` that changed
        something."""
        request = account_service_pb2.ListAccountUpdatesRequest(
            parent=account, page_size=page_size, page_token=page_token
        )
        return self._call(self._accounts.ListAccountUpdates, request, timeout=timeout)

    def iter_account_updates(
        self, account: str, *, page_size: int = 0, timeout: float | None = None
    ) -> Iterator[account_pb2.AccountUpdate]:
        """Every update of ``account``'s details, newest first, following next_page_token."""
        return _every(
            lambda token: self.list_account_updates(
                account, page_size=page_size, page_token=token, timeout=timeout
            ),
            lambda page: page.updates,
        )

    # -- TransactionService ------------------------------------------------------------

    def create_transaction(
        self,
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
        timeout: float | None = None,
    ) -> transaction_pb2.Transaction:
        """Post a credit or debit of ``amount`` minor units on ``account``
        (``accounts/{id}``). ``kind`` defaults to ADJUSTMENT and ``posting_date`` to
        today (UTC) on the server. ``expire_time`` (credits only, an aware datetime in
        the future) makes the credit expiring: what is unspent then is written off.
        Returns the posted transaction; its ``ending_balance`` is the account's posted
        balance right after it."""
        request = transaction_request(
            account=account,
            direction=direction,
            amount=amount,
            currency=currency,
            kind=kind,
            description=description,
            posting_date=posting_date,
            external_id=external_id,
            metadata=metadata,
            expire_time=expire_time,
            request_id=request_id,
        )
        response = self._call(
            self._transactions.CreateTransaction, request, timeout=timeout, request_id=request.request_id
        )
        return response.transaction

    def batch_create_transactions(
        self,
        requests: Sequence[transaction_service_pb2.CreateTransactionRequest],
        *,
        independent: bool = False,
        timeout: float | None = None,
    ) -> list[transaction_service_pb2.BatchItemResult]:
        """Post 1 to 1000 transactions in one call (build each with
        :func:`transaction_request`, or :func:`hold_request` for an item that places a
        hold). All or none by default: a refusal raises
        :class:`LedgerError` whose ``error_metadata["item_index"]`` names the item. With
        ``independent=True`` each item is posted on its own and gets its own result
        (``transaction`` or ``error``). Items without a request_id get one, so a retried
        batch replays item by item instead of posting twice."""
        items = []
        for item in requests:
            keyed = transaction_service_pb2.CreateTransactionRequest()
            keyed.CopyFrom(item)
            keyed.request_id = _check_request_id(item.request_id or None)
            items.append(keyed)
        mode = (
            transaction_service_pb2.BATCH_MODE_INDEPENDENT
            if independent
            else transaction_service_pb2.BATCH_MODE_ATOMIC
        )
        request = transaction_service_pb2.BatchCreateTransactionsRequest(requests=items, mode=mode)
        return list(self._call(self._transactions.BatchCreateTransactions, request, timeout=timeout).results)

    def credit(
        self, account: str, amount: int, currency: str, **options: Unpack[CreditOptions]
    ) -> transaction_pb2.Transaction:
        """Add ``amount`` minor units to ``account``: :meth:`create_transaction` with
        direction credit (optionally expiring at ``expire_time``)."""
        return self.create_transaction(
            account=account,
            direction=transaction_pb2.DIRECTION_CREDIT,
            amount=amount,
            currency=currency,
            **options,
        )

    def debit(
        self, account: str, amount: int, currency: str, **options: Unpack[TransactionOptions]
    ) -> transaction_pb2.Transaction:
        """Take ``amount`` minor units from ``account``: :meth:`create_transaction` with
        direction debit. Raises :class:`LedgerError` with reason INSUFFICIENT_FUNDS when
        the available balance would go below the account's floor."""
        return self.create_transaction(
            account=account,
            direction=transaction_pb2.DIRECTION_DEBIT,
            amount=amount,
            currency=currency,
            **options,
        )

    def create_hold(
        self,
        account: str,
        amount: int,
        currency: str,
        *,
        description: str = "",
        external_id: str = "",
        metadata: Mapping[str, str] | None = None,
        expire_time: datetime.datetime | None = None,
        posting_date: datetime.date | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> transaction_pb2.Transaction:
        """Reserve ``amount`` minor units of ``account``: a pending debit (type HOLD,
        status PENDING) that lowers the available balance but not the posted one until
        :meth:`capture_hold`, :meth:`void_hold` or its ``expire_time`` (then it lapses,
        voided). ``posting_date`` (default today, UTC) is the earliest its capture may
        be dated. Raises :class:`LedgerError` INSUFFICIENT_FUNDS like a debit."""
        request_id = _check_request_id(request_id)
        hold = _transaction(
            account=account,
            direction=transaction_pb2.DIRECTION_DEBIT,
            amount=amount,
            currency=currency,
            description=description,
            external_id=external_id,
            metadata=metadata,
            expire_time=expire_time,
            posting_date=posting_date,
        )
        request = transaction_service_pb2.CreateHoldRequest(hold=hold, request_id=request_id)
        response = self._call(self._transactions.CreateHold, request, timeout=timeout, request_id=request_id)
        return response.hold

    def capture_hold(
        self,
        hold_name: str,
        *,
        amount: int = 0,
        description: str = "",
        external_id: str = "",
        posting_date: datetime.date | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> transaction_service_pb2.CaptureHoldResponse:
        """Post ``amount`` minor units (0, the default: all) of the pending hold
        ``hold_name`` (``transactions/{id}``) as a CAPTURE debit and release the rest.
        ``external_id`` is the capture's own (unique per tenant, like a transaction's);
        ``posting_date`` its accounting date (default today, UTC; not before the hold's).
        Returns the ``hold`` (now CAPTURED, with ``captured_amount``) and the posted
        ``capture``. Raises HOLD_NOT_PENDING after a void, capture or lapse, and
        AMOUNT_EXCEEDS_HOLD above the held amount."""
        request_id = _check_request_id(request_id)
        request = transaction_service_pb2.CaptureHoldRequest(
            name=hold_name,
            amount=_check_amount(amount),
            description=description,
            external_id=external_id,
            request_id=request_id,
        )
        if posting_date is not None:
            request.posting_date.CopyFrom(date_to_proto(posting_date))
        return self._call(self._transactions.CaptureHold, request, timeout=timeout, request_id=request_id)

    def void_hold(
        self, hold_name: str, *, request_id: str | None = None, timeout: float | None = None
    ) -> transaction_pb2.Transaction:
        """Cancel the pending hold ``hold_name``: its whole amount is available again and
        nothing is posted. Returns the hold, now VOIDED."""
        request_id = _check_request_id(request_id)
        request = transaction_service_pb2.VoidHoldRequest(name=hold_name, request_id=request_id)
        return self._call(self._transactions.VoidHold, request, timeout=timeout, request_id=request_id).hold

    def refund(
        self,
        transaction_name: str,
        *,
        amount: int = 0,
        description: str = "",
        external_id: str = "",
        metadata: Mapping[str, str] | None = None,
        posting_date: datetime.date | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> transaction_service_pb2.RefundTransactionResponse:
        """Refund ``amount`` minor units (0, the default: all that is left) of the posted
        transaction ``transaction_name`` (a STANDARD credit or debit, or a CAPTURE): a
        REFUND in the opposite direction. Returns the ``refund`` and the ``original`` with
        its new ``refunded_amount`` and status (PARTIALLY_REFUNDED, then REFUNDED).
        ``posting_date`` is the refund's accounting date (default today, UTC; not before
        the original's). Raises NOT_REFUNDABLE or AMOUNT_EXCEEDS_REFUNDABLE."""
        request_id = _check_request_id(request_id)
        request = transaction_service_pb2.RefundTransactionRequest(
            name=transaction_name,
            amount=_check_amount(amount),
            description=description,
            external_id=external_id,
            request_id=request_id,
        )
        if metadata:
            request.metadata.update(metadata)
        if posting_date is not None:
            request.posting_date.CopyFrom(date_to_proto(posting_date))
        return self._call(
            self._transactions.RefundTransaction, request, timeout=timeout, request_id=request_id
        )

    def transfer(
        self,
        source: str,
        destination: str,
        amount: int,
        currency: str,
        *,
        description: str = "",
        posting_date: datetime.date | None = None,
        external_id: str = "",
        metadata: Mapping[str, str] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> transaction_pb2.Transaction:
        """Move ``amount`` minor units from ``source`` to ``destination`` (same tenant
        and currency) in one atomic TRANSFER. Expiring credit stays expiring, with the
        same expiry times. The result's ``ending_balance`` is the source's posted balance
        after it, ``counterparty_ending_balance`` the destination's."""
        request_id = _check_request_id(request_id)
        transfer = _transaction(
            account=source,
            counterparty_account=destination,
            direction=transaction_pb2.DIRECTION_DEBIT,
            amount=amount,
            currency=currency,
            description=description,
            posting_date=posting_date,
            external_id=external_id,
            metadata=metadata,
        )
        request = transaction_service_pb2.CreateTransferRequest(transfer=transfer, request_id=request_id)
        return self._call(
            self._transactions.CreateTransfer, request, timeout=timeout, request_id=request_id
        ).transfer

    def import_transactions(
        self,
        requests: Iterable[transaction_service_pb2.CreateTransactionRequest],
        *,
        chunk_size: int = 500,
        reply_bytes: int = IMPORT_REPLY_BYTES,
        timeout: float | None = None,
    ) -> transaction_service_pb2.ImportTransactionsResponse:
        """Stream many transactions (backfills, past posting dates) in chunks of
        ``chunk_size`` (1 to 1000) items; each chunk is committed on its own as an
        independent batch. Every request must carry its own request_id (build them with
        :func:`transaction_request`, and keep the ids to resume an interrupted import):
        one without raises ValueError before anything is sent. The requests are kept in
        memory, so a call that fails with UNAVAILABLE is retried by sending the whole
        stream again: the items already committed are replayed, not posted twice.

        A reply carries every item's result, so an import whose results would pass
        ``reply_bytes`` (see :data:`IMPORT_REPLY_BYTES`) is sent as several calls, one
        after the other, each with its own ``timeout``; if one fails, the calls before it
        stay committed, and importing the same requests again replays them.

        Returns one result per item in order (``transaction`` or ``error``) with
        ``posted_count``, ``replayed_count`` and ``failed_count``, over all the calls."""
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise TypeError(f"chunk_size must be an int, not {type(chunk_size).__name__}")
        if not 1 <= chunk_size <= MAX_IMPORT_CHUNK:
            raise ValueError(f"chunk_size must be between 1 and {MAX_IMPORT_CHUNK}, got {chunk_size}")
        chunks: list[transaction_service_pb2.ImportTransactionsRequest] = []
        for index, item in enumerate(requests):
            if not isinstance(item, transaction_service_pb2.CreateTransactionRequest):
                raise TypeError(f"item {index} is a {type(item).__name__}, not a CreateTransactionRequest")
            if not item.request_id:
                raise ValueError(
                    f"item {index} has no request_id: an import is resumed by its request ids "
                    "(transaction_request() gives each one)"
                )
            _check_request_id(item.request_id)
            if not chunks or len(chunks[-1].requests) == chunk_size:
                chunks.append(transaction_service_pb2.ImportTransactionsRequest())
            chunks[-1].requests.append(item)
        merged = transaction_service_pb2.ImportTransactionsResponse()
        for call in _import_calls(chunks, reply_bytes):
            response = self._call_stream(self._transactions.ImportTransactions, call, timeout=timeout)
            merged.results.extend(response.results)
            merged.posted_count += response.posted_count
            merged.replayed_count += response.replayed_count
            merged.failed_count += response.failed_count
        return merged

    def get_transaction(self, name: str, *, timeout: float | None = None) -> transaction_pb2.Transaction:
        """Read one transaction (``transactions/{id}``)."""
        request = transaction_service_pb2.GetTransactionRequest(name=name)
        return self._call(self._transactions.GetTransaction, request, timeout=timeout).transaction

    def find_transaction(
        self, external_id: str, *, timeout: float | None = None
    ) -> transaction_pb2.Transaction | None:
        """The transaction whose ``external_id`` this is (unique per tenant), or None:
        reconciliation with a payment gateway's charge id, say."""
        if not external_id:
            raise ValueError("external_id is required")
        found = self.list_transactions(external_id=external_id, timeout=timeout).transactions
        return found[0] if found else None

    def list_transactions(
        self,
        *,
        account: str = "",
        posting_date_from: datetime.date | None = None,
        posting_date_to: datetime.date | None = None,
        direction: DirectionLike | None = None,
        type: TypeLike | None = None,
        status: TransactionStatusLike | None = None,
        external_id: str = "",
        related_transaction: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> transaction_service_pb2.ListTransactionsResponse:
        """One page of transactions, newest first, optionally of one account, within
        posting dates (both inclusive), of one direction, of one type (``"hold"``: an
        account's holds) and in one status as of now (``type="hold", status="pending"``:
        its open holds; a lapsed hold is ``"voided"``); ``external_id`` finds the one
        transaction (if any) with that external id (a payment gateway's charge id, say);
        ``related_transaction`` (``transactions/{id}``) lists what points at that one: a
        payment's refunds, a hold's capture, a credit lot's expiry."""
        request = transaction_service_pb2.ListTransactionsRequest(
            page_size=page_size,
            page_token=page_token,
            account=account,
            direction=transaction_pb2.DIRECTION_UNSPECIFIED if direction is None else _direction(direction),
            type=_type(type),
            status=transaction_pb2.TRANSACTION_STATUS_UNSPECIFIED if status is None else _status(status),
            external_id=external_id,
            related_transaction=related_transaction,
        )
        if posting_date_from is not None:
            request.posting_date_from.CopyFrom(date_to_proto(posting_date_from))
        if posting_date_to is not None:
            request.posting_date_to.CopyFrom(date_to_proto(posting_date_to))
        return self._call(self._transactions.ListTransactions, request, timeout=timeout)

    def iter_transactions(
        self,
        *,
        account: str = "",
        posting_date_from: datetime.date | None = None,
        posting_date_to: datetime.date | None = None,
        direction: DirectionLike | None = None,
        type: TypeLike | None = None,
        status: TransactionStatusLike | None = None,
        external_id: str = "",
        related_transaction: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> Iterator[transaction_pb2.Transaction]:
        """Every matching transaction, newest first, following next_page_token. Each
        page is its own call with its own deadline and retries."""
        return _every(
            lambda token: self.list_transactions(
                account=account,
                posting_date_from=posting_date_from,
                posting_date_to=posting_date_to,
                direction=direction,
                type=type,
                status=status,
                external_id=external_id,
                related_transaction=related_transaction,
                page_size=page_size,
                page_token=token,
                timeout=timeout,
            ),
            lambda page: page.transactions,
            page_token,
        )

    # -- AdminService ------------------------------------------------------------------

    def verify_ledger(self, *, timeout: float | None = None) -> admin_service_pb2.VerifyLedgerResponse:
        """Audit the token's tenant online (needs the ``admin`` scope): every invariant
        of the ledger is checked and every violation returned; ``violations`` is empty
        on a consistent ledger."""
        request = admin_service_pb2.VerifyLedgerRequest()
        return self._call(self._admin.VerifyLedger, request, timeout=timeout)


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


_P = TypeVar("_P", bound=_Page)
_Item = TypeVar("_Item")


def _every(
    list_page: Callable[[str], _P], items: Callable[[_P], Iterable[_Item]], page_token: str = ""
) -> Iterator[_Item]:
    """Every item of a List method's pages from `page_token` on, following
    next_page_token; each page is its own call (`list_page(token)`), made as the
    iteration reaches it."""
    token = page_token
    while True:
        page = list_page(token)
        yield from items(page)
        token = _next_token(token, page.next_page_token)
        if not token:
            return


def _next_token(current: str, following: str) -> str:
    if following and following == current:
        # A server bug; without this check the iteration would never end.
        raise RuntimeError(f"the server returned the same page token twice: {following!r}")
    return following
