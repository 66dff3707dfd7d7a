"""The ledger: the rules for opening accounts and posting transactions.

Every mutation runs in one store write unit: the idempotency record, the account row
locks, the transaction, its balanced entries and the new balances commit together or
not at all. A unit that loses a race (WriteConflict) is re-run from the start."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar, cast

from ledger_server.core import validation as check
from ledger_server.core.errors import (
    Category,
    FieldViolation,
    LedgerError,
    StoreUnavailable,
    WriteConflict,
    invalid,
    not_found,
)
from ledger_server.core.model import (
    INT64_MAX,
    INT64_MIN,
    Account,
    AccountStatus,
    Direction,
    Entry,
    NewAccount,
    NewTransaction,
    Transaction,
    TransactionFilter,
    TransactionStatus,
)
from ledger_server.core.paging import PageTokens, page_limit
from ledger_server.core.ports import LockedBalance, Store, WriteUnit

T = TypeVar("T")
R = TypeVar("R")
MAX_BATCH_ITEMS = 1000
ATOMIC_BATCHES = "atomic-batches"  # the routing key of every atomic batch
# The tenant's counter-account that customer credits come from and debits return to.
ISSUANCE = "issuance"
# Re-runs of a write unit that lost a race before giving up with UNAVAILABLE.
MAX_WRITE_ATTEMPTS = 5
PAGE_TOKEN_SECRET = "page_token_secret"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Idempotency(Generic[T]):
    """A mutation's request_id, the fingerprint of the request it names, and how to
    render the result into the response bytes that a retry gets back verbatim."""

    request_id: str
    fingerprint: bytes
    render: Callable[[T], bytes]


@dataclass(frozen=True)
class Replay:
    """The stored response of an earlier request with the same request_id."""

    response: bytes


@dataclass(frozen=True)
class BatchItem:
    """One transaction of a batch: the command, its idempotency, and the problems the
    api layer found parsing it (field paths relative to the item)."""

    cmd: NewTransaction
    idem: Idempotency[Transaction] | None = None
    violations: Sequence[FieldViolation] = ()


ItemResult = Transaction | Replay | LedgerError


class Ledger:
    def __init__(self, store: Store, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self._store = store
        self._clock = clock
        with store.reading() as r:
            secret = r.setting(PAGE_TOKEN_SECRET)
        if not secret:
            raise RuntimeError("database has no page token secret: run `ledger-server migrate`")
        self._tokens = PageTokens(bytes.fromhex(secret))

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers (the health probe)."""
        self._store.ping()

    # -- accounts ---------------------------------------------------------------------

    def create_account(
        self,
        tenant_id: str,
        new: NewAccount,
        idem: Idempotency[Account] | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> Account | Replay:
        v = check.Violations(violations)
        new = replace(new, currency=check.normalize_currency(new.currency))
        check.check_text(v, "account.external_ref", new.external_ref, check.MAX_EXTERNAL_REF)
        check.check_currency(v, "account.currency", new.currency)
        check.check_floor(v, "account.balance_floor", new.balance_floor)
        check.check_metadata(v, "account.metadata", new.metadata)
        if v:
            raise invalid(v)
        account_id = str(uuid.uuid4())
        return self._write(
            tenant_id, account_id, idem, lambda w, now: w.insert_account(tenant_id, account_id, new, now)
        )

    def get_account(self, tenant_id: str, account_id: str) -> Account:
        with self._store.reading() as r:
            account = r.get_account(tenant_id, account_id)
        if account is None:
            raise not_found("account", f"accounts/{account_id}")
        return account

    def list_accounts(
        self, tenant_id: str, external_ref: str, page_size: int, page_token: str
    ) -> tuple[list[Account], str]:
        v = check.Violations()
        limit = page_limit(v, page_size)
        check.check_text(v, "external_ref", external_ref, check.MAX_EXTERNAL_REF)
        if v:
            raise invalid(v)
        query = f"accounts|{tenant_id}|{external_ref}"
        after = self._tokens.decode(query, page_token)
        with self._store.reading() as r:
            page = r.list_accounts(tenant_id, external_ref, after, limit)
        return page.items, self._next_token(query, page.next_cursor)

    # -- transactions -----------------------------------------------------------------

    def post_transaction(
        self,
        tenant_id: str,
        cmd: NewTransaction,
        idem: Idempotency[Transaction] | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> Transaction | Replay:
        cmd = self._checked(cmd, violations)
        return self._write(tenant_id, cmd.account_id, idem, self._posting(tenant_id, cmd))

    def post_batch(self, tenant_id: str, items: Sequence[BatchItem], atomic: bool) -> list[ItemResult]:
        """Post 1..MAX_BATCH_ITEMS transactions: all or none (atomic; a refusal names its
        item), or each on its own (its result or its refusal, in request order)."""
        if not 1 <= len(items) <= MAX_BATCH_ITEMS:
            raise invalid([FieldViolation("requests", f"1 to {MAX_BATCH_ITEMS} items (got {len(items)})")])
        checked: list[NewTransaction | LedgerError] = []
        for i, item in enumerate(items):
            try:
                checked.append(self._checked(item.cmd, item.violations))
            except LedgerError as err:
                checked.append(_for_item(err, i))
        if atomic:
            refused = [c for c in checked if isinstance(c, LedgerError)]
            if refused:
                raise _for_batch(refused)
            return list(self._write_atomic(tenant_id, items, cast(list[NewTransaction], checked)))
        # Every valid item is its own unit; they are queued at once and share commits.
        results: list[ItemResult | None] = [c if isinstance(c, LedgerError) else None for c in checked]
        jobs = []
        for i, c in enumerate(checked):
            if not isinstance(c, LedgerError):
                unit = self._unit(tenant_id, items[i].idem, self._posting(tenant_id, c))
                jobs.append((i, c.account_id, unit))
        outcomes = self._store.write_many([(key, unit) for _, key, unit in jobs])
        for (i, key, unit), first in zip(jobs, outcomes, strict=True):
            outcome = first
            if isinstance(first, WriteConflict):  # lost a race: this item alone again
                try:
                    outcome = self._retrying(key, unit)
                except LedgerError as err:
                    outcome = err
            if isinstance(outcome, LedgerError):
                results[i] = _for_item(outcome, i)
            elif isinstance(outcome, BaseException):  # the store failed: the caller retries the batch
                raise outcome
            else:
                results[i] = outcome
        return cast(list[ItemResult], results)

    def _write_atomic(
        self, tenant_id: str, items: Sequence[BatchItem], cmds: list[NewTransaction]
    ) -> list[Transaction | Replay]:
        account_ids = sorted({c.account_id for c in cmds})

        def all_or_none(w: WriteUnit) -> list[Transaction | Replay]:
            for account_id in account_ids:  # one lock order for every batch: no deadlock between them
                w.lock_customer_account(tenant_id, account_id)
            results = []
            for i, (item, cmd) in enumerate(zip(items, cmds, strict=True)):
                unit = self._unit(tenant_id, item.idem, self._posting(tenant_id, cmd))
                try:
                    results.append(unit(w))
                except LedgerError as err:
                    raise _for_item(err, i) from err
            return results

        # All atomic batches go through one writer: they never wait on each other's locks.
        return self._retrying(ATOMIC_BATCHES, all_or_none)

    def _checked(self, cmd: NewTransaction, violations: Sequence[FieldViolation]) -> NewTransaction:
        cmd = replace(cmd, currency=check.normalize_currency(cmd.currency))
        v = check.Violations(violations)
        if not cmd.account_id:
            v.add("transaction.account", "required")
        if cmd.direction is None:
            v.add("transaction.direction", "required: DIRECTION_CREDIT or DIRECTION_DEBIT")
        check.check_positive_amount(v, "transaction.amount", cmd.amount)
        check.check_currency(v, "transaction.currency", cmd.currency)
        check.check_text(v, "transaction.description", cmd.description, check.MAX_DESCRIPTION)
        check.check_text(v, "transaction.external_id", cmd.external_id, check.MAX_EXTERNAL_ID)
        check.check_metadata(v, "transaction.metadata", cmd.metadata)
        if v:
            raise invalid(v)
        return cmd

    def _posting(
        self, tenant_id: str, cmd: NewTransaction
    ) -> Callable[[WriteUnit, dt.datetime], Transaction]:
        return lambda w, now: self._post(w, tenant_id, cmd, now)

    def _post(self, w: WriteUnit, tenant_id: str, cmd: NewTransaction, now: dt.datetime) -> Transaction:
        account = w.lock_customer_account(tenant_id, cmd.account_id)
        if account is None:
            raise not_found("account", f"accounts/{cmd.account_id}")
        _check_postable(account, cmd)
        if cmd.external_id:
            existing = w.find_transaction_id_by_external_id(tenant_id, cmd.external_id)
            if existing is not None:
                name = f"transactions/{existing}"
                raise LedgerError(
                    Category.ALREADY_EXISTS,
                    "DUPLICATE_EXTERNAL_ID",
                    f"external_id {cmd.external_id!r} was already used by {name}",
                    metadata={"existing_transaction": name, "external_id": cmd.external_id},
                    resource=("ledger.v1.Transaction", name),
                )
        signed = cmd.amount if cmd.direction is Direction.CREDIT else -cmd.amount
        posted = account.posted + signed
        if signed < 0 and posted - account.pending < account.balance_floor:
            raise _insufficient_funds(account, cmd.amount)
        counter = w.lock_counter_account(tenant_id, account.currency, ISSUANCE, now)
        counter_posted = counter.posted - signed
        if not (INT64_MIN <= posted <= INT64_MAX and INT64_MIN <= counter_posted <= INT64_MAX):
            raise LedgerError(
                Category.FAILED_PRECONDITION,
                "BALANCE_OVERFLOW",
                "the posting would take a balance outside the int64 range",
                metadata={"account": f"accounts/{account.id}", "posted": str(account.posted)},
            )
        assert cmd.direction is not None  # validated above
        txn = Transaction(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            account_id=account.id,
            direction=cmd.direction,
            amount=cmd.amount,
            currency=account.currency,
            kind=cmd.kind,
            description=cmd.description,
            posting_date=cmd.posting_date or now.date(),
            external_id=cmd.external_id,
            metadata=cmd.metadata,
            status=TransactionStatus.POSTED,
            ending_balance=posted,
            created_at=now,
            updated_at=now,
            creator=cmd.creator,
        )
        w.insert_transaction(
            txn, [Entry(account.id, signed, posted), Entry(counter.id, -signed, counter_posted)]
        )
        w.set_posted_balance(account.id, posted, now)
        w.set_posted_balance(counter.id, counter_posted, now)
        return txn

    def get_transaction(self, tenant_id: str, transaction_id: str) -> Transaction:
        with self._store.reading() as r:
            txn = r.get_transaction(tenant_id, transaction_id)
        if txn is None:
            raise not_found("transaction", f"transactions/{transaction_id}")
        return txn

    def list_transactions(
        self,
        tenant_id: str,
        flt: TransactionFilter,
        page_size: int,
        page_token: str,
        violations: Sequence[FieldViolation] = (),
    ) -> tuple[list[Transaction], str]:
        v = check.Violations(violations)
        limit = page_limit(v, page_size)
        if flt.date_from and flt.date_to and flt.date_from > flt.date_to:
            v.add("posting_date_to", "must not be before posting_date_from")
        if v:
            raise invalid(v)
        direction = flt.direction.value if flt.direction else ""
        query = f"transactions|{tenant_id}|{flt.account_id}|{flt.date_from}|{flt.date_to}|{direction}"
        before = self._tokens.decode(query, page_token)
        with self._store.reading() as r:
            page = r.list_transactions(tenant_id, flt, before, limit)
        return page.items, self._next_token(query, page.next_cursor)

    # -- plumbing ---------------------------------------------------------------------

    def _next_token(self, query: str, cursor: int | None) -> str:
        return "" if cursor is None else self._tokens.encode(query, cursor)

    def _write(
        self, tenant_id: str, key: str, idem: Idempotency[T] | None, op: Callable[[WriteUnit, dt.datetime], T]
    ) -> T | Replay:
        unit = self._unit(tenant_id, idem, op)
        return self._retrying(key, unit)

    def _unit(
        self, tenant_id: str, idem: Idempotency[T] | None, op: Callable[[WriteUnit, dt.datetime], T]
    ) -> Callable[[WriteUnit], T | Replay]:
        """`op` made idempotent: replayed from the stored response when its request_id was
        seen, refused when that request_id named another request."""

        def unit(w: WriteUnit) -> T | Replay:
            if idem is not None:
                stored = w.find_response(tenant_id, idem.request_id)
                if stored is not None:
                    if stored.fingerprint != idem.fingerprint:
                        raise _request_id_reused(idem.request_id)
                    return Replay(stored.response)
            now = self._clock()
            result = op(w, now)
            if idem is not None:
                w.save_response(tenant_id, idem.request_id, idem.fingerprint, idem.render(result), now)
            return result

        return unit

    def _retrying(self, key: str, unit: Callable[[WriteUnit], R]) -> R:
        for _ in range(MAX_WRITE_ATTEMPTS):
            try:
                return self._store.write(key, unit)
            except WriteConflict:
                continue
        raise StoreUnavailable("too much write contention; retry with the same request_id")


def _for_item(err: LedgerError, index: int) -> LedgerError:
    """An item's refusal, with its index in the metadata and field paths of the batch."""
    return LedgerError(
        err.category,
        err.reason,
        f"requests[{index}]: {err.message}",
        metadata={**err.metadata, "item_index": str(index)},
        violations=[FieldViolation(f"requests[{index}].{v.field}", v.description) for v in err.violations],
        resource=err.resource,
    )


def _for_batch(refused: list[LedgerError]) -> LedgerError:
    """Invalid items of an atomic batch: one INVALID_ARGUMENT naming every bad field."""
    violations = [v for err in refused for v in err.violations]
    first = refused[0]
    if first.category is not Category.INVALID_ARGUMENT or len(refused) == 1:
        return first
    return LedgerError(
        Category.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        f"{len(refused)} invalid items; the first: {first.message}",
        metadata={"item_index": first.metadata["item_index"]},
        violations=violations,
    )


def _check_postable(account: LockedBalance, cmd: NewTransaction) -> None:
    if account.currency != cmd.currency:
        raise LedgerError(
            Category.INVALID_ARGUMENT,
            "CURRENCY_MISMATCH",
            f"transaction currency {cmd.currency} differs from the account's {account.currency}",
            metadata={"account_currency": account.currency, "currency": cmd.currency},
            violations=[FieldViolation("transaction.currency", f"must be {account.currency}")],
        )
    if account.status != AccountStatus.ACTIVE.value:
        raise LedgerError(
            Category.FAILED_PRECONDITION,
            "ACCOUNT_NOT_ACTIVE",
            f"account accounts/{account.id} is {account.status}",
            metadata={"account": f"accounts/{account.id}", "status": account.status},
        )


def _insufficient_funds(account: LockedBalance, amount: int) -> LedgerError:
    available = account.posted - account.pending
    return LedgerError(
        Category.FAILED_PRECONDITION,
        "INSUFFICIENT_FUNDS",
        f"debit of {amount} exceeds the available balance {available} "
        f"(floor {account.balance_floor}) of accounts/{account.id}",
        metadata={
            "account": f"accounts/{account.id}",
            "available": str(available),
            "balance_floor": str(account.balance_floor),
            "amount": str(amount),
        },
    )


def _request_id_reused(request_id: str) -> LedgerError:
    return LedgerError(
        Category.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
        f"request_id {request_id} was already used for a different request",
        metadata={"request_id": request_id},
        violations=[FieldViolation("request_id", "already used for a different request")],
    )
