"""The ledger's entry point: it checks commands, makes mutations idempotent, routes
them to write units, and reads. The rules of each mutation are in operations.py.

Every mutation runs in one store write unit: the idempotency record, the account row
locks, the transactions, their balanced entries and the new balances commit together or
not at all. A unit that loses a race (WriteConflict) is re-run from the start."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Generic, NamedTuple, TypeVar, cast

from ledger_server.core import account_changes, audit, views
from ledger_server.core import operations as ops
from ledger_server.core import validation as check
from ledger_server.core.book import Book
from ledger_server.core.errors import (
    Category,
    FieldViolation,
    LedgerError,
    StoreUnavailable,
    WriteConflict,
    invalid,
    not_found,
)
from ledger_server.core.ids import new_id
from ledger_server.core.model import (
    SETTLING_TYPES,
    Account,
    AccountChanges,
    AccountStatus,
    AccountUpdate,
    Creator,
    Direction,
    NewAccount,
    NewTransaction,
    Page,
    StatusChange,
    Transaction,
    TransactionChange,
    TransactionFilter,
    TransactionType,
)
from ledger_server.core.paging import PageTokens, page_limit
from ledger_server.core.ports import ReadUnit, Store, WriteUnit

T = TypeVar("T")
R = TypeVar("R")
H = TypeVar("H")  # an entry of an account's history
MAX_BATCH_ITEMS = 1000
# The routing key of every unit that locks several accounts (atomic batches, transfers).
MULTI_ACCOUNT = "multi-account"
# Rounds of expire_due (each up to `limit` accounts) before it leaves the rest to the next run.
MAX_EXPIRY_ROUNDS = 100
# Re-runs of a write unit that lost a race before giving up with UNAVAILABLE.
MAX_WRITE_ATTEMPTS = 5
PAGE_TOKEN_SECRET = "page_token_secret"
NOTHING_KNOWN: Mapping[str, Transaction] = MappingProxyType({})  # post_batch's `known` by default


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


@dataclass(frozen=True)
class ExpiryReport:
    accounts: int = 0
    lots_expired: int = 0
    holds_voided: int = 0
    failed: int = 0  # accounts whose sweep was refused (see VerifyLedger)


class ChangesPage(NamedTuple):
    """A page of the change feed: each change with the token that resumes after it."""

    changes: list[tuple[TransactionChange, str]]
    next_token: str  # continues after the page
    caught_up: bool  # no change after the page yet: a follower may wait for a commit


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

    def on_commit(self, listener: Callable[[], None]) -> Callable[[], None]:
        """`listener()` runs after each commit of this ledger's writes, in the committing
        thread (it must be quick): a sign that the change feed may have grown. Returns
        what removes it."""
        return self._store.on_commit(listener)

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
        check.check_account(
            v,
            external_ref=new.external_ref,
            currency=new.currency,
            balance_floor=new.balance_floor,
            metadata=new.metadata,
        )
        if v:
            raise invalid(v)
        account_id = new_id()
        return self._write(
            tenant_id,
            account_id,
            idem,
            lambda book: book.w.insert_account(tenant_id, account_id, new, book.now),
        )

    def get_account(self, tenant_id: str, account_id: str) -> Account:
        with self._store.reading() as r:
            account = r.get_account(tenant_id, account_id)
            if account is None:
                raise not_found("account", f"accounts/{account_id}")
            return views.account_now(r, account, self._clock())

    def balance_as_of(
        self,
        tenant_id: str,
        account_id: str,
        at: dt.datetime | None,
        date: dt.date | None,
        violations: Sequence[FieldViolation] = (),
    ) -> int:
        """The posted balance after everything recorded by `at`, or dated by `date`."""
        v = check.Violations(violations)
        if at is None and date is None:
            v.add("as_of", "required: as_of_time or as_of_posting_date")
        if v:
            raise invalid(v)
        with self._store.reading() as r:
            if r.get_account(tenant_id, account_id) is None:
                raise not_found("account", f"accounts/{account_id}")
            if at is not None:
                return r.balance_at_time(account_id, at)
            assert date is not None
            return r.balance_at_date(account_id, date)

    def list_accounts(
        self,
        tenant_id: str,
        external_ref: str,
        page_size: int,
        page_token: str,
        *,
        status: AccountStatus | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> tuple[list[Account], str]:
        v = check.Violations(violations)
        limit = page_limit(v, page_size)
        check.check_text(v, "external_ref", external_ref, check.MAX_EXTERNAL_REF)
        if v:
            raise invalid(v)
        # The filters a page token is bound to; the status in the fixed first part, so
        # that no external_ref can spell another filter's query (and tokens issued
        # before the status filter existed still read the same).
        filters = "accounts" if status is None else f"accounts:{status.value}"
        query = f"{filters}|{tenant_id}|{external_ref}"
        after = self._tokens.decode(query, page_token)
        with self._store.reading() as r:
            page = r.list_accounts(tenant_id, external_ref, status, after, limit)
            now = self._clock()
            items = [views.account_now(r, a, now) for a in page.items]
        return items, self._next_token(query, page.next_cursor)

    def list_status_changes(
        self,
        tenant_id: str,
        account_id: str,
        page_size: int,
        page_token: str,
        violations: Sequence[FieldViolation] = (),
    ) -> tuple[list[StatusChange], str]:
        """An account's status changes, newest first."""
        return self._account_history(
            "status_changes",
            lambda r, *page: r.list_status_changes(*page),
            tenant_id,
            account_id,
            page_size=page_size,
            page_token=page_token,
            violations=violations,
        )

    def list_account_updates(
        self,
        tenant_id: str,
        account_id: str,
        page_size: int,
        page_token: str,
        violations: Sequence[FieldViolation] = (),
    ) -> tuple[list[AccountUpdate], str]:
        """The updates that changed an account's details, newest first."""
        return self._account_history(
            "updates",
            lambda r, *page: r.list_account_updates(*page),
            tenant_id,
            account_id,
            page_size=page_size,
            page_token=page_token,
            violations=violations,
        )

    def update_account(
        self,
        tenant_id: str,
        account_id: str,
        changes: AccountChanges,
        reason: str = "",
        by: Creator | None = None,
        *,
        idem: Idempotency[Account] | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> Account | Replay:
        """UpdateAccount (core/account_changes.py): the fields `changes` sets, by `by`
        for `reason`."""
        v = check.Violations(violations)
        check.check_account(
            v,
            external_ref=changes.external_ref,
            balance_floor=changes.balance_floor,
            metadata=changes.metadata,
        )
        check.check_text(v, "reason", reason, check.MAX_REASON)
        if v:
            raise invalid(v)
        return self._write(
            tenant_id,
            account_id,
            idem,
            lambda book: account_changes.update(book, account_id, changes, reason, by),
        )

    def change_account_status(
        self,
        tenant_id: str,
        account_id: str,
        target: AccountStatus,
        reason: str,
        *,
        by: Creator | None = None,
        idem: Idempotency[Account] | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> Account | Replay:
        """FreezeAccount, UnfreezeAccount and CloseAccount (core/account_changes.py)."""
        v = check.Violations(violations)
        check.check_text(v, "reason", reason, check.MAX_REASON)
        if v:
            raise invalid(v)
        return self._write(
            tenant_id,
            account_id,
            idem,
            lambda book: account_changes.change_status(book, account_id, target, reason, by),
        )

    # -- transactions -----------------------------------------------------------------

    def post_transaction(
        self,
        tenant_id: str,
        cmd: NewTransaction,
        idem: Idempotency[Transaction] | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> Transaction | Replay:
        cmd = self._checked(cmd, violations)
        if cmd.type in SETTLING_TYPES:
            settled = self._settling(tenant_id, [cmd])[0]
            if isinstance(settled, LedgerError):
                raise settled
            cmd = settled
        return self._write(tenant_id, cmd.account_id, idem, _operation(cmd))

    def post_batch(
        self,
        tenant_id: str,
        items: Sequence[BatchItem],
        atomic: bool,
        known: Mapping[str, Transaction] = NOTHING_KNOWN,
    ) -> list[ItemResult]:
        """Post 1..MAX_BATCH_ITEMS transactions: all or none (atomic; a refusal names its
        item), or each on its own (its result or its refusal, in request order). `known`:
        transactions the items settle that the caller has read already (get_transactions),
        not read again."""
        if not 1 <= len(items) <= MAX_BATCH_ITEMS:
            raise invalid([FieldViolation("requests", f"1 to {MAX_BATCH_ITEMS} items (got {len(items)})")])
        checked: list[NewTransaction | LedgerError] = []
        for i, item in enumerate(items):
            try:
                checked.append(self._checked(item.cmd, item.violations))
            except LedgerError as err:
                checked.append(_for_item(err, i))
        if any(isinstance(c, NewTransaction) and c.type in SETTLING_TYPES for c in checked):
            settled = self._settling(tenant_id, checked, known)
            checked = [
                _for_item(s, i) if isinstance(s, LedgerError) and s is not c else s
                for i, (c, s) in enumerate(zip(checked, settled, strict=True))
            ]
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
                unit = self._unit(tenant_id, items[i].idem, _operation(c))
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
        account_ids = {c.account_id for c in cmds}

        def all_or_none(w: WriteUnit) -> list[Transaction | Replay]:
            # One Book for the whole batch: each account is locked (in one order for every
            # batch: no deadlock between them) and written back once, not once per item.
            book = Book(w, tenant_id, self._clock())
            w.prefetch_responses(tenant_id, [item.idem.request_id for item in items if item.idem])
            book.customers(account_ids)  # an item naming no account is refused below
            results: list[Transaction | Replay] = []
            for i, (item, cmd) in enumerate(zip(items, cmds, strict=True)):
                try:
                    replay = self._replay(w, tenant_id, item.idem)
                    if replay is not None:
                        results.append(replay)
                        continue
                    txn = _operation(cmd)(book)
                except LedgerError as err:
                    raise _for_item(err, i) from err
                self._remember(w, tenant_id, item.idem, txn, book.now)
                results.append(txn)
            book.flush()
            return results

        # Every unit that locks several accounts goes through one writer: they never wait on
        # each other's locks.
        return self._retrying(MULTI_ACCOUNT, all_or_none)

    def _checked(
        self, cmd: NewTransaction, violations: Sequence[FieldViolation], field: str = "transaction"
    ) -> NewTransaction:
        currency = check.normalize_currency(cmd.currency)
        if currency != cmd.currency:
            cmd = replace(cmd, currency=currency)
        v = check.Violations(violations)
        if cmd.type in SETTLING_TYPES:
            _check_settling(v, cmd, field)
        else:
            if not cmd.account_id:
                v.add(f"{field}.account", "required")
            if cmd.direction is None:
                v.add(f"{field}.direction", "required: DIRECTION_CREDIT or DIRECTION_DEBIT")
            elif cmd.type is TransactionType.HOLD:
                if cmd.direction is not Direction.DEBIT:
                    v.add(f"{field}.direction", "a hold is a debit (DIRECTION_DEBIT)")
            elif (
                cmd.expires_at is not None
                and cmd.direction is not Direction.CREDIT
                and field == "transaction"
            ):
                v.add(f"{field}.expire_time", "only a credit or a hold can expire")
            check.check_positive_amount(v, f"{field}.amount", cmd.amount)
        if cmd.currency or cmd.type not in SETTLING_TYPES:  # a settlement's is its original's
            check.check_currency(v, f"{field}.currency", cmd.currency)
        check.check_text(v, f"{field}.description", cmd.description, check.MAX_DESCRIPTION)
        check.check_text(v, f"{field}.external_id", cmd.external_id, check.MAX_EXTERNAL_ID)
        check.check_metadata(v, f"{field}.metadata", cmd.metadata)
        if v:
            raise invalid(v)
        return cmd

    def _settling(
        self,
        tenant_id: str,
        cmds: Sequence[NewTransaction | LedgerError],
        known: Mapping[str, Transaction] = NOTHING_KNOWN,
    ) -> list[NewTransaction | LedgerError]:
        """Captures and refunds given as transactions (CreateTransaction, batch items)
        completed from what they settle: its account, which routes and locks their write
        unit, its currency, and their direction. What a settled transaction's account,
        currency, direction and type are never changes, so they are read before the unit;
        its status and amounts are checked inside it."""
        wanted = {c.related_id for c in cmds if isinstance(c, NewTransaction) and c.type in SETTLING_TYPES}
        unread = [i for i in wanted if i not in known]
        related = {**known, **self.get_transactions(tenant_id, unread)} if unread else known
        return [
            _settled(c, related.get(c.related_id))
            if isinstance(c, NewTransaction) and c.type in SETTLING_TYPES
            else c
            for c in cmds
        ]

    # -- holds, refunds, transfers ----------------------------------------------------

    def create_hold(
        self,
        tenant_id: str,
        cmd: NewTransaction,
        idem: Idempotency[Transaction] | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> Transaction | Replay:
        cmd = replace(cmd, direction=cmd.direction or Direction.DEBIT, type=TransactionType.HOLD)
        cmd = self._checked(cmd, violations, "hold")
        return self._write(tenant_id, cmd.account_id, idem, lambda book: ops.hold(book, cmd, "hold"))

    def capture_hold(
        self,
        tenant_id: str,
        hold_id: str,
        *,
        amount: int,
        cmd: NewTransaction,
        idem: Idempotency[ops.Capture] | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> ops.Capture | Replay:
        """Capture `amount` of a hold; cmd carries the capture's description, external_id
        and creator."""
        v = check.Violations(violations)
        if amount < 0:
            v.add("amount", "must be 0 (all of the hold) or a positive number of minor units")
        check.check_text(v, "description", cmd.description, check.MAX_DESCRIPTION)
        check.check_text(v, "external_id", cmd.external_id, check.MAX_EXTERNAL_ID)
        account_id = self._account_of(tenant_id, hold_id, v)
        return self._write(
            tenant_id,
            account_id,
            idem,
            lambda book: ops.capture(book, account_id, hold_id, amount, cmd),
        )

    def void_hold(
        self,
        tenant_id: str,
        hold_id: str,
        idem: Idempotency[Transaction] | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> Transaction | Replay:
        account_id = self._account_of(tenant_id, hold_id, check.Violations(violations))
        return self._write(tenant_id, account_id, idem, lambda book: ops.void(book, account_id, hold_id))

    def refund(
        self,
        tenant_id: str,
        original_id: str,
        *,
        amount: int,
        cmd: NewTransaction,
        idem: Idempotency[ops.Refund] | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> ops.Refund | Replay:
        """Refund `amount` of a transaction; cmd carries the refund's description,
        external_id, metadata and creator."""
        v = check.Violations(violations)
        if amount < 0:
            v.add("amount", "must be 0 (all that is left) or a positive number of minor units")
        check.check_text(v, "description", cmd.description, check.MAX_DESCRIPTION)
        check.check_text(v, "external_id", cmd.external_id, check.MAX_EXTERNAL_ID)
        check.check_metadata(v, "metadata", cmd.metadata)
        account_id = self._account_of(tenant_id, original_id, v)
        return self._write(
            tenant_id, account_id, idem, lambda book: ops.refund(book, account_id, original_id, amount, cmd)
        )

    def transfer(
        self,
        tenant_id: str,
        cmd: NewTransaction,
        idem: Idempotency[Transaction] | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> Transaction | Replay:
        v = check.Violations(violations)
        if not cmd.counterparty_id:
            v.add("transfer.counterparty_account", "required")
        elif cmd.counterparty_id == cmd.account_id:
            v.add("transfer.counterparty_account", "must differ from transfer.account")
        if cmd.expires_at is not None:
            v.add("transfer.expire_time", "a transfer keeps the expiry times of the credit it moves")
        cmd = self._checked(replace(cmd, direction=Direction.DEBIT), v, "transfer")
        # Routed with the atomic batches: units that lock several accounts share one writer.
        return self._write(tenant_id, MULTI_ACCOUNT, idem, lambda book: ops.transfer(book, cmd))

    def _account_of(self, tenant_id: str, transaction_id: str, v: check.Violations) -> str:
        """The account of a transaction, which routes the write unit that changes it."""
        if v:
            raise invalid(v)
        with self._store.reading() as r:
            txn = r.get_transaction(tenant_id, transaction_id)
        if txn is None:
            raise not_found("transaction", f"transactions/{transaction_id}")
        return txn.account_id

    def verify(self, tenant_id: str) -> audit.AuditReport:
        return audit.verify(self._store, tenant_id)

    # -- expiry -----------------------------------------------------------------------

    def expire_due(self, limit: int = 500) -> ExpiryReport:
        """Write off every expired credit lot and release every lapsed hold (the
        background worker and `ledger-server expire`). Correctness never waits for
        this: every write brings its accounts up to date first, and reads exclude
        expired credit and holds."""
        report = ExpiryReport()
        failed: set[tuple[str, str]] = set()  # refused once: not tried again in this run
        for _ in range(MAX_EXPIRY_ROUNDS):  # bounded, whatever stays due
            asked = limit + len(failed)
            with self._store.reading() as r:
                due = r.due_for_expiry(self._clock(), asked)
            for tenant_id, account_id in due:
                if (tenant_id, account_id) in failed:
                    continue
                try:
                    swept = self._retrying(account_id, self._sweeping(tenant_id, account_id))
                except LedgerError:  # one broken account must not keep the others from expiring
                    failed.add((tenant_id, account_id))
                    report = replace(report, failed=len(failed))
                    continue
                report = replace(
                    report,
                    accounts=report.accounts + 1,
                    lots_expired=report.lots_expired + swept.lots_expired,
                    holds_voided=report.holds_voided + swept.holds_voided,
                )
            if len(due) < asked:
                break
        return report

    def _sweeping(self, tenant_id: str, account_id: str) -> Callable[[WriteUnit], ExpiryReport]:
        def unit(w: WriteUnit) -> ExpiryReport:
            book = Book(w, tenant_id, self._clock())
            book.customer(account_id)
            book.flush()
            return ExpiryReport(1, book.lots_expired, book.holds_voided)

        return unit

    def get_transaction(self, tenant_id: str, transaction_id: str) -> Transaction:
        with self._store.reading() as r:
            txn = r.get_transaction(tenant_id, transaction_id)
        if txn is None:
            raise not_found("transaction", f"transactions/{transaction_id}")
        return views.transaction_now(txn, self._clock())

    def get_transactions(self, tenant_id: str, transaction_ids: Sequence[str]) -> dict[str, Transaction]:
        """Those of these transactions that exist, by id."""
        with self._store.reading() as r:
            found = {i: r.get_transaction(tenant_id, i) for i in sorted(set(transaction_ids))}
        return {i: txn for i, txn in found.items() if txn is not None}

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
        check.check_text(v, "external_id", flt.external_id, check.MAX_EXTERNAL_ID)
        if v:
            raise invalid(v)
        direction = flt.direction.value if flt.direction else ""
        query = f"transactions|{tenant_id}|{flt.account_id}|{flt.date_from}|{flt.date_to}|{direction}"
        # Filters appended only when set: tokens issued before they existed still read.
        if flt.type:
            query += f"|{flt.type.value}"
        if flt.status:
            query += f"|status={flt.status.value}"
        if flt.external_id:
            query += f"|external_id={flt.external_id}"
        if flt.related_id:
            query += f"|related={flt.related_id}"
        before = self._tokens.decode(query, page_token)
        now = self._clock()  # one now for the store's status filter and the view of each
        with self._store.reading() as r:
            page = r.list_transactions(tenant_id, flt, before, limit, now)
        return [views.transaction_now(t, now) for t in page.items], self._next_token(query, page.next_cursor)

    def list_transaction_changes(
        self, tenant_id: str, page_size: int, page_token: str, start_at_end: bool = False
    ) -> ChangesPage:
        """A page of the tenant's change feed after `page_token` (empty: from its start),
        each change with the token that resumes after it, and the token that continues
        after the page: never empty, as the feed has no end (an empty page means caught up
        for now). Each transaction is as the change left it, not as views.transaction_now
        shows it: a lapsed hold turns voided in the feed with the change that voids it.
        `start_at_end`: no changes, and the token that continues with the first change
        committed from now on (`page_token` must be empty)."""
        v = check.Violations()
        limit = page_limit(v, page_size)
        if start_at_end and page_token:
            v.add("page_token", "must be empty with start_at_end")
        if v:
            raise invalid(v)
        query = f"changes|{tenant_id}"
        after = self._tokens.decode(query, page_token) or 0
        with self._store.reading() as r:
            if start_at_end:
                return ChangesPage([], self._tokens.encode(query, r.transaction_changes_end(tenant_id)), True)
            page = r.list_transaction_changes(tenant_id, after, limit)
        changes = [(c, self._tokens.encode(query, c.seq)) for c in page.items]
        next_token = changes[-1][1] if changes else self._tokens.encode(query, after)
        return ChangesPage(changes, next_token, caught_up=page.next_cursor is None)

    # -- plumbing ---------------------------------------------------------------------

    def _account_history(
        self,
        kind: str,
        read: Callable[[ReadUnit, str, int | None, int], Page[H]],
        tenant_id: str,
        account_id: str,
        *,
        page_size: int,
        page_token: str,
        violations: Sequence[FieldViolation],
    ) -> tuple[list[H], str]:
        """A page of one of an account's histories (`read`), newest first; tokens bound to
        the history and the account."""
        v = check.Violations(violations)
        limit = page_limit(v, page_size)
        if v:
            raise invalid(v)
        query = f"{kind}|{tenant_id}|{account_id}"
        before = self._tokens.decode(query, page_token)
        with self._store.reading() as r:
            if r.get_account(tenant_id, account_id) is None:
                raise not_found("account", f"accounts/{account_id}")
            page = read(r, account_id, before, limit)
        return page.items, self._next_token(query, page.next_cursor)

    def _next_token(self, query: str, cursor: int | None) -> str:
        return "" if cursor is None else self._tokens.encode(query, cursor)

    def _write(
        self, tenant_id: str, key: str, idem: Idempotency[T] | None, op: Callable[[Book], T]
    ) -> T | Replay:
        unit = self._unit(tenant_id, idem, op)
        return self._retrying(key, unit)

    def _unit(
        self, tenant_id: str, idem: Idempotency[T] | None, op: Callable[[Book], T]
    ) -> Callable[[WriteUnit], T | Replay]:
        """`op` made idempotent: replayed from the stored response when its request_id was
        seen, refused when that request_id named another request."""

        def unit(w: WriteUnit) -> T | Replay:
            replay = self._replay(w, tenant_id, idem)
            if replay is not None:
                return replay
            book = Book(w, tenant_id, self._clock())
            try:
                result = op(book)
            except LedgerError:
                # The same request (a client's retry, sent to another replica) may have
                # committed while this unit waited for a row lock, after the lookup above:
                # then this refusal answers the state that request left. Start over, to
                # replay its response instead (the store rolls this unit back first).
                if idem is not None and w.find_response(tenant_id, idem.request_id) is not None:
                    raise WriteConflict(f"request {idem.request_id} committed concurrently") from None
                raise
            book.flush()
            self._remember(w, tenant_id, idem, result, book.now)
            return result

        return unit

    @staticmethod
    def _replay(w: WriteUnit, tenant_id: str, idem: Idempotency[T] | None) -> Replay | None:
        """The stored response of an earlier request with this request_id, if any."""
        if idem is None:
            return None
        stored = w.find_response(tenant_id, idem.request_id)
        if stored is None:
            return None
        if stored.fingerprint != idem.fingerprint:
            raise _request_id_reused(idem.request_id)
        return Replay(stored.response)

    @staticmethod
    def _remember(
        w: WriteUnit, tenant_id: str, idem: Idempotency[T] | None, result: T, now: dt.datetime
    ) -> None:
        if idem is not None:
            w.save_response(tenant_id, idem.request_id, idem.fingerprint, idem.render(result), now)

    def _retrying(self, key: str, unit: Callable[[WriteUnit], R]) -> R:
        for _ in range(MAX_WRITE_ATTEMPTS):
            try:
                return self._store.write(key, unit)
            except WriteConflict:
                continue
        raise StoreUnavailable("too much write contention; retry with the same request_id")


def _operation(cmd: NewTransaction) -> Callable[[Book], Transaction]:
    """A checked CreateTransaction (or batch item): a posting, a hold placed, or a hold
    captured or a transaction refunded (settled: see Ledger._settling)."""
    if cmd.type is TransactionType.HOLD:
        return lambda book: ops.hold(book, cmd, "transaction")
    if cmd.type is TransactionType.CAPTURE:
        return lambda book: ops.capture(book, cmd.account_id, cmd.related_id, cmd.amount, cmd).capture
    if cmd.type is TransactionType.REFUND:
        return lambda book: ops.refund(book, cmd.account_id, cmd.related_id, cmd.amount, cmd).refund
    return lambda book: ops.post(book, cmd)


def _check_settling(v: check.Violations, cmd: NewTransaction, field: str) -> None:
    """What a capture or refund given as a transaction may say: what it settles and how
    much (0: all of the hold, or all that is left to refund)."""
    capture = cmd.type is TransactionType.CAPTURE
    if not cmd.related_id:
        v.add(
            f"{field}.related_transaction",
            f"required: the {'hold to capture' if capture else 'transaction to refund'}",
        )
    if cmd.amount < 0:
        everything = "all of the hold" if capture else "all that is left to refund"
        v.add(f"{field}.amount", f"must be 0 ({everything}) or a positive number of minor units")
    if cmd.expires_at is not None:
        v.add(f"{field}.expire_time", f"a {cmd.type.value} does not expire")
    if capture and cmd.metadata:
        v.add(f"{field}.metadata", "a capture carries its hold's metadata: leave it empty")


def _settled(cmd: NewTransaction, related: Transaction | None) -> NewTransaction | LedgerError:
    """A capture or refund with the account, currency and direction of what it settles;
    those the caller gave must be the same."""
    name = f"transactions/{cmd.related_id}"
    if related is None:
        return not_found("transaction", name)
    direction = Direction.DEBIT  # a capture posts its hold's debit
    if cmd.type is TransactionType.REFUND:
        direction = Direction.CREDIT if related.direction is Direction.DEBIT else Direction.DEBIT
    v = check.Violations()
    if cmd.account_id not in ("", related.account_id):
        v.add(
            "transaction.account", f"must be accounts/{related.account_id}, the account of {name} (or unset)"
        )
    if cmd.currency not in ("", related.currency):
        v.add("transaction.currency", f"must be {related.currency}, the currency of {name} (or unset)")
    if cmd.direction not in (None, direction):
        v.add(
            "transaction.direction",
            f"must be DIRECTION_{direction.name}: the {cmd.type.value} of {name} (or unset)",
        )
    if v:
        return invalid(v)
    return replace(cmd, account_id=related.account_id, currency=related.currency, direction=direction)


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


def _request_id_reused(request_id: str) -> LedgerError:
    return LedgerError(
        Category.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
        f"request_id {request_id} was already used for a different request",
        metadata={"request_id": request_id},
        violations=[FieldViolation("request_id", "already used for a different request")],
    )
