"""What the core needs from storage. The store package implements these protocols."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ledger_server.core.model import (
    Account,
    AccountStatus,
    AccountUpdate,
    Entry,
    Lot,
    LotUse,
    NewAccount,
    Page,
    StatusChange,
    Tenant,
    TokenRecord,
    Transaction,
    TransactionChange,
    TransactionFilter,
    TransactionStatus,
)

T = TypeVar("T")


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: bytes
    response: bytes


@dataclass(frozen=True)
class LockedBalance:
    """An account row locked for the rest of the write unit."""

    id: str
    currency: str
    balance_floor: int
    status: str
    posted: int
    pending: int
    expiring: int
    last_posting_date: dt.date | None
    updated_at: dt.datetime


@dataclass(frozen=True)
class AccountAudit:
    """An account's stored balances beside what its entries, holds and lots say."""

    id: str
    kind: str
    balance_floor: int
    posted: int
    pending: int
    expiring: int
    entry_sum: int
    last_running_balance: int | None
    open_holds: int
    lot_remainders: int


@dataclass(frozen=True)
class BrokenLink:
    """An entry whose running balance is not the previous one plus its amount."""

    account_id: str
    transaction_id: str
    expected: int
    found: int


class NewBalances(Protocol):
    """An account's balances as a unit leaves them (book.Held)."""

    @property
    def id(self) -> str: ...
    @property
    def posted(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def expiring(self) -> int: ...
    @property
    def last_posting_date(self) -> dt.date | None: ...


class ReadUnit(Protocol):
    def get_account(self, tenant_id: str, account_id: str) -> Account | None: ...
    def list_accounts(
        self, tenant_id: str, external_ref: str, status: AccountStatus | None, after: int | None, limit: int
    ) -> Page[Account]: ...
    def list_status_changes(self, account_id: str, before: int | None, limit: int) -> Page[StatusChange]:
        """An account's status changes, newest first, those before seq `before` if given."""
        ...

    def list_account_updates(self, account_id: str, before: int | None, limit: int) -> Page[AccountUpdate]:
        """The updates of an account's details, newest first, those before seq `before`."""
        ...

    def get_transaction(self, tenant_id: str, transaction_id: str) -> Transaction | None: ...
    def list_transactions(
        self, tenant_id: str, flt: TransactionFilter, before: int | None, limit: int, now: dt.datetime
    ) -> Page[Transaction]:
        """Newest first; `now` decides which holds have lapsed, for a status filter."""
        ...

    def list_transaction_changes(self, tenant_id: str, after: int, limit: int) -> Page[TransactionChange]:
        """The tenant's change feed after change `after` (0: from its start), oldest
        first, up to what every reader may rely on being complete (Postgres: below the
        oldest transaction still running)."""
        ...

    def transaction_changes_end(self, tenant_id: str) -> int:
        """Where the tenant's feed ends now, as list_transaction_changes reads it (the
        `after` of its last change up to the same bound; 0 for none): what is committed
        later comes after it."""
        ...

    def open_lots(self, account_id: str) -> list[Lot]:
        """Lots with credit left, soonest-expiring first (expired ones included)."""
        ...

    def expired_holds(self, account_id: str, now: dt.datetime) -> list[Transaction]:
        """Holds still stored as pending whose expiry time has passed."""
        ...

    def balance_at_time(self, account_id: str, at: dt.datetime) -> int: ...
    def balance_at_date(self, account_id: str, date: dt.date) -> int: ...
    def due_for_expiry(self, now: dt.datetime, limit: int) -> list[tuple[str, str]]:
        """(tenant, account) pairs with an expired lot or hold not yet written off."""
        ...

    def audit_accounts(self, tenant_id: str) -> list[AccountAudit]: ...
    def unbalanced_transactions(self, tenant_id: str) -> list[tuple[str, int]]:
        """(transaction, sum of its entries) for every transaction whose entries do not sum to 0."""
        ...

    def broken_running_balances(self, tenant_id: str) -> list[BrokenLink]: ...
    def count_transactions(self, tenant_id: str) -> int: ...
    def setting(self, key: str) -> str | None: ...
    def get_token(self, token_id: str) -> TokenRecord | None: ...
    def list_tokens(self, tenant_id: str | None) -> list[TokenRecord]: ...
    def list_tenants(self) -> list[Tenant]: ...


class WriteUnit(ReadUnit, Protocol):
    """One atomic database transaction. Locks are held until it ends."""

    def find_response(self, tenant_id: str, request_id: str) -> StoredResponse | None: ...
    def prefetch_responses(self, tenant_id: str, request_ids: Sequence[str]) -> None:
        """Look up many request ids at once; find_response then answers them from memory."""
        ...

    def save_response(
        self, tenant_id: str, request_id: str, fingerprint: bytes, response: bytes, now: dt.datetime
    ) -> None: ...
    def insert_account(
        self, tenant_id: str, account_id: str, new: NewAccount, now: dt.datetime
    ) -> Account: ...
    def lock_customer_account(self, tenant_id: str, account_id: str) -> LockedBalance | None: ...
    def lock_customer_accounts(self, tenant_id: str, account_ids: Sequence[str]) -> dict[str, LockedBalance]:
        """lock_customer_account of each, in one statement and in id order; by id, those
        that are the tenant's customer accounts."""
        ...

    def lock_customer_and_counter(
        self, tenant_id: str, account_id: str, currency: str, purpose: str
    ) -> tuple[LockedBalance | None, LockedBalance | None]:
        """lock_customer_account, and in the same round trip a free counter-account shard
        for `currency` (None if none is free, none exists yet, or this transaction has one)."""
        ...

    def lock_counter_account(
        self, tenant_id: str, currency: str, purpose: str, now: dt.datetime
    ) -> LockedBalance:
        """Lock one of the tenant's counter-account shards for `currency`: any free one, so
        that concurrent postings never queue on a single system row."""
        ...

    def find_transaction_id_by_external_id(self, tenant_id: str, external_id: str) -> str | None: ...
    def insert_transaction(self, txn: Transaction, entries: list[Entry]) -> None: ...
    def update_transaction_state(
        self,
        transaction_id: str,
        status: TransactionStatus,
        *,
        refunded: int,
        captured: int,
        now: dt.datetime,
    ) -> None: ...
    def set_account_status(self, account_id: str, change: StatusChange) -> None:
        """Change the status of an account this unit has locked, and add the change to
        its history."""

    def update_account(self, account_id: str, update: AccountUpdate) -> None:
        """Change the details of an account this unit has locked (the fields `update`
        changes), and add the update to its history."""

    def set_balances(self, balances: Sequence[NewBalances], now: dt.datetime) -> None:
        """Write back the balances of accounts this unit has locked, all at once."""
        ...

    def date_balance_before(self, account_id: str, date: dt.date) -> int:
        """The account's balance over its entries dated on or before `date`."""
        ...

    def shift_date_balances(self, account_id: str, after: dt.date, amount: int) -> None:
        """Add `amount` to the date balances of the account's entries dated after `after`."""
        ...

    def insert_lots(
        self,
        tenant_id: str,
        account_id: str,
        transaction_id: str,
        lots: Sequence[tuple[dt.datetime, int]],
        now: dt.datetime,
    ) -> None: ...
    def set_lot_remainders(self, remainders: Sequence[tuple[int, int]]) -> None: ...
    def add_to_lots(self, amounts: Sequence[tuple[int, int]]) -> None: ...
    def insert_lot_uses(self, transaction_id: str, uses: Sequence[LotUse]) -> None: ...
    def lot_uses(self, transaction_id: str) -> list[LotUse]:
        """What a debit took from lots, in the order it took it."""
        ...

    def add_restored(self, transaction_id: str, amounts: Sequence[tuple[int, int]]) -> None: ...
    def insert_tenant(self, tenant: Tenant) -> None: ...
    def insert_token(self, token: TokenRecord) -> None: ...
    def revoke_token(self, token_id: str, now: dt.datetime) -> bool:
        """Mark an active token revoked; False if there is none."""
        ...


class Store(Protocol):
    def reading(self) -> AbstractContextManager[ReadUnit]:
        """A read unit; in a call greenlet its waits leave the event loop free."""
        ...

    def snapshot(self) -> AbstractContextManager[ReadUnit]:
        """A read unit whose every query sees the same committed state (for audits)."""
        ...

    def writing(self) -> AbstractContextManager[WriteUnit]:
        """A write unit with a transaction of its own (administration, tests)."""
        ...

    def write(self, key: str, work: Callable[[WriteUnit], T]) -> T:
        """Run `work` atomically and durably, possibly sharing a commit with other units
        (group commit). Units with the same key are serialized. Raises what `work` raised
        (nothing of it applied), WriteConflict, or StoreUnavailable."""
        ...

    def write_many(self, jobs: Sequence[tuple[str, Callable[[WriteUnit], T]]]) -> list[T | BaseException]:
        """Run many (key, work) units at once, each atomic on its own, sharing commits;
        each gives its result or the exception it raised (as `write` would)."""
        ...

    def on_commit(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener()` after each commit of write units, from the committing thread
        (it must be quick); returns what removes it."""
        ...

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        ...

    def close(self) -> None: ...
