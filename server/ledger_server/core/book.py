"""The accounts one write unit has locked, and how postings change them.

A Book locks each account once, brings it up to date (expired holds released, expired
credit lots written off) before anything reads its balance, keeps its balances as they
change, records transactions with their balanced entries, and writes the balances back
once at the end (flush)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from ledger_server.core import lots
from ledger_server.core.errors import Category, LedgerError, not_found
from ledger_server.core.ids import new_id
from ledger_server.core.model import (
    INT64_MAX,
    INT64_MIN,
    Creator,
    Direction,
    Entry,
    Lot,
    LotUse,
    Transaction,
    TransactionKind,
    TransactionStatus,
    TransactionType,
    evolve,
)
from ledger_server.core.ports import LockedBalance, WriteUnit

# The tenant's counter-accounts: customer credits come from and debits return to
# ISSUANCE; expired credit goes to EXPIRY.
ISSUANCE = "issuance"
EXPIRY = "expiry"


@dataclass
class Held:
    """A locked account's balances as this unit changes them."""

    id: str
    currency: str
    floor: int
    status: str
    posted: int
    pending: int
    expiring: int
    last_posting_date: dt.date | None
    updated_at: dt.datetime
    dirty: bool = False

    @classmethod
    def of(cls, row: LockedBalance) -> Held:
        return cls(
            row.id,
            row.currency,
            row.balance_floor,
            row.status,
            row.posted,
            row.pending,
            row.expiring,
            row.last_posting_date,
            row.updated_at,
        )

    @property
    def available(self) -> int:
        return self.posted - self.pending


class Book:
    def __init__(self, w: WriteUnit, tenant_id: str, now: dt.datetime) -> None:
        self.w = w
        self.tenant_id = tenant_id
        # The unit's time. Never before the last change of an account it locked, so
        # that every account's entries are in the same order by time and by seq.
        self.now = now
        self._held: dict[str, Held] = {}  # every account locked, counter shards too
        self._customers: dict[str, Held] = {}  # those that customer() may hand out
        self._counters: dict[tuple[str, str], Held] = {}
        # Counter shards locked along with a customer account, not yet asked for.
        self._prefetched: dict[tuple[str, str], LockedBalance] = {}
        self.lots_expired = 0
        self.holds_voided = 0

    # -- locking ----------------------------------------------------------------------

    def customer(self, account_id: str, counter: tuple[str, str] | None = None) -> Held:
        """Lock a customer account (once per unit), up to date as of now; with `counter`
        (currency, purpose), also a shard that counter() will be asked for, in the same
        round trip (a Postgres posting makes five)."""
        held = self._customers.get(account_id)
        if held is None:
            if counter is not None and counter not in self._counters:
                row, shard = self.w.lock_customer_and_counter(self.tenant_id, account_id, *counter)
                if shard is not None:
                    self._prefetched[counter] = shard
            else:
                row = self.w.lock_customer_account(self.tenant_id, account_id)
            if row is None:
                raise not_found("account", f"accounts/{account_id}")
            held = self._hold(row)
        return held

    def customers(self, account_ids: Iterable[str]) -> None:
        """Lock these customer accounts as customer() would, in one statement (in id order:
        one order for every unit that locks several). One that does not exist is left to
        customer() to refuse."""
        wanted = sorted(set(account_ids) - self._customers.keys())
        if wanted:
            rows = self.w.lock_customer_accounts(self.tenant_id, wanted)
            for account_id in wanted:
                if account_id in rows:
                    self._hold(rows[account_id])

    def _hold(self, row: LockedBalance) -> Held:
        """A customer account just locked, brought up to date as of now."""
        held = self._held[row.id] = self._customers[row.id] = Held.of(row)
        self.now = max(self.now, held.updated_at)
        self._release_expired_holds(held)
        self._expire_lots(held)
        return held

    def counter(self, currency: str, purpose: str) -> Held:
        """Lock one of the tenant's counter-account shards for `currency` (once per unit)."""
        held = self._counters.get((currency, purpose))
        if held is None:
            row = self._prefetched.pop((currency, purpose), None) or self.w.lock_counter_account(
                self.tenant_id, currency, purpose, self.now
            )
            held = self._held.get(row.id) or Held.of(row)
            self._held[row.id] = self._counters[(currency, purpose)] = held
            # A shard is shared by every replica and writer: its entries, too, must be in
            # the same order by time and by seq.
            self.now = max(self.now, held.updated_at)
        return held

    # -- recording --------------------------------------------------------------------

    def record(self, txn: Transaction, legs: Sequence[tuple[Held, int]]) -> Transaction:
        """Insert `txn` with one entry per leg (signed amounts summing to zero; customer
        legs dated with the transaction), and return it with its ending balances filled in."""
        assert sum(amount for _, amount in legs) == 0, "unbalanced legs"
        after = {held.id: held.posted + amount for held, amount in legs}
        if not all(INT64_MIN <= posted <= INT64_MAX for posted in after.values()):
            raise LedgerError(
                Category.FAILED_PRECONDITION,
                "BALANCE_OVERFLOW",
                "the posting would take a balance outside the int64 range",
                metadata={"account": f"accounts/{txn.account_id}"},
            )
        entries = []
        for held, amount in legs:
            held.posted += amount
            held.dirty = True
            if held.id in (txn.account_id, txn.counterparty_id):
                entries.append(self._customer_entry(held, amount, txn.posting_date))
            else:
                entries.append(Entry(held.id, amount, held.posted))
        ending = self._held[txn.account_id].posted
        counter_ending = self._held[txn.counterparty_id].posted if txn.counterparty_id else 0
        txn = evolve(txn, ending_balance=ending, counterparty_ending_balance=counter_ending)
        self.w.insert_transaction(txn, entries)
        return txn

    def _customer_entry(self, held: Held, amount: int, posting_date: dt.date) -> Entry:
        """A customer leg, with its balance as of its posting date. A backdated leg
        (a backfill) also moves the date balances of the legs dated after it."""
        if held.last_posting_date is None or posting_date >= held.last_posting_date:
            held.last_posting_date = posting_date
            date_balance = held.posted
        else:
            date_balance = self.w.date_balance_before(held.id, posting_date) + amount
            self.w.shift_date_balances(held.id, posting_date, amount)
        return Entry(held.id, amount, held.posted, posting_date, date_balance)

    def new_transaction(
        self,
        account: Held,
        direction: Direction,
        amount: int,
        type_: TransactionType,
        *,
        kind: TransactionKind = TransactionKind.ADJUSTMENT,
        status: TransactionStatus = TransactionStatus.POSTED,
        description: str = "",
        posting_date: dt.date | None = None,
        external_id: str = "",
        metadata: dict[str, str] | None = None,
        creator: Creator | None = None,
        expires_at: dt.datetime | None = None,
        counterparty_id: str = "",
        related_id: str = "",
    ) -> Transaction:
        """A transaction of this unit (balances are filled in by record)."""
        return Transaction(
            id=new_id(),
            tenant_id=self.tenant_id,
            account_id=account.id,
            direction=direction,
            amount=amount,
            currency=account.currency,
            kind=kind,
            status=status,
            ending_balance=0,
            created_at=self.now,
            updated_at=self.now,
            type=type_,
            description=description,
            posting_date=posting_date or self.now.date(),
            external_id=external_id,
            metadata=metadata or {},
            creator=creator,
            expires_at=expires_at,
            counterparty_id=counterparty_id,
            related_id=related_id,
        )

    def set_state(
        self,
        txn: Transaction,
        status: TransactionStatus,
        *,
        refunded: int | None = None,
        captured: int | None = None,
    ) -> Transaction:
        """Change a hold's or a refunded transaction's status and amounts."""
        txn = replace(
            txn,
            status=status,
            refunded_amount=txn.refunded_amount if refunded is None else refunded,
            captured_amount=txn.captured_amount if captured is None else captured,
            updated_at=self.now,
        )
        self.w.update_transaction_state(
            txn.id, txn.status, refunded=txn.refunded_amount, captured=txn.captured_amount, now=self.now
        )
        return txn

    # -- credit lots ------------------------------------------------------------------

    def grant(self, held: Held, transaction_id: str, new_lots: Sequence[tuple[dt.datetime, int]]) -> None:
        """Credit that expires: lots on `held` created by `transaction_id`."""
        if new_lots:
            self.w.insert_lots(self.tenant_id, held.id, transaction_id, new_lots, self.now)
            held.expiring += sum(amount for _, amount in new_lots)
            held.dirty = True

    def take(self, held: Held, amount: int, transaction_id: str, prefer: str = "") -> list[tuple[Lot, int]]:
        """A debit of `amount` by `transaction_id` consumes `held`'s lots first."""
        if held.expiring <= 0:
            return []
        taken = lots.consume(self.w.open_lots(held.id), amount, prefer)
        if taken:
            self.w.set_lot_remainders([(lot.seq, lot.remaining - n) for lot, n in taken])
            self.w.insert_lot_uses(transaction_id, [LotUse(lot.seq, n, 0) for lot, n in taken])
            held.expiring -= sum(n for _, n in taken)
            held.dirty = True
        return taken

    def give_back(self, held: Held, original: Transaction, amount: int) -> None:
        """A refund of `amount` of the debit `original` returns credit to the lots it
        consumed. Credit returned to a lot that has expired since is written off again
        at once: it would have expired unspent."""
        uses = self.w.lot_uses(original.id)
        back = lots.restore(uses, original.amount, original.refunded_amount, amount)
        if back:
            self.w.add_to_lots(back)
            self.w.add_restored(original.id, back)
            held.expiring += sum(n for _, n in back)
            held.dirty = True
            self._expire_lots(held)

    # -- expiry -----------------------------------------------------------------------

    def _release_expired_holds(self, held: Held) -> None:
        if held.pending <= 0:
            return
        for hold in self.w.expired_holds(held.id, self.now):
            held.pending -= hold.amount
            held.dirty = True
            self.set_state(hold, TransactionStatus.VOIDED)
            self.holds_voided += 1

    def _expire_lots(self, held: Held) -> None:
        """Write off the unspent remainder of every lot of `held` past its expiry."""
        if held.expiring <= 0:
            return
        for lot in self.w.open_lots(held.id):
            if lot.expires_at > self.now:
                break  # soonest first: the rest are live
            counter = self.counter(held.currency, EXPIRY)
            txn = self.new_transaction(
                held,
                Direction.DEBIT,
                lot.remaining,
                TransactionType.EXPIRY,
                description="expired credit",
                related_id=lot.transaction_id,
            )
            self.record(txn, [(held, -lot.remaining), (counter, lot.remaining)])
            self.w.set_lot_remainders([(lot.seq, 0)])
            held.expiring -= lot.remaining
            self.lots_expired += 1

    def flush(self) -> None:
        """Write back every changed balance: one statement for an atomic batch's many."""
        dirty = [held for held in self._held.values() if held.dirty]
        if dirty:
            self.w.set_balances(dirty, self.now)
