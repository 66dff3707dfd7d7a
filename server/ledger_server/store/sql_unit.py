"""A unit of work: one database transaction, through which the core reads and writes
(core/ports.py). The hot path's statements (hot_sql.py) run on the DBAPI cursor itself, and
writes that nothing reads back are buffered and sent together (_DEFERRED)."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, Table, and_, literal_column, or_, select
from sqlalchemy import exc as sa_exc

from ledger_server.call_greenlet import blocking
from ledger_server.core.errors import StoreUnavailable
from ledger_server.core.ids import new_id
from ledger_server.core.model import (
    INT64_MAX,
    INT64_MIN,
    Account,
    AccountStatus,
    AccountUpdate,
    Direction,
    Entry,
    Lot,
    LotUse,
    NewAccount,
    Page,
    StatusChange,
    Transaction,
    TransactionChange,
    TransactionFilter,
    TransactionStatus,
    TransactionType,
)
from ledger_server.core.ports import LockedBalance, NewBalances, StoredResponse
from ledger_server.store.admin_sql import AdminQueries
from ledger_server.store.failures import bounds_sql
from ledger_server.store.hot_sql import sql, write_params, writes_sql
from ledger_server.store.rows import (
    CUSTOMER,
    SYSTEM,
    account_of,
    account_size,
    account_update_of,
    account_update_params,
    account_update_size,
    change_of,
    change_size,
    creator_columns,
    customer_of,
    dump_metadata,
    from_micros,
    page_of,
    status_change_of,
    status_change_size,
    to_date,
    to_micros,
    transaction_of,
    transaction_size,
)
from ledger_server.store.schema import account_status_changes, account_updates, accounts, transactions

# Writes that a unit never reads back but through find_response (which looks at them
# first) and the account locks (which flush them first): buffered, and sent at the end of
# the unit or before any statement not known to leave them alone. On SQLite one
# executemany per statement, in this (foreign key) order; on Postgres all in one statement
# (hot_sql.writes_sql). A batch's rows then take one statement, not one per row.
_DEFERRED = ("insert_transaction", "insert_entry", "save_response", "set_balances")
_BESIDE_DEFERRED = frozenset(
    {
        "find_response",
        "find_responses",
        "find_external_id",  # and the buffered rows' external ids (SqlUnit._external_ids)
        "lock_by_id",
        "lock_many_by_id",
        "lock_with_counter",
        "lock_any_counter",
        "lock_counter_shard",
        "insert_account",
    }
)
# Of those, the ones that read what a buffered set_balances changes.
_READS_BALANCES = frozenset(
    {"lock_by_id", "lock_many_by_id", "lock_with_counter", "lock_any_counter", "lock_counter_shard"}
)


class SqlUnit(AdminQueries):
    """One database transaction; implements both ReadUnit and WriteUnit."""

    def __init__(
        self, conn: Connection, counter_shards: int, *, begins: bool = False, offload: bool = False
    ) -> None:
        """`begins`: `conn` is in autocommit (Postgres), and the unit opens its transaction
        itself, in its first statement's round trip; the connection's commit() (psycopg:
        COMMIT whenever a transaction is open) ends it. `offload`: the unit runs on the
        event loop, and each statement in a worker thread (SqlStore.reading)."""
        self._conn = conn
        self._begin = begins
        self._offload = offload
        self._shards = counter_shards
        self._dialect = conn.dialect.name
        self._dbapi: Any = conn.dialect.dbapi
        self._cursor: Any = None
        self._raw_cursor: Any = None  # Postgres: for the writes statement (see _execute)
        # (tenant, currency, purpose) -> the counter shard this transaction has locked.
        self._counters: dict[tuple[str, str, str], str] = {}
        self._counters_at_savepoint: dict[tuple[str, str, str], str] = {}
        self._deferred: dict[str, list[dict[str, Any]]] = {}  # statement -> rows (_DEFERRED)
        # (tenant, request_id) -> its stored response (None: none) as this transaction
        # knows it: prefetched, or saved by a unit not rolled back since.
        self._responses: dict[tuple[str, str], StoredResponse | None] = {}
        # (tenant, external_id) -> the id of a buffered transaction (find_external_id
        # looks here, not at the table, which would need the buffer flushed first).
        self._external_ids: dict[tuple[str, str], str] = {}

    # -- reads ------------------------------------------------------------------------

    def get_account(self, tenant_id: str, account_id: str) -> Account | None:
        row = self._run("get_account", {"id": account_id}).fetchone()
        return account_of(row) if customer_of(tenant_id, row, tenant_at=2, kind_at=3) else None

    def list_accounts(
        self, tenant_id: str, external_ref: str, status: AccountStatus | None, after: int | None, limit: int
    ) -> Page[Account]:
        q = select(accounts).where(accounts.c.tenant_id == tenant_id, accounts.c.kind == CUSTOMER)
        if external_ref:
            q = q.where(accounts.c.external_ref == external_ref)
        if status is not None:
            q = q.where(accounts.c.status == status.value)
        if after is not None:
            q = q.where(accounts.c.seq > after)
        rows = self._query(q.order_by(accounts.c.seq).limit(limit + 1)).all()
        return page_of(rows, limit, account_of, account_size)

    def list_status_changes(self, account_id: str, before: int | None, limit: int) -> Page[StatusChange]:
        page = self._history(account_status_changes, account_id, before, limit)
        return page_of(page, limit, status_change_of, status_change_size)

    def list_account_updates(self, account_id: str, before: int | None, limit: int) -> Page[AccountUpdate]:
        page = self._history(account_updates, account_id, before, limit)
        return page_of(page, limit, account_update_of, account_update_size)

    def _history(self, table: Table, account_id: str, before: int | None, limit: int) -> Sequence[Any]:
        """The rows of one of an account's histories, newest first (one more than a page)."""
        c = table.c
        q = select(table).where(c.account_id == account_id)
        if before is not None:
            q = q.where(c.seq < before)
        return self._query(q.order_by(c.seq.desc()).limit(limit + 1)).all()

    def get_transaction(self, tenant_id: str, transaction_id: str) -> Transaction | None:
        row = self._run("get_transaction", {"id": transaction_id}).fetchone()
        return transaction_of(row) if row is not None and row[2] == tenant_id else None

    def list_transactions(
        self, tenant_id: str, flt: TransactionFilter, before: int | None, limit: int, now: dt.datetime
    ) -> Page[Transaction]:
        t = transactions.c
        prebuilt = flt.type is None and flt.status is None and not (flt.external_id or flt.related_id)
        if flt.account_id and prebuilt:
            direction, other = (flt.direction, flt.direction) if flt.direction else tuple(Direction)
            params = {
                "account_id": flt.account_id,
                "before": INT64_MAX if before is None else before,
                "date_from": self._date_param(flt.date_from or dt.date.min),
                "date_to": self._date_param(flt.date_to or dt.date.max),
                "direction": direction.value,
                "other_direction": other.value,
                "limit": limit + 1,
            }
            rows = self._run("account_history", params).fetchall()
            return page_of(_of_tenant(tenant_id, rows), limit, transaction_of, transaction_size)
        if not flt.account_id:
            rows = self._query(filtered_transactions(t.tenant_id == tenant_id, flt, before, limit, now)).all()
        else:  # an account's own, and the transfers it received: two index ranges, merged
            own = filtered_transactions(t.account_id == flt.account_id, flt, before, limit, now)
            rows = self._query(own).all()
            if flt.type in (None, TransactionType.TRANSFER):  # only transfers have a counterparty
                received = filtered_transactions(
                    t.counterparty_account_id == flt.account_id, flt, before, limit, now
                )
                rows = sorted([*rows, *self._query(received).all()], key=lambda row: -row[0])[: limit + 1]
            rows = _of_tenant(tenant_id, rows)
        return page_of(rows, limit, transaction_of, transaction_size)

    def list_transaction_changes(self, tenant_id: str, after: int, limit: int) -> Page[TransactionChange]:
        params = {"tenant_id": tenant_id, "after": after, "limit": limit + 1}
        rows = self._run("transaction_changes", params).fetchall()
        return page_of(rows, limit, change_of, change_size)

    def transaction_changes_end(self, tenant_id: str) -> int:
        row = self._run("transaction_changes_end", {"tenant_id": tenant_id}).fetchone()
        return 0 if row is None else int(row[0])

    def open_lots(self, account_id: str) -> list[Lot]:
        rows = self._run("open_lots", {"account_id": account_id}).fetchall()
        return [Lot(seq, txn_id, from_micros(at), remaining) for seq, txn_id, at, remaining in rows]

    def expired_holds(self, account_id: str, now: dt.datetime) -> list[Transaction]:
        rows = self._run("expired_holds", {"now": to_micros(now), "account_id": account_id}).fetchall()
        return [transaction_of(row) for row in rows]

    def balance_at_time(self, account_id: str, at: dt.datetime) -> int:
        row = self._run("balance_at_time", {"account_id": account_id, "at": to_micros(at)}).fetchone()
        return 0 if row is None else int(row[0])

    def balance_at_date(self, account_id: str, date: dt.date) -> int:
        return self.date_balance_before(account_id, date)

    # -- group commit hooks (see group_commit.py) ----------------------------------------

    # On Postgres the timeouts ride along in the same round trip (no parameters: psycopg
    # sends the statements as one simple query). SET LOCAL inside a savepoint outlives its
    # release, hence the reset to the caps there; a rollback to it undoes it by itself.

    def savepoint(self, deadline: float | None = None) -> None:
        self._counters_at_savepoint = dict(self._counters)
        self._execute("SAVEPOINT unit" + self._bounds(deadline))

    def bound(self, deadline: float | None) -> None:
        """Bound the rest of the transaction by `deadline` (Postgres; a unit without a
        savepoint: see group_commit._Writer._alone)."""
        if self._dialect == "postgresql":
            self._execute(bounds_sql(deadline))

    def rollback_to_savepoint(self) -> None:
        """The rollback also releases the row locks taken since the savepoint: a counter
        shard locked then is forgotten, or a later unit would re-lock it by id, waiting
        for whichever writer took it meanwhile instead of taking a free one."""
        self.forget_unit()
        self._counters = self._counters_at_savepoint
        self._execute("ROLLBACK TO SAVEPOINT unit")

    def forget_unit(self) -> None:
        """Drop what a refused unit buffered (what it wrote is its savepoint's to undo)."""
        self._deferred = {}
        self._responses.clear()
        self._external_ids.clear()

    def change_count(self) -> int | None:
        """Rows this transaction's connection has changed so far, where a unit that
        changed none can be refused without a savepoint (SQLite). None on Postgres: there
        any failed statement aborts the transaction, so every unit runs in a savepoint.
        Raises if SQLite ended the transaction by itself (it rolls back on some I/O
        errors): then nothing of the batch may be acknowledged."""
        if self._dialect != "sqlite":
            return None
        raw: Any = self._conn.connection.driver_connection
        if not raw.in_transaction:
            raise StoreUnavailable("the SQLite transaction ended before its commit")
        return int(raw.total_changes)

    def flush(self) -> None:
        """Send the buffered writes (_DEFERRED): at the end of each unit, in its savepoint."""
        deferred, self._deferred = self._deferred, {}
        self._external_ids.clear()
        present = [(name, deferred[name]) for name in _DEFERRED if deferred.get(name)]
        if not present:
            return
        if self._dialect == "postgresql":
            parts = tuple((name, tuple(rows[0]), len(rows)) for name, rows in present)
            params = write_params(parts, [rows for _, rows in present])
            self._execute(writes_sql(parts), params, raw=True)
            return
        for name, rows in present:
            self._execute(sql(self._dialect, name), rows)

    def release_savepoint(self) -> None:
        self._execute("RELEASE SAVEPOINT unit" + self._bounds(None))

    def _bounds(self, deadline: float | None) -> str:
        return "; " + bounds_sql(deadline) if self._dialect == "postgresql" else ""

    # -- statements -------------------------------------------------------------------

    def _run(self, name: str, params: dict[str, Any] | list[dict[str, Any]]) -> Any:
        if name in _DEFERRED:
            rows = self._deferred.setdefault(name, [])
            if isinstance(params, list):
                rows.extend(params)
            else:
                rows.append(params)
            return None
        if self._deferred and (
            name not in _BESIDE_DEFERRED or (name in _READS_BALANCES and "set_balances" in self._deferred)
        ):
            self.flush()
        return self._execute(sql(self._dialect, name), params)

    def _execute(
        self,
        statement: str,
        params: dict[str, Any] | list[dict[str, Any]] | list[Any] | None = None,
        *,
        raw: bool = False,
    ) -> Any:
        """Run a statement on the DBAPI cursor itself: SQLAlchemy's per-execution
        bookkeeping costs more CPU than the SQL (profiled). `raw`: on a psycopg RawCursor
        (numbered placeholders, `params` a list of values; see hot_sql.writes_sql). Errors
        are wrapped as SQLAlchemy's own, so that translate() treats them alike, and a lost
        connection is handled as SQLAlchemy would (_lost)."""
        if self._cursor is None:
            self._cursor = self._conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        if self._begin:
            self._begin = False
            if params is None:  # a simple query: several statements in one round trip
                statement = "BEGIN; " + statement
            else:
                self._execute("BEGIN")
        cursor = self._cursor
        if raw:
            if self._raw_cursor is None:
                self._raw_cursor = self._dbapi.RawCursor(self._cursor.connection)
            cursor = self._raw_cursor
        try:
            if self._offload:
                blocking(lambda: _send(cursor, statement, params, raw))
            else:
                _send(cursor, statement, params, raw)
        except self._dbapi.Error as exc:
            lost = self._conn.dialect.is_disconnect(exc, cursor.connection, cursor)
            if lost:
                self._lost(exc)
            raise sa_exc.DBAPIError.instance(
                statement, params, exc, self._dbapi.Error, connection_invalidated=lost
            ) from exc
        return cursor

    def _lost(self, exc: BaseException) -> None:
        """The database dropped this connection (a restart, say), and likely every other
        one of its pool: discard this one and replace the pool, so that the next call
        connects afresh rather than failing on another dead connection (no pre-ping)."""
        self._conn.invalidate(exc)
        self._conn.engine.dispose(close=False)

    # -- writes -----------------------------------------------------------------------

    def find_response(self, tenant_id: str, request_id: str) -> StoredResponse | None:
        key = (tenant_id, request_id)
        if key in self._responses:
            return self._responses[key]
        row = self._run("find_response", {"tenant_id": tenant_id, "request_id": request_id}).fetchone()
        return None if row is None else StoredResponse(bytes(row[0]), bytes(row[1]))

    def prefetch_responses(self, tenant_id: str, request_ids: Sequence[str]) -> None:
        """One query instead of one per find_response (a round trip each on Postgres)."""
        wanted = list(dict.fromkeys(request_ids))
        where = {"tenant_id": tenant_id, "ids": self._ids_param(wanted)}
        rows = self._run("find_responses", where).fetchall()
        found = {
            rid: StoredResponse(bytes(fingerprint), bytes(response)) for rid, fingerprint, response in rows
        }
        self._responses.update({(tenant_id, rid): found.get(rid) for rid in wanted})

    def save_response(
        self, tenant_id: str, request_id: str, fingerprint: bytes, response: bytes, now: dt.datetime
    ) -> None:
        self._responses[(tenant_id, request_id)] = StoredResponse(fingerprint, response)
        self._run(
            "save_response",
            {
                "tenant_id": tenant_id,
                "request_id": request_id,
                "fingerprint": fingerprint,
                "response": response,
                "created_at": to_micros(now),
            },
        )

    def insert_account(self, tenant_id: str, account_id: str, new: NewAccount, now: dt.datetime) -> Account:
        self._run(
            "insert_account",
            {
                "id": account_id,
                "tenant_id": tenant_id,
                "kind": CUSTOMER,
                "purpose": None,
                "shard": None,
                "external_ref": new.external_ref,
                "currency": new.currency,
                "balance_floor": new.balance_floor,
                "status": AccountStatus.ACTIVE.value,
                "metadata": dump_metadata(new.metadata),
                "created_at": to_micros(now),
            },
        )
        return Account(
            id=account_id,
            tenant_id=tenant_id,
            external_ref=new.external_ref,
            currency=new.currency,
            balance_floor=new.balance_floor,
            status=AccountStatus.ACTIVE,
            metadata=dict(new.metadata),
            posted=0,
            pending=0,
            created_at=now,
            updated_at=now,
        )

    def lock_customer_account(self, tenant_id: str, account_id: str) -> LockedBalance | None:
        row = self._run("lock_by_id", {"id": account_id}).fetchone()
        return self._locked_customer(tenant_id, row)

    def lock_customer_accounts(self, tenant_id: str, account_ids: Sequence[str]) -> dict[str, LockedBalance]:
        in_order = sorted(set(account_ids))  # locked in this order (hot_sql's lock_many_by_id)
        rows = self._run("lock_many_by_id", {"ids": self._ids_param(in_order)}).fetchall()
        return {locked.id: locked for row in rows if (locked := self._locked_customer(tenant_id, row))}

    def _ids_param(self, ids: list[str]) -> Any:
        """A list parameter `ids` (hot_sql._each_id): an array on Postgres, JSON on SQLite."""
        return ids if self._dialect == "postgresql" else json.dumps(ids)

    def lock_customer_and_counter(
        self, tenant_id: str, account_id: str, currency: str, purpose: str
    ) -> tuple[LockedBalance | None, LockedBalance | None]:
        key = (tenant_id, currency, purpose)
        if key in self._counters:  # the shard this transaction uses: lock_counter_account
            return self.lock_customer_account(tenant_id, account_id), None
        where = {"id": account_id, **self._counter_key(tenant_id, currency, purpose)}
        customer = shard = None
        for which, *row in self._run("lock_with_counter", where).fetchall():
            if which == 0:
                customer = self._locked_customer(tenant_id, row)
            else:
                self._counters[key] = row[0]
                shard = self._locked(row)
        return customer, shard

    def lock_counter_account(
        self, tenant_id: str, currency: str, purpose: str, now: dt.datetime
    ) -> LockedBalance:
        key = (tenant_id, currency, purpose)
        held = self._counters.get(key)
        if held is not None:  # the shard this transaction already uses: re-lock it by id
            return self._locked(_one(self._run("lock_by_id", {"id": held})))
        where = self._counter_key(tenant_id, currency, purpose)
        # Any shard nobody holds right now (Postgres; SQLite has one writer anyway).
        row = self._run("lock_any_counter", where).fetchone()
        if row is None:
            # None exist yet, or all are busy: make sure they exist, then queue on one.
            self._create_counter_shards(tenant_id, currency, purpose, to_micros(now))
            row = _one(self._run("lock_counter_shard", where))
        self._counters[key] = row[0]
        return self._locked(row)

    def _counter_key(self, tenant_id: str, currency: str, purpose: str) -> dict[str, Any]:
        """The parameters that pick a counter-account shard, from a random one on."""
        start = random.randrange(self._shards)
        return {"tenant_id": tenant_id, "currency": currency, "purpose": purpose, "start": start}

    def _locked_customer(self, tenant_id: str, row: Any) -> LockedBalance | None:
        """A lock_by_id row (tenant and kind after the locked columns), if a customer's."""
        return self._locked(row) if customer_of(tenant_id, row, tenant_at=9, kind_at=10) else None

    def _locked(self, row: Any) -> LockedBalance:
        id_, currency, floor, status, posted, pending, expiring, last_date, updated = row[:9]
        return LockedBalance(
            id_,
            currency,
            floor,
            status,
            posted,
            pending,
            expiring,
            to_date(last_date),
            from_micros(updated),
        )

    def _date_param(self, value: dt.date | None) -> Any:
        return value.isoformat() if value is not None and self._dialect == "sqlite" else value

    def _create_counter_shards(self, tenant_id: str, currency: str, purpose: str, us: int) -> None:
        self._run(
            "insert_account",
            [
                {
                    "id": new_id(),
                    "tenant_id": tenant_id,
                    "kind": SYSTEM,
                    "purpose": purpose,
                    "shard": shard,
                    "external_ref": "",
                    "currency": currency,
                    "balance_floor": INT64_MIN,
                    "status": AccountStatus.ACTIVE.value,
                    "metadata": "{}",
                    "created_at": us,
                }
                for shard in range(self._shards)
            ],
        )

    def find_transaction_id_by_external_id(self, tenant_id: str, external_id: str) -> str | None:
        buffered = self._external_ids.get((tenant_id, external_id))
        if buffered is not None:
            return buffered
        row = self._run("find_external_id", {"tenant_id": tenant_id, "external_id": external_id}).fetchone()
        return None if row is None else str(row[0])

    def insert_transaction(self, txn: Transaction, legs: list[Entry]) -> None:
        created = to_micros(txn.created_at)
        token_id, token_name = creator_columns(txn.creator)
        if txn.external_id:
            self._external_ids[(txn.tenant_id, txn.external_id)] = txn.id
        self._run(
            "insert_transaction",
            {
                "id": txn.id,
                "tenant_id": txn.tenant_id,
                "account_id": txn.account_id,
                "direction": txn.direction.value,
                "amount": txn.amount,
                "currency": txn.currency,
                "kind": txn.kind.value,
                "status": txn.status.value,
                "description": txn.description,
                # SQLAlchemy's Date stores ISO text on SQLite: write what it reads back.
                "posting_date": self._date_param(txn.posting_date),
                "external_id": txn.external_id or None,
                "metadata": dump_metadata(txn.metadata),
                "ending_balance": txn.ending_balance,
                "created_at": created,
                "updated_at": to_micros(txn.updated_at),
                "creator_token_id": token_id,
                "creator_token_name": token_name,
                "type": txn.type.value,
                "expires_at": None if txn.expires_at is None else to_micros(txn.expires_at),
                "counterparty_account_id": txn.counterparty_id or None,
                "counterparty_ending_balance": txn.counterparty_ending_balance
                if txn.counterparty_id
                else None,
                "related_transaction_id": txn.related_id or None,
            },
        )
        if legs:
            self._run(
                "insert_entry",
                [
                    {
                        "transaction_id": txn.id,
                        "account_id": e.account_id,
                        "amount": e.amount,
                        "running_balance": e.running_balance,
                        "created_at": created,
                        "posting_date": self._date_param(e.posting_date),
                        "date_balance": e.date_balance,
                    }
                    for e in legs
                ],
            )

    def update_transaction_state(
        self,
        transaction_id: str,
        status: TransactionStatus,
        *,
        refunded: int,
        captured: int,
        now: dt.datetime,
    ) -> None:
        self._run(
            "update_transaction_state",
            {
                "status": status.value,
                "refunded": refunded,
                "captured": captured,
                "updated_at": to_micros(now),
                "id": transaction_id,
            },
        )

    def date_balance_before(self, account_id: str, date: dt.date) -> int:
        params = {"account_id": account_id, "posting_date": self._date_param(date)}
        row = self._run("date_balance_before", params).fetchone()
        return 0 if row is None else int(row[0])

    def shift_date_balances(self, account_id: str, after: dt.date, amount: int) -> None:
        params = {"account_id": account_id, "posting_date": self._date_param(after), "amount": amount}
        self._run("shift_date_balances", params)

    def insert_lots(
        self,
        tenant_id: str,
        account_id: str,
        transaction_id: str,
        lots: Sequence[tuple[dt.datetime, int]],
        now: dt.datetime,
    ) -> None:
        self._run(
            "insert_lot",
            [
                {
                    "tenant_id": tenant_id,
                    "account_id": account_id,
                    "transaction_id": transaction_id,
                    "expires_at": to_micros(expires_at),
                    "amount": amount,
                    "created_at": to_micros(now),
                }
                for expires_at, amount in lots
            ],
        )

    def set_lot_remainders(self, remainders: Sequence[tuple[int, int]]) -> None:
        self._run("set_lot_remaining", [{"seq": seq, "remaining": r} for seq, r in remainders])

    def add_to_lots(self, amounts: Sequence[tuple[int, int]]) -> None:
        self._run("add_to_lot", [{"seq": seq, "amount": amount} for seq, amount in amounts])

    def insert_lot_uses(self, transaction_id: str, uses: Sequence[LotUse]) -> None:
        self._run(
            "insert_lot_use",
            [{"transaction_id": transaction_id, "lot_seq": u.lot_seq, "amount": u.amount} for u in uses],
        )

    def lot_uses(self, transaction_id: str) -> list[LotUse]:
        rows = self._run("lot_uses", {"transaction_id": transaction_id}).fetchall()
        return [LotUse(*row) for row in rows]

    def add_restored(self, transaction_id: str, amounts: Sequence[tuple[int, int]]) -> None:
        self._run(
            "add_restored",
            [{"transaction_id": transaction_id, "lot_seq": seq, "amount": amount} for seq, amount in amounts],
        )

    def set_account_status(self, account_id: str, change: StatusChange) -> None:
        token_id, token_name = creator_columns(change.changed_by)
        params = {
            "status": change.status.value,
            "reason": change.reason,
            "token_id": token_id,
            "token_name": token_name,
            "updated_at": to_micros(change.changed_at),
            "id": account_id,
        }
        self._run("set_account_status", params)
        params = {
            "account_id": account_id,
            "previous_status": change.previous.value if change.previous else None,
            "status": change.status.value,
            "reason": change.reason,
            "changed_at": params["updated_at"],
            "token_id": token_id,
            "token_name": token_name,
        }
        self._run("insert_status_change", params)

    def update_account(self, account_id: str, update: AccountUpdate) -> None:
        params = account_update_params(account_id, update)
        self._run("update_account", params)
        self._run("insert_account_update", params)

    def set_balances(self, balances: Sequence[NewBalances], now: dt.datetime) -> None:
        rows = [
            {
                "posted": b.posted,
                "pending": b.pending,
                "expiring": b.expiring,
                "last_posting_date": self._date_param(b.last_posting_date),
                "updated_at": to_micros(now),
                "id": b.id,
            }
            for b in balances
        ]
        self._run("set_balances", rows)


def _send(cursor: Any, statement: str, params: Any, raw: bool) -> None:
    if params is None:
        cursor.execute(statement)
    elif raw or not isinstance(params, list):
        cursor.execute(statement, params)
    elif len(params) == 1:  # executemany costs psycopg a pipeline
        cursor.execute(statement, params[0])
    else:
        cursor.executemany(statement, params)


def _one(cursor: Any) -> Any:
    row = cursor.fetchone()
    if row is None:
        raise LookupError("expected a row")
    return row


def status_as_of(status: TransactionStatus, now: int) -> ColumnElement[bool]:
    """Transactions in `status` as views.transaction_now shows them at `now` (microseconds):
    a hold still stored as pending is voided once its expiry time has passed."""
    t = transactions.c
    # A literal, not a parameter: Postgres's generic plan of a prepared statement uses the
    # partial index ix_transactions_pending only where its text says status = 'pending'.
    pending: ColumnElement[str] = literal_column("'pending'")
    hold = TransactionType.HOLD.value
    if status is TransactionStatus.PENDING:
        return and_(t.status == pending, or_(t.type != hold, t.expires_at.is_(None), t.expires_at > now))
    if status is TransactionStatus.VOIDED:
        return or_(
            t.status == status.value,
            and_(t.status == pending, t.type == hold, t.expires_at <= now),
        )
    stored: ColumnElement[bool] = t.status == status.value  # settled: as stored
    return stored


def _of_tenant(tenant_id: str, rows: Sequence[Any]) -> Sequence[Any]:
    """Of rows read by account alone, those of `tenant_id`: none where the account is
    another tenant's (a caller may name any id)."""
    return [row for row in rows if row[2] == tenant_id]


def filtered_transactions(
    scope: ColumnElement[bool], flt: TransactionFilter, before: int | None, limit: int, now: dt.datetime
) -> Select[Any]:
    """A ListTransactions page (one row more) for filters the prebuilt account history does
    not take, of the tenant's transactions or (`scope`) of an account's own or of those it
    received: found by the account alone, as account_history (hot_sql)."""
    t = transactions.c
    q = select(transactions).where(scope)
    if flt.date_from:
        q = q.where(t.posting_date >= flt.date_from)
    if flt.date_to:
        q = q.where(t.posting_date <= flt.date_to)
    if flt.direction:
        q = q.where(t.direction == flt.direction.value)
    if flt.type:
        q = q.where(t.type == flt.type.value)
    if flt.status:
        q = q.where(status_as_of(flt.status, to_micros(now)))
    if before is not None:
        q = q.where(t.seq < before)
    if flt.related_id:  # a few rows at most: the partial index ix_transactions_related
        q = q.where(t.related_transaction_id == flt.related_id)
    if flt.external_id:  # unique per tenant: its index finds the one row, if any
        q = q.where(t.external_id == flt.external_id)
    return q.order_by(t.seq.desc()).limit(limit + 1)
