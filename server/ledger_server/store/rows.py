"""Rows as the core's records: times as integer microseconds since the epoch, metadata as
JSON text, dates as SQLite's ISO text or Postgres's dates, whole rows unpacked by
position, and pages of rows cut to what fits in a reply."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Row

from ledger_server.core.model import (
    Account,
    AccountChanges,
    AccountStatus,
    AccountUpdate,
    Creator,
    Direction,
    Page,
    StatusChange,
    TokenRecord,
    Transaction,
    TransactionChange,
    TransactionKind,
    TransactionStatus,
    TransactionType,
)
from ledger_server.core.paging import ITEM_BYTES, MAX_PAGE_BYTES, item_bytes

T = TypeVar("T")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
CUSTOMER, SYSTEM = "customer", "system"  # accounts.kind
_MICROSECOND = dt.timedelta(microseconds=1)


# Three per posting, two per row read: a timedelta made per call (and by keyword) cost
# these as much again (to_micros 0.66 against 0.25 us, from_micros 0.54 against 0.38).
def to_micros(t: dt.datetime) -> int:
    return (t - EPOCH) // _MICROSECOND


def from_micros(us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(0, 0, us)


def customer_of(tenant_id: str, row: Any, *, tenant_at: int, kind_at: int) -> bool:
    """Whether `row` (looked up by id alone) is a customer account of the tenant."""
    return row is not None and row[tenant_at] == tenant_id and row[kind_at] == CUSTOMER


def dump_metadata(metadata: dict[str, str]) -> str:
    if not metadata:  # most postings carry none: skip the encoder
        return "{}"
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def load_metadata(metadata: str) -> dict[str, str]:
    return {} if metadata == "{}" else json.loads(metadata)


def to_date(value: Any) -> Any:
    """A DATE as read through the DBAPI cursor: ISO text on SQLite (what SQLAlchemy's
    Date stores there), a date already on Postgres and through SQLAlchemy."""
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def page_of(
    rows: Sequence[Any], limit: int, convert: Callable[[Any], T], size: Callable[[T], int]
) -> Page[T]:
    """Up to `limit` items of `rows` (`limit + 1` were read, to tell whether more follow),
    fewer where their `size` would take the reply past MAX_PAGE_BYTES (core/paging.py).
    The next page continues after the last row taken (seq comes first in a row)."""
    more = len(rows) > limit
    rows = rows[:limit]
    items = [convert(r) for r in rows]
    if sum(map(size, items)) > MAX_PAGE_BYTES:  # rare: items with a lot of text
        room, taken = MAX_PAGE_BYTES, 0
        while taken < len(items) and (room := room - size(items[taken])) >= 0:
            taken += 1
        taken = max(taken, 1)
        return Page(items[:taken], rows[taken - 1][0])
    return Page(items, rows[-1][0] if more else None)


# Every row of a page is sized: the common case (no metadata) without a call.
def account_size(a: Account) -> int:
    chars = len(a.external_ref) + len(a.status_reason)
    return item_bytes(a.metadata, chars) if a.metadata else ITEM_BYTES + 4 * chars


def status_change_size(c: StatusChange) -> int:
    return ITEM_BYTES + 4 * len(c.reason)


def transaction_size(t: Transaction) -> int:
    chars = len(t.description) + len(t.external_id)
    return item_bytes(t.metadata, chars) if t.metadata else ITEM_BYTES + 4 * chars


def change_of(row: Sequence[Any]) -> TransactionChange:
    """A change feed row (hot_sql's transaction_changes): a transaction row, then `created`."""
    return TransactionChange(row[0], bool(row[-1]), transaction_of(row[:-1]))


def change_size(c: TransactionChange) -> int:
    return transaction_size(c.transaction)


def creator_of(token_id: str | None, token_name: str) -> Creator | None:
    """A row's token columns (NULL where no token made it: before tokens existed)."""
    return Creator(token_id, token_name) if token_id else None


def creator_columns(creator: Creator | None) -> tuple[str | None, str | None]:
    """creator_of's inverse: the token columns to write."""
    return (creator.token_id, creator.token_name) if creator else (None, None)


# Whole rows in table order (hot_sql's *_COLUMNS, or select(table)), from the DBAPI
# cursor or SQLAlchemy alike: unpacked by position, which fails loudly on a column count
# that does not match.


def account_of(row: Sequence[Any]) -> Account:
    (
        _seq,
        id_,
        tenant_id,
        _kind,
        _purpose,
        _shard,
        external_ref,
        currency,
        balance_floor,
        status,
        metadata,
        posted,
        pending,
        expiring,
        _last_posting_date,
        created_at,
        updated_at,
        status_reason,
        status_changed_at,
        status_changed_by_token_id,
        status_changed_by_token_name,
    ) = row
    return Account(
        id=id_,
        tenant_id=tenant_id,
        external_ref=external_ref,
        currency=currency,
        balance_floor=balance_floor,
        status=AccountStatus(status),
        metadata=load_metadata(metadata),
        posted=posted,
        pending=pending,
        created_at=from_micros(created_at),
        updated_at=from_micros(updated_at),
        expiring=expiring,
        status_reason=status_reason,
        status_changed_at=None if status_changed_at is None else from_micros(status_changed_at),
        status_changed_by=creator_of(status_changed_by_token_id, status_changed_by_token_name),
    )


# Enum members by stored value: a dict lookup costs a tenth of calling the Enum (a page of
# history reads four per row; profiled).
_DIRECTIONS = {m.value: m for m in Direction}
_KINDS = {m.value: m for m in TransactionKind}
_TX_STATUSES = {m.value: m for m in TransactionStatus}
_TX_TYPES = {m.value: m for m in TransactionType}


def transaction_of(row: Sequence[Any]) -> Transaction:
    (
        _seq,
        id_,
        tenant_id,
        account_id,
        direction,
        amount,
        currency,
        kind,
        status,
        description,
        posting_date,
        external_id,
        metadata,
        ending_balance,
        created_at,
        updated_at,
        creator_token_id,
        creator_token_name,
        type_,
        expires_at,
        counterparty_id,
        counterparty_ending_balance,
        related_id,
        refunded_amount,
        captured_amount,
    ) = row
    return Transaction(
        id=id_,
        tenant_id=tenant_id,
        account_id=account_id,
        direction=_DIRECTIONS[direction],
        amount=amount,
        currency=currency,
        kind=_KINDS[kind],
        description=description,
        posting_date=to_date(posting_date),
        external_id=external_id or "",
        metadata=load_metadata(metadata),
        status=_TX_STATUSES[status],
        ending_balance=ending_balance,
        created_at=from_micros(created_at),
        updated_at=from_micros(updated_at),
        creator=creator_of(creator_token_id, creator_token_name),
        type=_TX_TYPES[type_],
        expires_at=None if expires_at is None else from_micros(expires_at),
        counterparty_id=counterparty_id or "",
        counterparty_ending_balance=counterparty_ending_balance or 0,
        related_id=related_id or "",
        refunded_amount=refunded_amount,
        captured_amount=captured_amount,
    )


def token_of(row: Row[Any]) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        scopes=frozenset(row.scopes.split()),
        secret_hash=row.secret_hash,
        created_at=from_micros(row.created_at),
        expires_at=None if row.expires_at is None else from_micros(row.expires_at),
        revoked_at=None if row.revoked_at is None else from_micros(row.revoked_at),
    )


def status_change_of(row: Sequence[Any]) -> StatusChange:
    _seq, _account_id, previous, status, reason, changed_at, token_id, token_name = row
    return StatusChange(
        previous=None if previous is None else AccountStatus(previous),
        status=AccountStatus(status),
        reason=reason,
        changed_at=from_micros(changed_at),
        changed_by=creator_of(token_id, token_name),
    )


def account_update_params(account_id: str, u: AccountUpdate) -> dict[str, Any]:
    """An update's row, whose after-values also serve UPDATE accounts (NULL: unchanged)."""
    before, after = u.previous, u.current
    token_id, token_name = creator_columns(u.updated_by)
    return {
        "account_id": account_id,
        "previous_external_ref": before.external_ref,
        "external_ref": after.external_ref,
        "previous_balance_floor": before.balance_floor,
        "balance_floor": after.balance_floor,
        "previous_metadata": None if before.metadata is None else dump_metadata(before.metadata),
        "metadata": None if after.metadata is None else dump_metadata(after.metadata),
        "reason": u.reason,
        "updated_at": to_micros(u.updated_at),
        "token_id": token_id,
        "token_name": token_name,
    }


def account_update_of(row: Sequence[Any]) -> AccountUpdate:
    _seq, _account_id, ref_before, ref, floor_before, floor, meta_before, meta = row[:8]
    reason, updated_at, token_id, token_name = row[8:]
    return AccountUpdate(
        previous=AccountChanges(
            ref_before, floor_before, None if meta_before is None else load_metadata(meta_before)
        ),
        current=AccountChanges(ref, floor, None if meta is None else load_metadata(meta)),
        reason=reason,
        updated_at=from_micros(updated_at),
        updated_by=creator_of(token_id, token_name),
    )


def account_update_size(u: AccountUpdate) -> int:
    before, after = u.previous, u.current
    chars = len(u.reason) + len(before.external_ref or "") + len(after.external_ref or "")
    if before.metadata:  # item_bytes counts one map: the other's entries with their framing
        chars += sum(len(key) + len(value) + 2 for key, value in before.metadata.items())
    return item_bytes(after.metadata or {}, chars)
