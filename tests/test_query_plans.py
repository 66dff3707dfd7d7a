"""The hot lookups by id use the id's unique index even on tables the database has never
analyzed (a fresh deployment, a bulk import): Postgres then had no statistics and scanned
the tenant's whole (tenant_id, kind) index, filtering by id. And a tenant's open holds
are read from their partial index."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.sql
import pytest
from sqlalchemy import Engine, text

from ledger_server.core.ledger import Ledger
from ledger_server.core.model import (
    DEFAULT_TENANT,
    INT64_MAX,
    Account,
    Direction,
    NewAccount,
    NewTransaction,
    Transaction,
    TransactionFilter,
    TransactionStatus,
    TransactionType,
)
from ledger_server.store.engine import make_engine
from ledger_server.store.hot_sql import sql
from ledger_server.store.schema import accounts, metadata, transactions
from ledger_server.store.sql_store import READ_SETTINGS, SqlStore
from ledger_server.store.sql_unit import filtered_transactions
from tests.support import migrated_database

ACCOUNTS = 200


@pytest.fixture
def unanalyzed_url(database_url: str) -> Iterator[str]:
    """A freshly migrated database whose tables are never analyzed during the test."""
    if database_url.startswith("sqlite"):
        yield database_url  # a copy of the migrated template: SQLite has no statistics yet
        return
    admin_dsn = database_url.replace("+psycopg", "").rsplit("/", 1)[0] + "/postgres"
    with (
        psycopg.connect(admin_dsn, autocommit=True) as admin,
        migrated_database(admin, database_url, "ledger_plans") as url,
    ):
        engine = make_engine(url, pool_size=1)
        with engine.begin() as conn:
            for table in metadata.sorted_tables:  # no autovacuum analyze mid-test either
                conn.execute(text(f"ALTER TABLE {table.name} SET (autovacuum_enabled = off)"))
        engine.dispose()
        yield url


@pytest.fixture
def unanalyzed_store(unanalyzed_url: str) -> Iterator[SqlStore]:
    """A store on the never-analyzed database."""
    store = SqlStore(make_engine(unanalyzed_url, pool_size=2))
    yield store
    store.close()


@pytest.fixture
def filled(unanalyzed_store: SqlStore) -> tuple[Engine, Account, Transaction]:
    ledger = Ledger(unanalyzed_store)
    opened = [ledger.create_account(DEFAULT_TENANT, NewAccount(f"c{i}", "USD", 0)) for i in range(ACCOUNTS)]
    account = opened[0]
    assert isinstance(account, Account)
    txn = ledger.post_transaction(DEFAULT_TENANT, NewTransaction(account.id, Direction.CREDIT, 5, "USD"))
    assert isinstance(txn, Transaction)
    return unanalyzed_store.engine, account, txn


def _index_used(engine: Engine, statement: str, params: Any) -> str:
    """The index the database's plan for `statement` searches, as the plan names it
    (`params`: a dict by name, or on SQLite a tuple for `?` placeholders)."""
    if engine.dialect.name == "postgresql":
        return ",".join(re.findall(r'"Index Name": "(\w+)"', _postgres_plan(engine, statement, params)))
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).all()
    return ",".join(str(row[3]) for row in rows)


def _explain_into(raw: Any, plans: list[str]) -> None:
    """From now on, what auto_explain reports of each statement the psycopg connection
    `raw` runs (those inside functions it calls too, before it) goes to `plans`."""
    raw.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
    for setting in (
        "log_min_duration = 0",
        "log_analyze = on",
        "log_nested_statements = on",
        "log_level = notice",
    ):
        raw.execute(f"SET auto_explain.{setting}")
    raw.execute("LOAD 'auto_explain'")


def _plans_run(engine: Engine, statement: str, params: dict[str, Any]) -> list[str]:
    """The plans of every statement Postgres runs for `statement` (functions' bodies
    first), as auto_explain reports them."""
    plans: list[str] = []
    with engine.connect() as conn:
        _explain_into(conn.connection.driver_connection, plans)
        conn.exec_driver_sql(statement, params).all()
        conn.rollback()
    return [p for p in plans if "plan:" in p]


def _postgres_plan(engine: Engine, statement: str, params: dict[str, Any]) -> str:
    """The generic plan, as a prepared statement gets after its first executions (JSON)."""
    with engine.connect() as conn:
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", statement)))  # each once
        generic = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m[1]) + 1}", statement)
        cursor.execute(f"PREPARE q AS {generic}")
        args = ", ".join(psycopg.sql.Literal(params[n]).as_string(cursor) for n in names)
        cursor.execute(f"EXPLAIN (FORMAT JSON) EXECUTE q({args})")
        plan = json.dumps(cursor.fetchone()[0])
        cursor.execute("DEALLOCATE q")
        return plan


@pytest.mark.parametrize("name", ["get_account", "lock_by_id", "get_transaction"])
def test_lookups_by_id_use_the_id_index_without_statistics(
    filled: tuple[Engine, Account, Transaction], name: str
) -> None:
    engine, account, txn = filled
    table = "transactions" if name == "get_transaction" else "accounts"
    row_id = txn.id if name == "get_transaction" else account.id
    used = _index_used(engine, sql(engine.dialect.name, name), {"id": row_id, "tenant_id": DEFAULT_TENANT})
    if engine.dialect.name == "postgresql":
        assert used == f"uq_{table}_id"
    else:
        assert re.fullmatch(rf"SEARCH {table} USING INDEX sqlite_autoindex_{table}_1 \(id=\?\)", used)


def test_locking_many_accounts_uses_the_id_index_without_statistics(
    filled: tuple[Engine, Account, Transaction],
) -> None:
    """An atomic batch locks its accounts in one statement (lock_many_by_id). On
    Postgres, 200 accounts fit in a few pages, which it rightly scans whole: the accounts
    are made a few thousand first (copies of one, still never analyzed)."""
    engine, account, _ = filled
    postgres = engine.dialect.name == "postgresql"
    if postgres:
        columns = [c.name for c in accounts.c if c.name not in ("seq", "id")]
        listed = ", ".join(columns)
        with engine.begin() as conn:
            conn.execute(
                text(
                    f"INSERT INTO accounts (id, {listed}) SELECT gen_random_uuid()::text, {listed} "
                    "FROM accounts CROSS JOIN generate_series(1, 3000) WHERE id = :id"
                ),
                {"id": account.id},
            )
    ids = [account.id, "0193a8b0-0000-7000-8000-000000000000"]
    used = _index_used(
        engine, sql(engine.dialect.name, "lock_many_by_id"), {"ids": ids if postgres else json.dumps(ids)}
    )
    if postgres:
        assert used == "uq_accounts_id"
    else:
        assert used.startswith("SEARCH accounts USING INDEX sqlite_autoindex_accounts_1 (id=?),")


def _copies_of(engine: Engine, txn: Transaction) -> None:
    """A few thousand copies of `txn` (new ids, no external id), never analyzed."""
    with engine.begin() as conn:
        conn.exec_driver_sql(_copies("transactions", txn.id, 4000, engine.dialect.name))


def _filtered_page_index(engine: Engine, flt: TransactionFilter) -> str:
    """The index of the plan of ListTransactions' filtered page, with its parameters."""
    page = filtered_transactions(
        transactions.c.tenant_id == DEFAULT_TENANT, flt, None, 50, dt.datetime.now(dt.UTC)
    )
    compiled = page.compile(dialect=engine.dialect)  # with its parameters, as it is run
    if engine.dialect.name == "postgresql":
        return _index_used(engine, str(compiled), compiled.params)
    return _index_used(engine, str(compiled), tuple(compiled.params[n] for n in compiled.positiontup or ()))


@pytest.mark.parametrize(
    ("filters", "index", "search"),
    [
        ({"status": TransactionStatus.PENDING}, "ix_transactions_pending", "(tenant_id=?)"),
        ({"related_id": "txn"}, "ix_transactions_related", "(tenant_id=? AND related_transaction_id=?)"),
    ],
    ids=["open holds", "what points at a transaction"],
)
def test_filtered_pages_read_their_partial_index_without_statistics(
    filled: tuple[Engine, Account, Transaction], filters: dict[str, Any], index: str, search: str
) -> None:
    """ListTransactions with status PENDING (a tenant's open holds) or related_transaction
    reads its partial index, not the tenant's whole history of a few thousand postings
    (copies of one, never analyzed)."""
    engine, _, txn = filled
    _copies_of(engine, txn)
    given: dict[str, Any] = {k: txn.id if v == "txn" else v for k, v in filters.items()}
    flt = TransactionFilter(**given)
    used = _filtered_page_index(engine, flt)
    if engine.dialect.name == "postgresql":
        assert used == index
    else:
        assert used.startswith(f"SEARCH transactions USING INDEX {index} {search}")


def test_a_change_feed_page_reads_the_feed_index_without_statistics(
    filled: tuple[Engine, Account, Transaction],
) -> None:
    """A page of the change feed, from a change in the middle of a few thousand, reads
    the tenant's feed in order from that change (the feed's index) and each transaction
    by id, never the whole feed or the whole history. On Postgres the page is the
    function ledger_feed_page (migration 0009): the plans of both statements, its body's
    and the caller's, as the server runs them (the caller's a custom plan)."""
    engine, _, txn = filled
    _copies_of(engine, txn)
    params = {"tenant_id": DEFAULT_TENANT, "after": 100, "limit": 51}
    statement = sql(engine.dialect.name, "transaction_changes")
    if engine.dialect.name == "postgresql":
        plans = _plans_run(engine, statement, params)
        assert len(plans) == 2, plans  # the function's own, then the caller's: not inlined
        body, caller = plans
        assert "Index Scan using ix_transaction_changes_tenant_id_xid_seq" in body, body
        assert "(ROW(xid, seq) > ROW(" in body and "Sort" not in body and "Bitmap" not in body, body
        assert "Index Scan using uq_transactions_id" in caller and "Seq Scan" not in caller, caller
    else:
        used = _index_used(engine, statement, params)
        assert (
            "SEARCH c USING INDEX ix_transaction_changes_tenant_id_xid_seq (tenant_id=? AND xid=? AND seq>?)"
            in used
        )
        assert "SEARCH t USING INDEX sqlite_autoindex_transactions_1 (id=?)" in used
        assert "SCAN transaction_changes" not in used and "SCAN t" not in used.split(",")


def _cached_plan_after_growth(url: str, statement: str, params: dict[str, Any], grow: str) -> str:
    """Postgres: the plan `statement` runs with, prepared (as the server's connections
    prepare it) while the tables were small, after `grow` (SQL) has added thousands of
    rows: a prepared statement's generic plan is made once and kept until the tables are
    analyzed, which may be never (autovacuum off) or long after."""
    return _cached_plans_after_growth(url, {"q": statement}, {"q": params}, grow)["q"]


def _cached_plans_after_growth(
    url: str,
    statements: dict[str, str],
    params: dict[str, dict[str, Any]],
    grow: str,
    mode: str = "generic",
    *,
    settings: dict[str, str] | None = None,
) -> dict[str, str]:
    """_cached_plan_after_growth of several statements, by name: each one's plans (with
    those of the statements inside functions it calls) as one text. `mode` "custom": the
    plans Postgres makes for the parameters at each execution, after the growth.
    `settings`: the session's, as those of the server's connections that run them."""
    plans: list[str] = []
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        # Session settings (autocommit: a transaction's rollback would undo them).
        conn.execute(f"SET plan_cache_mode = force_{mode}_plan")  # generic: made at the first execution
        for setting, value in (settings or {}).items():
            conn.execute(f"SET {setting} = {value}")
        for name, statement in statements.items():
            with conn.transaction(force_rollback=True):
                conn.execute(statement, params[name], prepare=True).fetchall()
        conn.execute(grow)
        _explain_into(conn, plans)
        ran = {}
        for name, statement in statements.items():
            plans.clear()
            with conn.transaction(force_rollback=True):
                conn.execute(statement, params[name], prepare=True).fetchall()
            ran[name] = "\n".join(p for p in plans if "plan:" in p)
    return ran


def _copies(table: str, source_id: str, times: int, dialect: str = "postgresql") -> str:
    """SQL: `times` copies of one row of `table` (new ids, no external id), as its newest rows."""
    columns = ", ".join(
        c.name for c in metadata.tables[table].c if c.name not in ("seq", "id", "external_id")
    )
    new_id = "gen_random_uuid()::text" if dialect == "postgresql" else "lower(hex(randomblob(16)))"
    return (
        f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {times}) "
        f"INSERT INTO {table} (id, {columns}) SELECT {new_id}, {columns} FROM {table} CROSS JOIN n "
        f"WHERE id = '{source_id}'"
    )


def test_posting_locks_a_counter_shard_by_its_index_as_the_accounts_grow(
    unanalyzed_url: str, unanalyzed_store: SqlStore
) -> None:
    """A posting locks its account and a counter-account shard in one statement. With the
    shards ordered by random(), Postgres's generic plan made on a young accounts table
    read the tenant's whole (tenant_id, status) index for them ever after: 1,010
    accounts filtered out per posting in the benchmark, growing with the tenant."""
    engine, ledger = unanalyzed_store.engine, Ledger(unanalyzed_store)
    account = ledger.create_account(DEFAULT_TENANT, NewAccount("c", "USD", 0))
    assert isinstance(account, Account)
    ledger.post_transaction(DEFAULT_TENANT, NewTransaction(account.id, Direction.CREDIT, 5, "USD"))
    key = {"id": account.id, "tenant_id": DEFAULT_TENANT, "currency": "USD", "purpose": "issuance"}
    # From the first shard, and from the last (then wrapping).
    cases = {(name, start) for name in ("lock_with_counter", "lock_any_counter") for start in (0, 15)}
    statements = {f"{name} from {start}": sql(engine.dialect.name, name) for name, start in cases}
    params = {f"{name} from {start}": {**key, "start": start} for name, start in cases}
    if engine.dialect.name == "sqlite":
        for case, statement in statements.items():
            used = _index_used(engine, statement, params[case])
            assert used.count("USING INDEX ix_accounts_tenant_id_currency_purpose_shard") == 2, used
            assert "SCAN accounts" not in used and "TEMP B-TREE" not in used, used
        return
    grow = _copies("accounts", account.id, 1500)
    for plan in _cached_plans_after_growth(unanalyzed_url, statements, params, grow).values():
        assert "Index Scan using ix_accounts_tenant_id_currency_purpose_shard" in plan, plan
        assert "Rows Removed by Filter" not in plan and "Sort" not in plan, plan
        assert "Seq Scan" not in plan, plan


def test_an_account_history_page_reads_the_accounts_indexes_as_the_history_grows(
    unanalyzed_url: str, unanalyzed_store: SqlStore
) -> None:
    """A page of an account's history reads its own transactions and the transfers it
    received through the account's indexes, also with a plan made while the table was
    small: with the tenant in them, Postgres scanned the tenant's history backwards,
    filtering out every other account's transactions (migration 0010)."""
    engine, ledger = unanalyzed_store.engine, Ledger(unanalyzed_store)
    quiet, busy = (ledger.create_account(DEFAULT_TENANT, NewAccount(r, "USD", 0)) for r in ("quiet", "busy"))
    assert isinstance(quiet, Account) and isinstance(busy, Account)
    ledger.post_transaction(DEFAULT_TENANT, NewTransaction(quiet.id, Direction.CREDIT, 5, "USD"))
    busy_txn = ledger.post_transaction(DEFAULT_TENANT, NewTransaction(busy.id, Direction.CREDIT, 5, "USD"))
    assert isinstance(busy_txn, Transaction)
    params = {
        "account_id": quiet.id,
        "before": INT64_MAX,
        "date_from": "0001-01-01",
        "date_to": "9999-12-31",
        "direction": "credit",
        "other_direction": "debit",
        "limit": 51,
    }
    statement = sql(engine.dialect.name, "account_history")
    if engine.dialect.name == "sqlite":
        used = _index_used(engine, statement, params)
        assert "USING INDEX ix_transactions_account_id_seq (account_id=? AND seq<?)" in used, used
        assert "USING INDEX ix_transactions_counterparty (counterparty_account_id=? AND seq<?)" in used, used
        return
    # The busy account's thousands of postings are the newest, the quiet one's older.
    plan = _cached_plan_after_growth(
        unanalyzed_url, statement, params, _copies("transactions", busy_txn.id, 3000)
    )
    assert "Index Scan Backward using ix_transactions_account_id_seq" in plan, plan
    assert "Index Scan Backward using ix_transactions_counterparty" in plan, plan
    assert "Rows Removed by Filter" not in plan and "Seq Scan" not in plan, plan


@pytest.fixture
def young(unanalyzed_url: str, unanalyzed_store: SqlStore) -> tuple[Account, Account, Transaction]:
    """Postgres: a young ledger, never analyzed: accounts a and b, and on a a credit that
    expires (a lot), with an external id, and an open hold."""
    if not unanalyzed_url.startswith("postgresql"):
        pytest.skip("SQLite plans by fixed rules, whatever the tables hold")
    ledger = Ledger(unanalyzed_store)
    a, b = (ledger.create_account(DEFAULT_TENANT, NewAccount(r, "USD", 0)) for r in ("a", "b"))
    assert isinstance(a, Account) and isinstance(b, Account)
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    credit = NewTransaction(a.id, Direction.CREDIT, 50, "USD", external_id="e1", expires_at=expiry)
    txn = ledger.post_transaction(DEFAULT_TENANT, credit)
    assert isinstance(txn, Transaction)
    ledger.create_hold(DEFAULT_TENANT, NewTransaction(a.id, Direction.DEBIT, 5, "USD"))
    return a, b, txn


# The hot statements with the index each must read (Postgres), with the parameters that
# test_hot_statements_keep_their_indexes_as_the_tables_grow gives them on the young ledger.
KEPT_INDEXES = {
    "get_account": "uq_accounts_id",
    "get_transaction": "uq_transactions_id",
    "lock_by_id": "uq_accounts_id",
    "lock_many_by_id": "uq_accounts_id",
    "find_response": "pk_idempotency_keys",
    "find_responses": "pk_idempotency_keys",
    "find_external_id": "ix_transactions_tenant_id_external_id",
    "expired_holds": "ix_transactions_open_holds",
    "open_lots": "ix_lots_open",
    "lot_uses": "pk_lot_uses",
    "balance_at_time": "ix_entries_account_id_created_at_seq",
    "date_balance_before": "ix_entries_account_id_posting_date_seq",
    "transaction_changes_end": "ix_transaction_changes_tenant_id_xid_seq",
}


@pytest.mark.parametrize("mode", ["generic", "custom"])
def test_hot_statements_keep_their_indexes_as_the_tables_grow(
    unanalyzed_url: str, young: tuple[Account, Account, Transaction], mode: str
) -> None:
    """Every hot statement reads its own index after every table of a young ledger has
    grown by thousands of rows, never analyzed: in the generic plan Postgres made when
    the statement was prepared on the young tables (the server's connections prepare them
    at their first calls, and Postgres keeps that plan until the table is analyzed), and
    in a plan made for the parameters after the growth, where it estimates each of a
    list of 100 ids to match 0.5 % of the rows. The feed's clocks, too, which
    ledger_feed_place reads for a statement of several accounts (an atomic batch)."""
    a, b, txn = young
    now = dt.datetime.now(dt.UTC)
    hundred = [str(uuid.uuid4()) for _ in range(100)]  # as many ids as a batch of 100 has
    params: dict[str, dict[str, Any]] = {
        "get_account": {"id": a.id},
        "get_transaction": {"id": txn.id},
        "lock_by_id": {"id": a.id},
        "lock_many_by_id": {"ids": [a.id, b.id, *hundred[2:]]},
        "find_response": {"tenant_id": DEFAULT_TENANT, "request_id": "r1"},
        "find_responses": {"tenant_id": DEFAULT_TENANT, "ids": hundred},
        "find_external_id": {"tenant_id": DEFAULT_TENANT, "external_id": "e1"},
        "expired_holds": {"now": int(now.timestamp() * 1e6), "account_id": a.id},
        "open_lots": {"account_id": a.id},
        "lot_uses": {"transaction_id": txn.id},
        "balance_at_time": {"account_id": a.id, "at": int(now.timestamp() * 1e6)},
        "date_balance_before": {"account_id": a.id, "posting_date": now.date()},
        "transaction_changes_end": {"tenant_id": DEFAULT_TENANT},
    }
    feed_place = "SELECT ledger_feed_place(%(ids)s::varchar[])"
    statements = {name: sql("postgresql", name) for name in KEPT_INDEXES} | {"ledger_feed_place": feed_place}
    params["ledger_feed_place"] = {"ids": [a.id, b.id, *hundred[2:]]}
    grow = [
        _copies("accounts", b.id, 1500),
        _copies("transactions", txn.id, 3000),
        "INSERT INTO entries (transaction_id, account_id, amount, running_balance, created_at, posting_date, "
        f"date_balance) SELECT transaction_id, '{b.id}', amount, running_balance, created_at, posting_date, "
        f"date_balance FROM entries CROSS JOIN generate_series(1, 3000) WHERE account_id = '{a.id}'",
        "INSERT INTO idempotency_keys (tenant_id, request_id, fingerprint, response, created_at) "
        f"SELECT '{DEFAULT_TENANT}', gen_random_uuid()::text, '\\x00', '\\x00', 0 "
        "FROM generate_series(1, 3000)",
        "INSERT INTO account_feed_clocks (account_id, xid) SELECT id, 1 FROM accounts ON CONFLICT DO NOTHING",
        "INSERT INTO lots (tenant_id, account_id, transaction_id, expires_at, amount, remaining, created_at) "
        f"SELECT tenant_id, '{b.id}', transaction_id, expires_at, amount, remaining, created_at FROM lots "
        "CROSS JOIN generate_series(1, 3000)",
    ]
    plans = _cached_plans_after_growth(unanalyzed_url, statements, params, "; ".join(grow), mode)
    problems = []
    for name, plan in plans.items():
        wanted = KEPT_INDEXES.get(name, "pk_account_feed_clocks")
        removed = [int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", plan)]
        if wanted not in plan or "Seq Scan" in plan or any(n > 50 for n in removed):
            problems.append(f"{name}: {plan}")
    assert not problems, "\n\n".join(problems)


@pytest.mark.parametrize("mode", ["generic", "custom"])
def test_filtered_pages_walk_their_index_as_the_tables_grow(
    unanalyzed_url: str, unanalyzed_store: SqlStore, young: tuple[Account, Account, Transaction], mode: str
) -> None:
    """ListTransactions pages built from filters, on the reading connections (their
    READ_SETTINGS): the tenant's whole history and an account's with a type filter walk
    the `seq` index backwards and stop after the page, where Postgres took the tenant (or
    account) for a few rows and read all of theirs through a bitmap, then sorted them; an
    account's pending holds still come from their partial index."""
    a, _, txn = young
    engine = unanalyzed_store.engine
    with unanalyzed_store.reading() as r:  # the server's reads run with READ_SETTINGS
        shown = {k: r._conn.exec_driver_sql(f"SHOW {k}").scalar() for k in READ_SETTINGS}
    assert shown == READ_SETTINGS
    t = transactions.c
    now = dt.datetime.now(dt.UTC)
    pages = {
        "tenant": (t.tenant_id == DEFAULT_TENANT, TransactionFilter(), "ix_transactions_tenant_id_seq"),
        "account by type": (
            t.account_id == a.id,
            TransactionFilter(type=TransactionType.STANDARD),
            "ix_transactions_account_id_seq",
        ),
        "account's pending": (
            t.account_id == a.id,
            TransactionFilter(status=TransactionStatus.PENDING),
            "ix_transactions_open_holds",
        ),
    }
    statements, params = {}, {}
    for name, (scope, flt, _) in pages.items():
        compiled = filtered_transactions(scope, flt, None, 50, now).compile(dialect=engine.dialect)
        statements[name], params[name] = str(compiled), compiled.params
    grow = _copies("transactions", txn.id, 3000)  # the account's and the tenant's newest
    plans = _cached_plans_after_growth(unanalyzed_url, statements, params, grow, mode, settings=READ_SETTINGS)
    for name, (_, _, index) in pages.items():
        assert index in plans[name], plans[name]
        assert "Bitmap" not in plans[name] and "Seq Scan" not in plans[name], plans[name]
    for name in ("tenant", "account by type"):  # in order, without a sort
        assert "Index Scan Backward" in plans[name] and "Sort" not in plans[name], plans[name]
