"""Stateful property test: random sequences of every operation (credits with and without
expiry, debits, holds, captures, voids, refunds, transfers, atomic batches, credit lines
raised and lowered, freezing, unfreezing and closing accounts, the expiry worker and time
passing) against an
in-memory model of the rules. After every step the ledger's balances, expiring/permanent
split, statuses and amounts match the model, and VerifyLedger finds nothing wrong. On
SQLite and Postgres."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine

from ledger_server.core.admin import Admin
from ledger_server.core.errors import LedgerError
from ledger_server.core.ledger import BatchItem, Ledger
from ledger_server.core.model import (
    Account,
    AccountChanges,
    AccountStatus,
    Direction,
    NewAccount,
    NewTransaction,
    Transaction,
    TransactionFilter,
    TransactionStatus,
    TransactionType,
)
from ledger_server.core.operations import Capture, Refund
from ledger_server.store.sql_store import SqlStore

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
FLOORS = [0, 0, -100]
# How a capture or refund is made: its own call, a CreateTransaction of its type, a batch item.
SETTLED_BY = ["call", "transaction", "batch"]
SETTLED_AS = {"capture": TransactionType.CAPTURE, "refund": TransactionType.REFUND}
_tenants = itertools.count()


@dataclass
class MLot:
    order: int  # creation order (the store's seq)
    expires: dt.datetime
    remaining: int
    source: str  # the transaction that created it


@dataclass
class MAccount:
    floor: int
    permanent: int = 0
    lots: list[MLot] = field(default_factory=list)
    holds: dict[str, tuple[int, dt.datetime | None]] = field(default_factory=dict)  # pending holds
    status: AccountStatus = AccountStatus.ACTIVE
    changes: list[tuple[AccountStatus, AccountStatus]] = field(default_factory=list)  # oldest first
    floors: list[tuple[int, int]] = field(default_factory=list)  # credit line changes, oldest first

    def sweep(self, now: dt.datetime) -> None:
        """What every write does first: lapsed holds released, expired lots written off."""
        self.holds = {h: (a, e) for h, (a, e) in self.holds.items() if e is None or e > now}
        self.lots = [lot for lot in self.lots if lot.expires > now and lot.remaining > 0]

    @property
    def expiring(self) -> int:
        return sum(lot.remaining for lot in self.lots)

    @property
    def posted(self) -> int:
        return self.permanent + self.expiring

    @property
    def pending(self) -> int:
        return sum(a for a, _ in self.holds.values())

    def take(self, amount: int, prefer: str = "") -> list[tuple[MLot, int]]:
        taken = []
        left = amount
        for lot in sorted(self.lots, key=lambda x: (x.source != prefer, x.expires, x.order)):
            n = min(lot.remaining, left)
            if n:
                lot.remaining -= n
                taken.append((lot, n))
                left -= n
        self.permanent -= left
        self.lots = [lot for lot in self.lots if lot.remaining > 0]
        return taken


@dataclass
class MTxn:
    account: int
    direction: Direction
    amount: int
    refundable: bool
    refunded: int = 0
    uses: list[tuple[MLot, int, int]] = field(default_factory=list)  # lot, taken, restored
    status: str = "posted"
    captured: int = 0


class LedgerMachine(RuleBasedStateMachine):
    engine: Engine  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.store = SqlStore(self.engine)
        self.now = START
        self.ledger = Ledger(self.store, lambda: self.now)
        self.tenant = f"model-{next(_tenants)}"
        Admin(self.store).create_tenant(self.tenant, "")
        self.order = itertools.count()
        self.accounts: list[str] = []
        self.model: list[MAccount] = []
        self.txns: dict[str, MTxn] = {}
        self.holds: dict[str, MTxn] = {}

    def teardown(self) -> None:
        self.store.close()

    @initialize()
    def open_accounts(self) -> None:
        for floor in FLOORS:
            made = self.ledger.create_account(self.tenant, NewAccount("model", "USD", floor))
            assert isinstance(made, Account)
            self.accounts.append(made.id)
            self.model.append(MAccount(floor))

    # -- helpers ----------------------------------------------------------------------

    def _m(self, i: int) -> MAccount:
        m = self.model[i]
        m.sweep(self.now)
        return m

    def _expect(self, expected: str | None, call: object, *args: object, **kw: object) -> object:
        try:
            result = call(*args, **kw)  # type: ignore[operator]
        except LedgerError as err:
            assert err.reason == expected, f"refused with {err.reason}, model expected {expected}"
            return None
        assert expected is None, f"accepted, model expected {expected}"
        return result

    @staticmethod
    def _inactive(m: MAccount) -> str | None:
        return None if m.status is AccountStatus.ACTIVE else "ACCOUNT_NOT_ACTIVE"

    def _lot(self, m: MAccount, expires: dt.datetime, amount: int, source: str) -> None:
        m.lots.append(MLot(next(self.order), expires, amount, source))

    # -- rules ------------------------------------------------------------------------

    @rule(i=st.integers(0, 2), amount=st.integers(1, 500), days=st.none() | st.integers(1, 6))
    def credit(self, i: int, amount: int, days: int | None) -> None:
        expires = None if days is None else self.now + dt.timedelta(days=days)
        m = self._m(i)
        cmd = NewTransaction(self.accounts[i], Direction.CREDIT, amount, "USD", expires_at=expires)
        txn = self._expect(self._inactive(m), self.ledger.post_transaction, self.tenant, cmd)
        if not isinstance(txn, Transaction):
            return
        if expires is None:
            m.permanent += amount
        else:
            self._lot(m, expires, amount, txn.id)
        self.txns[txn.id] = MTxn(i, Direction.CREDIT, amount, refundable=True)

    def _debit_outcome(self, m: MAccount, amount: int) -> str | None:
        return None if m.posted - m.pending - amount >= m.floor else "INSUFFICIENT_FUNDS"

    @rule(i=st.integers(0, 2), amount=st.integers(1, 700))
    def debit(self, i: int, amount: int) -> None:
        m = self._m(i)
        expected = self._inactive(m) or self._debit_outcome(m, amount)
        cmd = NewTransaction(self.accounts[i], Direction.DEBIT, amount, "USD")
        txn = self._expect(expected, self.ledger.post_transaction, self.tenant, cmd)
        if isinstance(txn, Transaction):
            uses = [(lot, n, 0) for lot, n in m.take(amount)]
            self.txns[txn.id] = MTxn(i, Direction.DEBIT, amount, refundable=True, uses=uses)

    @rule(i=st.integers(0, 2), amount=st.integers(1, 400), hours=st.none() | st.integers(1, 72))
    def hold(self, i: int, amount: int, hours: int | None) -> None:
        expires = None if hours is None else self.now + dt.timedelta(hours=hours)
        m = self._m(i)
        expected = self._inactive(m) or self._debit_outcome(m, amount)
        cmd = NewTransaction(self.accounts[i], None, amount, "USD", expires_at=expires)
        txn = self._expect(expected, self.ledger.create_hold, self.tenant, cmd)
        if isinstance(txn, Transaction):
            m.holds[txn.id] = (amount, expires)
            self.holds[txn.id] = MTxn(i, Direction.DEBIT, amount, refundable=False, status="pending")

    def _hold_status(self, h: str, t: MTxn) -> str:
        if t.status == "pending" and h not in self._m(t.account).holds:
            return "voided"  # lapsed
        return t.status

    def _settle(
        self, expected: str | None, how: str, cmd: NewTransaction, call: Callable[[], object]
    ) -> str | None:
        """A capture or refund made through its own call, as a CreateTransaction of its
        type, or as an atomic batch's item: the id of what it posted, None if refused."""
        if how == "transaction":
            made = self._expect(expected, self.ledger.post_transaction, self.tenant, cmd)
        elif how == "batch":
            results = self._expect(expected, self.ledger.post_batch, self.tenant, [BatchItem(cmd)], True)
            made = results[0] if isinstance(results, list) else None
        else:
            result = self._expect(expected, call)
            made = (
                result.capture
                if isinstance(result, Capture)
                else result.refund
                if isinstance(result, Refund)
                else None
            )
        return made.id if isinstance(made, Transaction) else None

    def _capture_expected(self, h: str, part: int) -> tuple[str | None, int]:
        """What capturing `part` (0: all) of hold `h` answers, and the amount it captures."""
        t = self.holds[h]
        m = self._m(t.account)
        amount = part or t.amount
        if self._hold_status(h, t) != "pending":
            return "HOLD_NOT_PENDING", amount
        if amount > t.amount:
            return "AMOUNT_EXCEEDS_HOLD", amount
        if self._inactive(m):
            return self._inactive(m), amount
        return (
            None if m.posted - (m.pending - t.amount) - amount >= m.floor else "INSUFFICIENT_FUNDS"
        ), amount

    def _captured(self, h: str, amount: int, made: str) -> None:
        t = self.holds[h]
        m = self._m(t.account)
        del m.holds[h]
        t.status, t.captured = "captured", amount
        uses = [(lot, n, 0) for lot, n in m.take(amount)]
        self.txns[made] = MTxn(t.account, Direction.DEBIT, amount, refundable=True, uses=uses)

    @precondition(lambda self: self.holds)
    @rule(data=st.data(), part=st.integers(0, 450), how=st.sampled_from(SETTLED_BY))
    def capture(self, data: st.DataObject, part: int, how: str) -> None:
        h = data.draw(st.sampled_from(list(self.holds)))
        expected, amount = self._capture_expected(h, part)
        made = self._settle(
            expected,
            how,
            NewTransaction("", None, part, "", type=TransactionType.CAPTURE, related_id=h),
            lambda: self.ledger.capture_hold(
                self.tenant, h, amount=part, cmd=NewTransaction("", None, 0, "")
            ),
        )
        if made is not None:
            self._captured(h, amount, made)

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def void(self, data: st.DataObject) -> None:
        h = data.draw(st.sampled_from(list(self.holds)))
        t = self.holds[h]
        m = self._m(t.account)
        expected = None if self._hold_status(h, t) == "pending" else "HOLD_NOT_PENDING"
        if self._expect(expected, self.ledger.void_hold, self.tenant, h) is not None:
            del m.holds[h]
            t.status = "voided"

    def _refund_expected(self, original: str, part: int) -> tuple[str | None, int]:
        """What refunding `part` (0: all that is left) of `original` answers, and the
        amount it refunds."""
        t = self.txns[original]
        m = self._m(t.account)
        left = t.amount - t.refunded
        amount = part or left
        if not t.refundable:
            return "NOT_REFUNDABLE", amount
        if left == 0 or amount > left:
            return "AMOUNT_EXCEEDS_REFUNDABLE", amount
        if self._inactive(m):
            return self._inactive(m), amount
        return (self._debit_outcome(m, amount) if t.direction is Direction.CREDIT else None), amount

    def _refunded(self, original: str, amount: int, made: str) -> None:
        t = self.txns[original]
        m = self._m(t.account)
        if t.direction is Direction.CREDIT:
            m.take(amount, prefer=original)
        else:
            self._give_back(m, t, amount)
        t.refunded += amount
        t.status = "refunded" if t.refunded == t.amount else "partially_refunded"
        self.txns[made] = MTxn(t.account, Direction.CREDIT, amount, refundable=False)

    @precondition(lambda self: self.txns)
    @rule(data=st.data(), part=st.integers(0, 600), how=st.sampled_from(SETTLED_BY))
    def refund(self, data: st.DataObject, part: int, how: str) -> None:
        original = data.draw(st.sampled_from(list(self.txns)))
        expected, amount = self._refund_expected(original, part)
        details = NewTransaction("", None, part, "")
        made = self._settle(
            expected,
            how,
            NewTransaction("", None, part, "", type=TransactionType.REFUND, related_id=original),
            lambda: self.ledger.refund(self.tenant, original, amount=part, cmd=details),
        )
        if made is not None:
            self._refunded(original, amount, made)

    @precondition(lambda self: self._pool("capture") or self._pool("refund"))
    @rule(data=st.data(), count=st.integers(2, 4))
    def settling_batch(self, data: st.DataObject, count: int) -> None:
        """An atomic batch of captures and refunds of open holds and refundable payments
        (each a different one while there are, then some the same): its outcome is found by
        making its items, in order, on a copy of the model; only if they all succeed there
        must the ledger post it. Small amounts (0: all), so that most batches can succeed."""
        picks: list[tuple[str, str, int]] = []
        for _ in range(count):
            kind = data.draw(st.sampled_from([k for k in ("capture", "refund") if self._pool(k)]))
            named = {t for _, t, _ in picks}
            pool = self._pool(kind)  # another one than the batch names already, while there are
            target = data.draw(st.sampled_from([t for t in pool if t not in named] or pool))
            picks.append((kind, target, data.draw(st.sampled_from([0, 1, 5, 20]))))
        real = (self.model, self.holds, self.txns)
        self.model, self.holds, self.txns = copy.deepcopy(real)  # the trial: shares nothing with the model
        expected: str | None = None
        amounts = []
        try:
            for k, (kind, target, part) in enumerate(picks):
                expected, amount = self._settling_rules(kind)[0](target, part)
                if expected:
                    break
                amounts.append(amount)
                self._settling_rules(kind)[1](target, amount, f"trial-{k}")
        finally:
            self.model, self.holds, self.txns = real
        batch = [
            BatchItem(NewTransaction("", None, part, "", type=SETTLED_AS[kind], related_id=target))
            for kind, target, part in picks
        ]
        results = self._expect(expected, self.ledger.post_batch, self.tenant, batch, True)
        if isinstance(results, list):
            for (kind, target, _), amount, made in zip(picks, amounts, results, strict=True):
                assert isinstance(made, Transaction)
                self._settling_rules(kind)[1](target, amount, made.id)

    def _pool(self, kind: str) -> list[str]:
        """What a settling batch may name: the open holds, or the payments with something
        left to refund."""
        if kind == "capture":
            return [h for h, t in self.holds.items() if t.status == "pending"]
        return [i for i, t in self.txns.items() if t.refundable and t.refunded < t.amount]

    def _settling_rules(
        self, kind: str
    ) -> tuple[Callable[[str, int], tuple[str | None, int]], Callable[[str, int, str], None]]:
        """A capture's or a refund's expected answer, and its effect on the model."""
        if kind == "capture":
            return self._capture_expected, self._captured
        return self._refund_expected, self._refunded

    def _give_back(self, m: MAccount, t: MTxn, amount: int) -> None:
        permanent_part = t.amount - sum(n for _, n, _ in t.uses)
        to_permanent = max(0, min(amount, permanent_part - min(t.refunded, permanent_part)))
        m.permanent += to_permanent
        left = amount - to_permanent
        ordered = sorted(range(len(t.uses)), key=lambda k: (t.uses[k][0].expires, t.uses[k][0].order))
        for k in reversed(ordered):
            lot, taken, restored = t.uses[k]
            give = min(taken - restored, left)
            if give:
                t.uses[k] = (lot, taken, restored + give)
                lot.remaining += give
                left -= give
                if lot.expires > self.now and all(x is not lot for x in m.lots):
                    m.lots.append(lot)
        assert left == 0

    @rule(a=st.integers(0, 2), b=st.integers(0, 2), amount=st.integers(1, 500))
    def transfer(self, a: int, b: int, amount: int) -> None:
        source, destination = self._m(a), self._m(b)
        expected = (
            "INVALID_REQUEST"
            if a == b
            else self._inactive(source) or self._inactive(destination) or self._debit_outcome(source, amount)
        )
        cmd = NewTransaction(self.accounts[a], None, amount, "USD", counterparty_id=self.accounts[b])
        txn = self._expect(expected, self.ledger.transfer, self.tenant, cmd)
        if isinstance(txn, Transaction):
            by_expiry: dict[dt.datetime, int] = {}
            for lot, n in source.take(amount):
                by_expiry[lot.expires] = by_expiry.get(lot.expires, 0) + n
            moved_permanent = amount - sum(by_expiry.values())
            destination.permanent += moved_permanent
            for expires, n in sorted(by_expiry.items()):
                self._lot(destination, expires, n, txn.id)
            self.txns[txn.id] = MTxn(a, Direction.DEBIT, amount, refundable=False)

    @rule(
        items=st.lists(
            st.tuples(st.integers(0, 2), st.sampled_from(["credit", "debit", "hold"]), st.integers(1, 400)),
            min_size=1,
            max_size=4,
        )
    )
    def atomic_batch(self, items: list[tuple[int, str, int]]) -> None:
        # Simulated on the side: the batch applies entirely or not at all.
        trial = {i: (self._m(i).posted, self._m(i).pending) for i in range(3)}
        expected = None
        for i, kind, amount in items:
            expected = self._inactive(self.model[i])
            if expected:
                break
            posted, pending = trial[i]
            posted += {"credit": amount, "debit": -amount}.get(kind, 0)
            pending += amount if kind == "hold" else 0
            if kind != "credit" and posted - pending < self.model[i].floor:
                expected = "INSUFFICIENT_FUNDS"
                break
            trial[i] = (posted, pending)
        batch = [
            BatchItem(
                NewTransaction(
                    self.accounts[i],
                    Direction.CREDIT if kind == "credit" else Direction.DEBIT,
                    n,
                    "USD",
                    type=TransactionType.HOLD if kind == "hold" else TransactionType.STANDARD,
                )
            )
            for i, kind, n in items
        ]
        results = self._expect(expected, self.ledger.post_batch, self.tenant, batch, True)
        if isinstance(results, list):
            for (i, kind, amount), txn in zip(items, results, strict=True):
                assert isinstance(txn, Transaction)
                m = self.model[i]
                if kind == "hold":
                    m.holds[txn.id] = (amount, None)
                    self.holds[txn.id] = MTxn(i, Direction.DEBIT, amount, refundable=False, status="pending")
                elif kind == "credit":
                    m.permanent += amount
                    self.txns[txn.id] = MTxn(i, Direction.CREDIT, amount, refundable=True)
                else:
                    uses = [(lot, n, 0) for lot, n in m.take(amount)]
                    self.txns[txn.id] = MTxn(i, Direction.DEBIT, amount, refundable=True, uses=uses)

    @rule(i=st.integers(0, 2), status=st.sampled_from(AccountStatus))
    def change_status(self, i: int, status: AccountStatus) -> None:
        target = status  # ("target" is a keyword of @rule)
        m = self._m(i)
        expected: str | None = None
        if m.status is not target:
            if m.status is AccountStatus.CLOSED:
                expected = "ACCOUNT_NOT_ACTIVE"
            elif target is AccountStatus.CLOSED and (m.posted or m.pending or m.expiring):
                expected = "ACCOUNT_NOT_EMPTY"
        call = self.ledger.change_account_status
        changed = self._expect(expected, call, self.tenant, self.accounts[i], target, f"to {target.value}")
        if isinstance(changed, Account):
            assert changed.status is target
            if m.status is not target:
                m.changes.append((m.status, target))
            m.status = target

    @rule(i=st.integers(0, 2), floor=st.sampled_from([-300, -100, 0]))
    def change_floor(self, i: int, floor: int) -> None:
        m = self._m(i)
        expected: str | None = None
        if m.status is AccountStatus.CLOSED:
            expected = "ACCOUNT_NOT_ACTIVE"
        elif floor > m.floor and m.posted - m.pending < floor:
            expected = "BALANCE_BELOW_FLOOR"
        changes = AccountChanges(balance_floor=floor)
        changed = self._expect(expected, self.ledger.update_account, self.tenant, self.accounts[i], changes)
        if isinstance(changed, Account):
            assert changed.balance_floor == floor
            if floor != m.floor:  # an update to the floor it has changes nothing, and is not kept
                m.floors.append((m.floor, floor))
            m.floor = floor

    @rule(hours=st.sampled_from([1, 6, 24, 50]))
    def time_passes(self, hours: int) -> None:
        self.now += dt.timedelta(hours=hours)

    @rule()
    def expire(self) -> None:
        self.ledger.expire_due()
        for i in range(3):
            self._m(i)

    # -- checks ---------------------------------------------------------------------

    @invariant()
    def balances_match_the_model(self) -> None:
        for i, account_id in enumerate(self.accounts):
            m = self._m(i)
            a = self.ledger.get_account(self.tenant, account_id)
            got = (a.posted, a.pending, a.available, a.expiring, a.permanent, a.status, a.balance_floor)
            want = (m.posted, m.pending, m.posted - m.pending, m.expiring, m.permanent, m.status, m.floor)
            assert got == want, f"account {i}: ledger {got}, model {want}"
            changes, _ = self.ledger.list_status_changes(self.tenant, account_id, 1000, "")
            assert [(c.previous, c.status) for c in reversed(changes)] == m.changes
            updates, _ = self.ledger.list_account_updates(self.tenant, account_id, 1000, "")
            assert [
                (u.previous.balance_floor, u.current.balance_floor) for u in reversed(updates)
            ] == m.floors
            lots = sorted(m.lots, key=lambda x: x.expires)
            expected_next: dict[dt.datetime, int] = {}
            for lot in lots:
                expected_next[lot.expires] = expected_next.get(lot.expires, 0) + lot.remaining
            assert [(e.expires_at, e.amount) for e in a.next_expirations] == sorted(expected_next.items())[
                :10
            ]

    @invariant()
    def statuses_match_the_model(self) -> None:
        for h, t in self.holds.items():
            txn = self.ledger.get_transaction(self.tenant, h)
            assert (txn.status.value, txn.captured_amount) == (self._hold_status(h, t), t.captured)
        for txn_id, t in self.txns.items():
            if t.refundable:
                txn = self.ledger.get_transaction(self.tenant, txn_id)
                assert (txn.status.value, txn.refunded_amount) == (t.status, t.refunded)
        # ListTransactions' status filter agrees, lapsed holds included (voided as of now).
        expected = {h: self._hold_status(h, t) for h, t in self.holds.items()}
        expected |= {txn_id: t.status for txn_id, t in self.txns.items() if t.refundable}
        for status in TransactionStatus:
            if status is not TransactionStatus.POSTED:  # not every posted one is in the model
                flt = TransactionFilter(status=status)
                listed, _ = self.ledger.list_transactions(self.tenant, flt, 1000, "")
                assert {t.id for t in listed} == {k for k, v in expected.items() if v == status.value}

    @invariant()
    def verify_ledger_is_clean(self) -> None:
        if self.accounts:
            assert self.ledger.verify(self.tenant).violations == []


def test_every_operation_matches_the_model(engine: Engine) -> None:
    LedgerMachine.engine = engine
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        LedgerMachine,
        settings=settings(
            max_examples=int(os.environ.get("LEDGER_STATEFUL_EXAMPLES", "25")),
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
