"""What the core needs from storage. The store package implements these protocols."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ledger_server.core.model import (
    Account,
    Entry,
    NewAccount,
    Page,
    Tenant,
    TokenRecord,
    Transaction,
    TransactionFilter,
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


class ReadUnit(Protocol):
    def get_account(self, tenant_id: str, account_id: str) -> Account | None: ...
    def list_accounts(
        self, tenant_id: str, external_ref: str, after: int | None, limit: int
    ) -> Page[Account]: ...
    def get_transaction(self, tenant_id: str, transaction_id: str) -> Transaction | None: ...
    def list_transactions(
        self, tenant_id: str, flt: TransactionFilter, before: int | None, limit: int
    ) -> Page[Transaction]: ...
    def setting(self, key: str) -> str | None: ...
    def get_token(self, token_id: str) -> TokenRecord | None: ...
    def list_tokens(self, tenant_id: str | None) -> list[TokenRecord]: ...
    def list_tenants(self) -> list[Tenant]: ...


class WriteUnit(ReadUnit, Protocol):
    """One atomic database transaction. Locks are held until it ends."""

    def find_response(self, tenant_id: str, request_id: str) -> StoredResponse | None: ...
    def save_response(
        self, tenant_id: str, request_id: str, fingerprint: bytes, response: bytes, now: dt.datetime
    ) -> None: ...
    def insert_account(
        self, tenant_id: str, account_id: str, new: NewAccount, now: dt.datetime
    ) -> Account: ...
    def lock_customer_account(self, tenant_id: str, account_id: str) -> LockedBalance | None: ...
    def lock_counter_account(
        self, tenant_id: str, currency: str, purpose: str, now: dt.datetime
    ) -> LockedBalance:
        """Lock one of the tenant's counter-account shards for `currency`: any free one, so
        that concurrent postings never queue on a single system row."""
        ...

    def find_transaction_id_by_external_id(self, tenant_id: str, external_id: str) -> str | None: ...
    def insert_transaction(self, txn: Transaction, entries: list[Entry]) -> None: ...
    def set_posted_balance(self, account_id: str, posted: int, now: dt.datetime) -> None: ...
    def insert_tenant(self, tenant: Tenant) -> None: ...
    def insert_token(self, token: TokenRecord) -> None: ...
    def revoke_token(self, token_id: str, now: dt.datetime) -> bool:
        """Mark an active token revoked; False if there is none."""
        ...


class Store(Protocol):
    def reading(self) -> AbstractContextManager[ReadUnit]: ...
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

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        ...

    def close(self) -> None: ...
