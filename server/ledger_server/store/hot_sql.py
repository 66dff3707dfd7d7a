"""The statements of the posting path and of the hot reads, as SQL text rendered once
per dialect and run on the DBAPI cursor: building SQLAlchemy Core statements costs ~1 ms
per posting in Python (measured), and executing even a cached one through SQLAlchemy
costs a GetAccount three quarters of its store time (profiled), far more than the
database work itself. Kept to the plainest SQL that SQLite and Postgres share, where
`{lock}`/`{skip_locked}` become row locks on Postgres only; a few statements are each
dialect's own (_DIALECTS). Each reads through an index whatever the tables' statistics:
tests/test_query_plans.py checks them on tables that grew after the plan was made."""

from __future__ import annotations

import re
from functools import cache

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql

from ledger_server.store.schema import accounts, entries, idempotency_keys, transactions

# Whole rows, in table order: rows.account_of and rows.transaction_of read them by position.
ACCOUNT_COLUMNS = ", ".join(c.name for c in accounts.c)
TRANSACTION_COLUMNS = ", ".join(c.name for c in transactions.c)

# A change feed row: the transaction's columns, its state (and seq) as the change left it,
# and whether the change was its creation (rows.change_of).
_CHANGE_STATE = ("seq", "status", "refunded_amount", "captured_amount", "updated_at")
CHANGE_COLUMNS = ", ".join(f"{'c' if c.name in _CHANGE_STATE else 't'}.{c.name}" for c in transactions.c)

# The columns of a locked account row (ports.LockedBalance).
_LOCKED = "id, currency, balance_floor, status, posted, pending, expiring, last_posting_date, updated_at"
# The first shard from :start on that nobody holds (Postgres: SKIP LOCKED), else the first
# before it: a random start spreads the writers over the shards. Each part walks the
# (tenant_id, currency, purpose, shard) index in order, which no other index can do
# without a sort: with ORDER BY random() over the shards, Postgres's generic plan, made
# while the table was small and never analyzed, kept scanning the tenant's whole
# (tenant_id, status) index as it grew (a prepared statement's plan outlives that).
_SHARDS_FROM_AND_BEFORE_START = " UNION ALL ".join(
    f"SELECT * FROM (SELECT {_LOCKED} FROM accounts WHERE tenant_id = :tenant_id "
    f"AND currency = :currency AND purpose = :purpose AND shard {op} :start "
    f"ORDER BY shard LIMIT 1{{skip_locked}}) AS {alias}"
    for op, alias in ((">=", "from_start"), ("<", "before_start"))
)
_ANY_COUNTER = f"SELECT * FROM ({_SHARDS_FROM_AND_BEFORE_START}) AS shards LIMIT 1"
_STATEMENTS = {
    # By id alone, the row's tenant (and kind) checked by the caller: with the tenant in the
    # WHERE clause, a Postgres table not yet analyzed got a tenant-wide index scan filtered
    # by id (0.4 ms instead of 0.02 for 1,000 accounts, growing with the tenant; measured).
    "get_account": f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = :id",
    "get_transaction": f"SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE id = :id",
    # One page of an account's history, newest first: its own transactions and the
    # transfers it received, as two index range scans merged (an OR would make SQLite
    # scan the tenant's whole history). Both directions are the same one to filter by one.
    # By the account alone, as lookups by id (the caller checks the rows' tenant): with
    # the tenant too, Postgres could take any (tenant_id, ...) index (migration 0010).
    "account_history": (
        f"SELECT {TRANSACTION_COLUMNS} FROM ("
        + " UNION ALL ".join(
            f"SELECT * FROM (SELECT {TRANSACTION_COLUMNS} FROM transactions "
            f"WHERE {who} = :account_id AND seq < :before AND posting_date >= :date_from "
            "AND posting_date <= :date_to AND direction IN (:direction, :other_direction) "
            f"ORDER BY seq DESC LIMIT :limit) AS {alias}"
            for who, alias in (("account_id", "own"), ("counterparty_account_id", "peer"))
        )
        + ") AS history ORDER BY seq DESC LIMIT :limit"
    ),
    # The partial index ix_transactions_open_holds serves it.
    "expired_holds": (
        f"SELECT {TRANSACTION_COLUMNS} FROM transactions "
        "WHERE status = 'pending' AND expires_at <= :now AND account_id = :account_id"
    ),
    "find_response": (
        "SELECT fingerprint, response FROM idempotency_keys "
        "WHERE tenant_id = :tenant_id AND request_id = :request_id"
    ),
    "save_response": (
        "INSERT INTO idempotency_keys (tenant_id, request_id, fingerprint, response, created_at) "
        "VALUES (:tenant_id, :request_id, :fingerprint, :response, :created_at)"
    ),
    # By id alone, as get_account; the caller checks the tenant and kind it appends (a row it
    # refuses stays locked only until the refused unit rolls back to its savepoint).
    "lock_by_id": f"SELECT {_LOCKED}, tenant_id, kind FROM accounts WHERE id = :id{{lock}}",
    # lock_by_id and lock_any_counter in one round trip, the customer's row first (which = 0).
    "lock_with_counter": (
        f"SELECT * FROM (SELECT 0 AS which, {_LOCKED}, tenant_id, kind FROM accounts "
        f"WHERE id = :id{{lock}}) AS c UNION ALL SELECT 1, s.*, NULL, NULL FROM ({_ANY_COUNTER}) AS s"
    ),
    "lock_any_counter": _ANY_COUNTER,
    # The shard lock_any_counter starts from, waiting for it (when every shard is held).
    "lock_counter_shard": (
        f"SELECT {_LOCKED} FROM accounts "
        "WHERE tenant_id = :tenant_id AND currency = :currency AND purpose = :purpose "
        "AND shard = :start{lock}"
    ),
    "find_external_id": (
        "SELECT id FROM transactions WHERE tenant_id = :tenant_id AND external_id = :external_id"
    ),
    "insert_transaction": (
        "INSERT INTO transactions (id, tenant_id, account_id, direction, amount, currency, kind, status, "
        "description, posting_date, external_id, metadata, ending_balance, created_at, updated_at, "
        "creator_token_id, creator_token_name, type, expires_at, counterparty_account_id, "
        "counterparty_ending_balance, related_transaction_id, refunded_amount, captured_amount) "
        "VALUES (:id, :tenant_id, :account_id, :direction, :amount, "
        ":currency, :kind, :status, :description, :posting_date, :external_id, :metadata, :ending_balance, "
        ":created_at, :updated_at, :creator_token_id, :creator_token_name, :type, :expires_at, "
        ":counterparty_account_id, :counterparty_ending_balance, :related_transaction_id, 0, 0)"
    ),
    "insert_entry": (
        "INSERT INTO entries (transaction_id, account_id, amount, running_balance, created_at, "
        "posting_date, date_balance) VALUES (:transaction_id, :account_id, :amount, :running_balance, "
        ":created_at, :posting_date, :date_balance)"
    ),
    "set_balances": (
        "UPDATE accounts SET posted = :posted, pending = :pending, expiring = :expiring, "
        "last_posting_date = :last_posting_date, updated_at = :updated_at WHERE id = :id"
    ),
    # NULL leaves a detail as it is (an update changes only some).
    "update_account": (
        "UPDATE accounts SET external_ref = COALESCE(:external_ref, external_ref), "
        "balance_floor = COALESCE(:balance_floor, balance_floor), "
        "metadata = COALESCE(:metadata, metadata), updated_at = :updated_at WHERE id = :account_id"
    ),
    "insert_account_update": (
        "INSERT INTO account_updates (account_id, previous_external_ref, external_ref, "
        "previous_balance_floor, balance_floor, previous_metadata, metadata, reason, updated_at, "
        "token_id, token_name) VALUES (:account_id, :previous_external_ref, :external_ref, "
        ":previous_balance_floor, :balance_floor, :previous_metadata, :metadata, :reason, "
        ":updated_at, :token_id, :token_name)"
    ),
    "set_account_status": (
        "UPDATE accounts SET status = :status, status_reason = :reason, status_changed_at = :updated_at, "
        "status_changed_by_token_id = :token_id, status_changed_by_token_name = :token_name, "
        "updated_at = :updated_at WHERE id = :id"
    ),
    "insert_status_change": (
        "INSERT INTO account_status_changes (account_id, previous_status, status, reason, changed_at, "
        "token_id, token_name) VALUES (:account_id, :previous_status, :status, :reason, :changed_at, "
        ":token_id, :token_name)"
    ),
    "update_transaction_state": (
        "UPDATE transactions SET status = :status, refunded_amount = :refunded, "
        "captured_amount = :captured, updated_at = :updated_at WHERE id = :id"
    ),
    "date_balance_before": (
        "SELECT date_balance FROM entries WHERE account_id = :account_id AND posting_date <= :posting_date "
        "ORDER BY posting_date DESC, seq DESC LIMIT 1"
    ),
    "shift_date_balances": (
        "UPDATE entries SET date_balance = date_balance + :amount "
        "WHERE account_id = :account_id AND posting_date > :posting_date"
    ),
    "balance_at_time": (
        "SELECT running_balance FROM entries WHERE account_id = :account_id AND created_at <= :at "
        "ORDER BY created_at DESC, seq DESC LIMIT 1"
    ),
    "open_lots": (
        "SELECT seq, transaction_id, expires_at, remaining FROM lots "
        "WHERE account_id = :account_id AND remaining > 0 ORDER BY expires_at, seq"
    ),
    "insert_lot": (
        "INSERT INTO lots (tenant_id, account_id, transaction_id, expires_at, amount, remaining, created_at) "
        "VALUES (:tenant_id, :account_id, :transaction_id, :expires_at, :amount, :amount, :created_at)"
    ),
    "set_lot_remaining": "UPDATE lots SET remaining = :remaining WHERE seq = :seq",
    "add_to_lot": "UPDATE lots SET remaining = remaining + :amount WHERE seq = :seq",
    "insert_lot_use": (
        "INSERT INTO lot_uses (transaction_id, lot_seq, amount, restored) "
        "VALUES (:transaction_id, :lot_seq, :amount, 0)"
    ),
    "lot_uses": (
        "SELECT u.lot_seq, u.amount, u.restored FROM lot_uses u JOIN lots l ON l.seq = u.lot_seq "
        "WHERE u.transaction_id = :transaction_id ORDER BY l.expires_at, l.seq"
    ),
    "add_restored": (
        "UPDATE lot_uses SET restored = restored + :amount "
        "WHERE transaction_id = :transaction_id AND lot_seq = :lot_seq"
    ),
    # Customer accounts, and counter-account shards (created once, concurrently: no-op on conflict).
    "insert_account": (
        "INSERT INTO accounts (id, tenant_id, kind, purpose, shard, external_ref, currency, "
        "balance_floor, status, metadata, posted, pending, created_at, updated_at) "
        "VALUES (:id, :tenant_id, :kind, :purpose, :shard, :external_ref, :currency, :balance_floor, "
        ":status, :metadata, 0, 0, :created_at, :created_at) ON CONFLICT DO NOTHING"
    ),
}


def _each_id(columns: str, table: str, where: str, *, lock: str = "") -> tuple[str, str]:
    """The rows of `table` whose `where` holds for an id of the list parameter `ids`, the
    condition ending `= :each` (Postgres, SQLite). On Postgres one lookup per id, in the
    list's order: with `= ANY(:ids)`, it took each id for 0.5 % of the rows and read the
    whole table (or tenant) for a batch's 100, where its statistics were missing or old;
    a list of placeholders instead made its generic plan a sequential scan (1.5 s,
    measured). SQLite, whose plans do not guess, looks each value of json_each up."""
    postgres = (
        f"SELECT x.* FROM unnest(CAST(:ids AS text[])) AS each_id(id) CROSS JOIN LATERAL (SELECT {columns} "
        f"FROM {table} WHERE {where.replace(':each', 'each_id.id')} LIMIT 1{lock}) AS x"
    )
    in_list = where.replace("= :each", "IN (SELECT value FROM json_each(:ids))")
    return postgres, f"SELECT {columns} FROM {table} WHERE {in_list}"


# (Postgres, SQLite) of the statements each words its own way.
_DIALECTS = {
    # Stored responses of many requests at once (a batch's).
    "find_responses": _each_id(
        "request_id, fingerprint, response",
        "idempotency_keys",
        "tenant_id = :tenant_id AND request_id = :each",
    ),
    # Many lock_by_id in one statement (an atomic batch's accounts, a round trip each
    # before), locked in the list's order: the caller's sorted ids, so that every unit
    # locking several accounts takes them in one order and none waits for another.
    "lock_many_by_id": _each_id(f"{_LOCKED}, tenant_id, kind", "accounts", "id = :each", lock=" FOR UPDATE"),
    # The change feed after change `after` (0: from the start), in (xid, seq) order.
    # Postgres: from the function ledger_feed_page of migration 0009 (its plan does not
    # depend on table statistics, nor does this one: the LIMIT 1 keeps each transaction a
    # lookup by id, where a young table's estimates made a hash join that read every
    # transaction). SQLite: xid is always 0 (and SQLite seeks an index by a row value's
    # first column only).
    "transaction_changes": (
        f"SELECT {CHANGE_COLUMNS}, c.created FROM ledger_feed_page(:tenant_id, :after, :limit) AS c "
        "CROSS JOIN LATERAL (SELECT * FROM transactions WHERE id = c.transaction_id LIMIT 1) AS t "
        "ORDER BY c.xid, c.seq",
        f"SELECT {CHANGE_COLUMNS}, c.created FROM transaction_changes c "
        "JOIN transactions t ON t.id = c.transaction_id WHERE c.tenant_id = :tenant_id "
        "AND c.xid = 0 AND c.seq > :after ORDER BY c.xid, c.seq LIMIT :limit",
    ),
    # The feed's last change up to the horizon ledger_feed_page reads to (Postgres): a
    # change committed later is placed at or above it, so after this one. One index seek.
    "transaction_changes_end": (
        "SELECT seq FROM transaction_changes WHERE tenant_id = :tenant_id "
        "AND xid < CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS text) AS bigint) "
        "ORDER BY xid DESC, seq DESC LIMIT 1",
        "SELECT seq FROM transaction_changes WHERE tenant_id = :tenant_id AND xid = 0 "
        "ORDER BY xid DESC, seq DESC LIMIT 1",
    ),
}


@cache
def sql(dialect: str, name: str) -> str:
    """The statement `name` in the dialect's parameter style, with its row locks."""
    postgres = dialect == "postgresql"
    if name in _DIALECTS:
        text = _DIALECTS[name][0 if postgres else 1]
    else:
        text = _STATEMENTS[name].format(
            lock=" FOR UPDATE" if postgres else "", skip_locked=" FOR UPDATE SKIP LOCKED" if postgres else ""
        )
    return re.sub(r":(\w+)", r"%(\1)s", text) if postgres else text


# Postgres: a unit's buffered writes (sql_unit's _DEFERRED) as one statement, each part a
# data-modifying CTE but the last: one round trip where a posting took five (two balance
# updates and three inserts, the entries pipelined by psycopg's executemany at ~80 us of
# CPU a row). A part's rows go as VALUES, or from BULK_MIN_ROWS rows on as one array per
# column through unnest(): executemany cost 1000 entries 12.7 ms of client CPU, unnest 4.0
# (measured); below 16 rows VALUES was faster on the wall clock.
BULK_MIN_ROWS = 16
_TABLES = {
    "insert_transaction": transactions,
    "insert_entry": entries,
    "save_response": idempotency_keys,
    "set_balances": accounts,
}

# The part of a statement: its name, the keys of its rows, and how many rows it has.
Part = tuple[str, tuple[str, ...], int]


@cache
def writes_sql(parts: tuple[Part, ...]) -> str:
    """Postgres: `parts` in one statement, with numbered placeholders ($1...) for a
    psycopg RawCursor, in write_params' order. psycopg parses the placeholders of a query
    with more than 50 parameters again at every execution (a posting's writes have 53):
    ~300 us of CPU a posting (measured in process); a raw query is sent as it is."""
    statements = []
    first = 1
    for part in parts:
        statement, first = _part_sql(*part, first=first)
        statements.append(statement)
    ctes = ", ".join(f"w{i} AS ({statement})" for i, statement in enumerate(statements[:-1]))
    return f"WITH {ctes} {statements[-1]}" if ctes else statements[-1]


def write_params(parts: tuple[Part, ...], rows_of_parts: list[list[dict[str, object]]]) -> list[object]:
    """The parameters of writes_sql(parts), in order: per part, one list per key (from
    BULK_MIN_ROWS rows on) or each row's values."""
    params: list[object] = []
    for (_, keys, count), rows in zip(parts, rows_of_parts, strict=True):
        if count >= BULK_MIN_ROWS:
            params.extend([row[k] for row in rows] for k in keys)
        else:
            for row in rows:
                params.extend(row[k] for k in keys)
    return params


def _part_sql(name: str, keys: tuple[str, ...], count: int, *, first: int) -> tuple[str, int]:
    """A part's statement, its placeholders numbered from `first`; and the next number."""
    table = _TABLES[name]
    types = [_type(table, k) for k in keys]
    if count >= BULK_MIN_ROWS:
        arrays = ", ".join(f"${first + n}::{t}[]" for n, t in enumerate(types))
        source, first = f"SELECT * FROM unnest({arrays})", first + len(keys)
    else:
        rows = []
        for _ in range(count):
            rows.append("(" + ", ".join(f"${first + n}::{t}" for n, t in enumerate(types)) + ")")
            first += len(keys)
        source = "VALUES " + ", ".join(rows)
    if name == "set_balances":  # an update by id
        assigned = ", ".join(f"{k} = v.{k}" for k in keys if k != "id")
        values = f"({source}) AS v({', '.join(keys)})"
        return f"UPDATE {table.name} SET {assigned} FROM {values} WHERE {table.name}.id = v.id", first
    return f"INSERT INTO {table.name} ({', '.join(keys)}) {source}", first


_POSTGRES = postgresql.dialect()  # type: ignore[no-untyped-call]


def _type(table: Table, column: str) -> str:
    return str(table.c[column].type.compile(dialect=_POSTGRES))
