# Generated from ../_async/client.py by scripts/gen_sync_client.py (`make client`): do not edit.
"""The blocking client for the ledger.v1 AccountService, TransactionService and
AdminService, on grpc: the asyncio client (``../_async/client.py``) without ``async``
and ``await``."""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

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

from ..dates import date_to_proto, timestamp_to_proto
from ..errors import LedgerError
from ..requests import (
    IMPORT_REPLY_BYTES,
    MAX_IMPORT_CHUNK,
    AccountStatusLike,
    CreditOptions,
    DirectionLike,
    KindLike,
    Page,
    TransactionOptions,
    TransactionStatusLike,
    TypeLike,
    _account_status,
    _check_amount,
    _check_request_id,
    _direction,
    _import_calls,
    _status,
    _transaction,
    _type,
    _with_token,
    next_token,
    transaction_request,
)
from ..retry import RetryPolicy, check_timeout, stream_retry_delay
from ._transport import (
    Channel,
    Deferred,
    EventLoop,
    StreamUnary,
    UnaryUnary,
    call_with_retry,
    check_loop,
    event_loop,
    insecure_channel,
    secure_channel,
    sleep,
)

__all__ = ["LedgerClient"]

_C = TypeVar("_C", bound="LedgerClient")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_StatusRequest = TypeVar(
    "_StatusRequest",
    account_service_pb2.FreezeAccountRequest,
    account_service_pb2.UnfreezeAccountRequest,
    account_service_pb2.CloseAccountRequest,
)
_P = TypeVar("_P", bound=Page)
_Item = TypeVar("_Item")


class LedgerClient:
    """A client for one ledger server.

    Every call has a deadline (``timeout`` seconds, retries included), sends the API
    ``token`` as ``authorization: Bearer <token>`` plus any other ``metadata``, retries UNAVAILABLE
    up to ``max_attempts`` attempts in all with exponential backoff and full jitter, and
    raises :class:`LedgerError` for any failed RPC. Mutations carry a ``request_id``
    (a new UUID unless one is given) that is the same on every retry, so a retried
    create is applied at most once.

    Use it as a context manager, or call :meth:`close`. ``LedgerClient`` is safe to share
    between threads; ``AsyncLedgerClient`` between the tasks of the event loop it was
    made in (make it inside a coroutine: its grpc.aio channel belongs to that loop).
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
        policy, loop = _prepared(timeout, max_attempts, initial_backoff, max_backoff)
        if credentials is None:
            channel = insecure_channel(target, options=list(options))
        else:
            channel = secure_channel(target, credentials, options=list(options))
        self._setup(
            channel,
            loop,
            owns_channel=True,
            metadata=_with_token(metadata, token),
            timeout=timeout,
            policy=policy,
        )

    @classmethod
    def from_channel(
        cls: type[_C],
        channel: Channel,
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
        policy, loop = _prepared(timeout, max_attempts, initial_backoff, max_backoff)
        client = cls.__new__(cls)
        client._setup(
            channel,
            loop,
            owns_channel=close_channel,
            metadata=_with_token(metadata, token),
            timeout=timeout,
            policy=policy,
        )
        return client

    def _setup(
        self,
        channel: Channel,
        loop: EventLoop,
        *,
        owns_channel: bool,
        metadata: Sequence[tuple[str, str]],
        timeout: float,
        policy: RetryPolicy,
    ) -> None:
        self._channel = channel
        self._loop = loop
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
    def channel(self) -> Channel:
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
        rpc: UnaryUnary[_Req, _Resp],
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
        rpc: StreamUnary[_Req, _Resp],
        messages: Sequence[_Req],
        *,
        timeout: float | None,
    ) -> _Resp:
        """A client-streaming call; every attempt sends the whole of ``messages`` again."""

        def attempt(remaining: float) -> _Resp:
            return rpc(iter(messages), timeout=remaining, metadata=self._metadata)

        return self._retrying(attempt, timeout=timeout, request_id=None)

    def _retrying(
        self, attempt: Callable[[float], Deferred[_Resp]], *, timeout: float | None, request_id: str | None
    ) -> _Resp:
        check_loop(self._loop)
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
        response = self._call(self._accounts.GetAccount, request, timeout=timeout)
        return response.account

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
        response = self._call(self._accounts.UpdateAccount, request, timeout=timeout, request_id=request_id)
        return response.account

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
        rpc: UnaryUnary[_StatusRequest, Any],
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
        response = self._call(self._accounts.GetAccountBalance, request, timeout=timeout)
        return response.posted

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
        response = self._call(self._transactions.BatchCreateTransactions, request, timeout=timeout)
        return list(response.results)

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
        response = self._call(self._transactions.VoidHold, request, timeout=timeout, request_id=request_id)
        return response.hold

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
        response = self._call(
            self._transactions.CreateTransfer, request, timeout=timeout, request_id=request_id
        )
        return response.transfer

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
        response = self._call(self._transactions.GetTransaction, request, timeout=timeout)
        return response.transaction

    def find_transaction(
        self, external_id: str, *, timeout: float | None = None
    ) -> transaction_pb2.Transaction | None:
        """The transaction whose ``external_id`` this is (unique per tenant), or None:
        reconciliation with a payment gateway's charge id, say."""
        if not external_id:
            raise ValueError("external_id is required")
        page = self.list_transactions(external_id=external_id, timeout=timeout)
        found = page.transactions
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

    def list_transaction_changes(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        start_at_end: bool = False,
        timeout: float | None = None,
    ) -> transaction_service_pb2.ListTransactionChangesResponse:
        """One page of the change feed after ``page_token`` (a ``next_page_token``, a
        change's ``resume_token``, or empty for the start): every transaction as it was
        created and again at each change of its status, refunded or captured amount,
        oldest first (an account's changes in commit order). ``next_page_token`` is never
        empty; an empty page means there is nothing newer yet. ``start_at_end``: no
        changes, and a ``next_page_token`` for what is committed from now on (without
        ``page_token``)."""
        request = transaction_service_pb2.ListTransactionChangesRequest(
            page_size=page_size, page_token=page_token, start_at_end=start_at_end
        )
        return self._call(self._transactions.ListTransactionChanges, request, timeout=timeout)

    def iter_transaction_changes(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> Iterator[transaction_service_pb2.TransactionChange]:
        """Every change after ``page_token``, oldest first, until caught up (the first
        empty page). To follow the ledger, keep the ``resume_token`` of the last change
        you applied, and iterate from it again later for the changes made since. Each
        page is its own call with its own deadline and retries."""
        return _every(
            lambda token: self.list_transaction_changes(
                page_size=page_size, page_token=token, timeout=timeout
            ),
            lambda page: page.changes,
            page_token,
            until_empty=True,
        )

    def watch_transaction_changes(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        start_at_end: bool = False,
        timeout: float | None = None,
    ) -> Iterator[transaction_service_pb2.TransactionChange]:
        """Every change after ``page_token``, oldest first, and then each new change
        moments after its commit, for as long as you iterate: one server stream
        (WatchTransactionChanges), no polling. ``start_at_end``: only the changes
        committed from now on (without ``page_token``; the end of the feed is looked up
        first with ListTransactionChanges). ``timeout``: seconds after which the
        iteration fails with DEADLINE_EXCEEDED (None, the default: never). A stream
        broken by a retryable error (UNAVAILABLE: the server restarting, a lost
        connection) is opened again right after the last change handed out, with the
        client's retry policy, whose attempts count again from 1 once a stream has
        delivered changes: no change is skipped or repeated. Stop iterating (or close the
        iterator) to end the stream."""
        check_loop(self._loop)
        if timeout is not None:
            check_timeout(timeout)
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        token, failures = page_token, 0
        if start_at_end:
            end = self.list_transaction_changes(page_token=page_token, start_at_end=True, timeout=timeout)
            token = end.next_page_token
        while True:
            request = transaction_service_pb2.WatchTransactionChangesRequest(
                page_size=page_size, page_token=token
            )
            left = None if timeout is None else max(deadline - time.monotonic(), 0.0)
            stream = self._transactions.WatchTransactionChanges(
                request, timeout=left, metadata=self._metadata
            )
            try:
                for message in stream:
                    failures = 0
                    for change in message.changes:
                        token = change.resume_token
                        yield change
                return  # the server ended the stream (it never does so on its own)
            except grpc.RpcError as error:
                failures += 1
                delay = stream_retry_delay(error, self._policy, failures=failures, deadline=deadline)
                if delay is None:
                    raise LedgerError.from_rpc_error(error, attempts=failures) from error
            finally:
                stream.cancel()  # ends the call when the iteration stops early
            sleep(delay)

    # -- AdminService ------------------------------------------------------------------

    def verify_ledger(self, *, timeout: float | None = None) -> admin_service_pb2.VerifyLedgerResponse:
        """Audit the token's tenant online (needs the ``admin`` scope): every invariant
        of the ledger is checked and every violation returned; ``violations`` is empty
        on a consistent ledger."""
        request = admin_service_pb2.VerifyLedgerRequest()
        return self._call(self._admin.VerifyLedger, request, timeout=timeout)


def _prepared(
    timeout: float, max_attempts: int, initial_backoff: float, max_backoff: float
) -> tuple[RetryPolicy, EventLoop]:
    """A new client's retry policy and event loop, its settings checked first: before a
    channel is opened, so that a bad argument leaks nothing."""
    policy = RetryPolicy(max_attempts=max_attempts, initial_backoff=initial_backoff, max_backoff=max_backoff)
    check_timeout(timeout)
    return policy, event_loop()


def _every(
    list_page: Callable[[str], Deferred[_P]],
    items: Callable[[_P], Sequence[_Item]],
    page_token: str = "",
    *,
    until_empty: bool = False,
) -> Iterator[_Item]:
    """Every item of a List method's pages from `page_token` on, following
    next_page_token; each page is its own call (`list_page(token)`), made as the
    iteration reaches it. `until_empty`: a feed, whose next_page_token never runs out,
    ends at its first empty page instead."""
    token = page_token
    while True:
        page = list_page(token)
        found = items(page)
        if until_empty and not found:
            return
        yield from found
        token = next_token(token, page.next_page_token)
        if not token:
            return
