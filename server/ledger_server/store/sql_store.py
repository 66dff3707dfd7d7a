"""The store: SQL for the core's ports, with database failures translated into the
core's retryable outcomes (WriteConflict: re-run the unit; StoreUnavailable: tell the
caller to retry; DeadlineExceeded: the call's deadline ran out first).

On Postgres each unit's statements and lock waits are bounded by its call's deadline
(core/deadline.py): reads (in autocommit) by their connection's `statement_timeout`
and `lock_timeout`, set to the deadline rounded up to a step; group-committed writes
set them inside each unit's savepoint, and reset them to the caps when it is released,
so that one unit's short deadline never cuts a later unit or the shared commit."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, TypeVarTuple

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Row,
    func,
    insert,
    select,
    text,
    union,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql.selectable import TypedReturnsRows

from ledger_server.call_greenlet import await_, blocking, in_call_greenlet
from ledger_server.core.deadline import current_deadline, remaining
from ledger_server.core.errors import DeadlineExceeded, StoreUnavailable, WriteConflict
from ledger_server.core.ids import new_id
from ledger_server.core.model import (
    INT64_MAX,
    INT64_MIN,
    Account,
    AccountStatus,
    Creator,
    Direction,
    Entry,
    Lot,
    LotUse,
    NewAccount,
    Page,
    Tenant,
    TokenRecord,
    Transaction,
    TransactionFilter,
    TransactionKind,
    TransactionStatus,
    TransactionType,
)
from ledger_server.core.paging import ITEM_BYTES, MAX_PAGE_BYTES, item_bytes
from ledger_server.core.ports import AccountAudit, BrokenLink, LockedBalance, NewBalances, StoredResponse
from ledger_server.store.engine import WRITE, make_engine
from ledger_server.store.group_commit import GroupCommitter
from ledger_server.store.hot_sql import sql, write_params, writes_sql
from ledger_server.store.schema import (
    accounts,
    api_tokens,
    entries,
    lots,
    settings,
    tenants,
    transactions,
)

T = TypeVar("T")
_Ts = TypeVarTuple("_Ts")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Postgres SQLSTATEs after which re-running the whole unit is the right answer.
RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected
# statement_timeout (query_canceled) and lock_timeout (lock_not_available) fired.
TIMEOUT_SQLSTATES = {"57014", "55P03"}
# Bounds of one statement and of one lock wait, in seconds: the call's remaining time,
# but at least MIN_DB_TIMEOUT (0 would mean no limit to Postgres) and at most the caps,
# which also bound calls without a deadline: a row lock held elsewhere cannot hold a
# writer's whole batch for longer than MAX_LOCK_WAIT.
MIN_DB_TIMEOUT = 0.05
MAX_LOCK_WAIT = 5.0
MAX_STATEMENT = 30.0
READ_BOUNDS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)  # seconds; beyond: the caps
# Postgres: the reads of the event loop's calls at once, each on a connection the loop
# keeps from read to read (fewer than the read pool's connections).
LOOP_READERS = 8
CUSTOMER, SYSTEM = "customer", "system"


_MICROSECOND = dt.timedelta(microseconds=1)


# Three per posting, two per row read: a timedelta made per call (and by keyword) cost
# these as much again (to_micros 0.66 against 0.25 us, from_micros 0.54 against 0.38).
def to_micros(t: dt.datetime) -> int:
    return (t - EPOCH) // _MICROSECOND


def from_micros(us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(0, 0, us)


class SqlStore:
    def __init__(
        self, engine: Engine, counter_shards: int = 16, writers: int | None = None, max_batch: int = 256
    ) -> None:
        self.engine = engine
        self.counter_shards = counter_shards
        # SQLite has one writer at a time anyway; Postgres writers work in parallel, each
        # on its own accounts (units are routed by account).
        self._writers = 1 if engine.dialect.name == "sqlite" else (writers or 4)
        self._max_batch = max_batch
        # SQLite: reads on a local file, in WAL mode never waiting for writers, run in
        # place on the event loop; Postgres reads there wait in worker threads.
        self.quick_reads = engine.dialect.name == "sqlite"
        self._reads = engine  # Postgres: a pool of autocommit connections (see reading())
        if engine.dialect.name == "postgresql":
            size = engine.pool.size()  # type: ignore[attr-defined]
            self._reads = make_engine(_url_of(engine), pool_size=size, autocommit=True)
        self._committer: GroupCommitter | None = None  # started by the first write()
        self._write_engine: Engine | None = None  # Postgres: the writers' (see _committed)
        self._probe: Engine | None = None  # ping()'s engine of one connection, made by the first ping
        # Each event loop thread's: SQLite, its reader (_loop_reader); Postgres, its idle read
        # connections (_loop_read_connection).
        self._readers = threading.local()
        self._reader_conns: list[Connection] = []
        self._lock = threading.Lock()

    def _refuse_on_the_loop(self, waits: bool) -> None:
        """A call greenlet runs on the event loop: a statement there that waits (on the
        network, on a lock) would stall every call. Reads go through reading(), whose
        waits leave the loop free; other units need their method in a worker thread
        (api/server.py)."""
        if waits and in_call_greenlet():
            raise RuntimeError("a database statement that waits, on the event loop")

    @contextmanager
    def reading(self) -> Iterator[SqlUnit]:
        deadline = current_deadline()
        if self.engine.dialect.name != "postgresql":
            with _translated(deadline):
                loop_reader = self._loop_reader()
                if loop_reader is None:
                    with self.engine.connect() as conn, conn.begin():
                        yield SqlUnit(conn, self.counter_shards)
                    return
                with loop_reader.begin():
                    yield SqlUnit(loop_reader, self.counter_shards)
            return
        # Postgres reads run in autocommit: under READ COMMITTED a transaction gives a
        # read-only unit nothing (each statement has its own snapshot anyway), and its
        # BEGIN, SET LOCAL and COMMIT were three of a GetAccount's five round trips, the
        # pool's pre-ping a fourth. Their bounds are the connection's own (_bound_reads).
        if in_call_greenlet():
            # On the event loop (api/server.py runs the short methods there), which must
            # not wait on the network: the unit's statements wait in worker threads
            # (call_greenlet.blocking) while the loop serves other calls, and the rest of
            # the call stays on the loop. Against the whole method in a worker thread:
            # GetAccount at 8 in flight +11-29 % (four pairs, measured).
            with _translated(deadline), self._loop_read_slot():
                pool = self._reads.pool
                conn = self._loop_read_connection()
                try:
                    _bound_reads(conn, deadline, send=blocking)
                    yield SqlUnit(conn, self.counter_shards, offload=True)
                finally:
                    self._loop_read_done(conn, pool)
            return
        with _translated(deadline), self._reads.connect() as conn:
            _bound_reads(conn, deadline)
            yield SqlUnit(conn, self.counter_shards)

    @contextmanager
    def _loop_read_slot(self) -> Iterator[None]:
        """One of LOOP_READERS reads at a time on the event loop, the rest waiting on the
        loop. Unbounded, its calls' reads took every connection of the pool and then every
        worker thread, each waiting for a connection to come back: a deadlock at 64 reads
        in flight (measured), broken only by the pool's timeout."""
        slots: asyncio.Semaphore | None = getattr(self._readers, "slots", None)
        if slots is None:
            slots = self._readers.slots = asyncio.Semaphore(LOOP_READERS)
        await_(slots.acquire())
        try:
            yield
        finally:
            slots.release()

    def _loop_read_connection(self) -> Connection:
        """Postgres, in a call greenlet: an idle connection of the event loop's own, or a
        new one checked out in a worker thread. Only the loop's thread takes and returns
        them, so taking one never waits (a pool checkout could, on the loop). One from a
        pool since replaced (the database was lost: SqlUnit._lost) is let go unused."""
        idle = self._idle_readers()
        while idle:
            conn, pool = idle.pop()
            if pool is self._reads.pool and not conn.invalidated:
                return conn
            self._forget_reader(conn)
        conn = blocking(self._reads.connect)
        with self._lock:
            self._reader_conns.append(conn)
        return conn

    def _loop_read_done(self, conn: Connection, pool: object) -> None:
        idle = self._idle_readers()
        if conn.invalidated or pool is not self._reads.pool or len(idle) >= LOOP_READERS:
            self._forget_reader(conn)
        else:
            idle.append((conn, pool))

    def _idle_readers(self) -> list[tuple[Connection, object]]:
        """The loop thread's idle read connections, each with the pool it came from."""
        idle: list[tuple[Connection, object]] = self._readers.__dict__.setdefault("idle", [])
        return idle

    def _forget_reader(self, conn: Connection) -> None:
        conn.close()  # back to the pool: no round trip in autocommit
        with self._lock:
            self._reader_conns.remove(conn)

    def _loop_reader(self) -> Connection | None:
        """SQLite, in a call greenlet: its event loop thread's own connection, kept from read
        to read (checking one out of the pool and back cost a GetAccount ~10 % of its
        instructions, measured); None while a read on it is still in its transaction (its
        greenlet waits on a write, say): then the caller takes one from the pool."""
        if not (self.quick_reads and in_call_greenlet()):
            return None
        conn: Connection | None = getattr(self._readers, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._readers.conn = self.engine.connect()
            with self._lock:
                self._reader_conns.append(conn)
        return None if conn.in_transaction() else conn

    @contextmanager
    def snapshot(self) -> Iterator[SqlUnit]:
        """Reads that all see one committed state: REPEATABLE READ on Postgres; a SQLite
        read transaction in WAL mode is a snapshot already."""
        self._refuse_on_the_loop(waits=not self.quick_reads)
        with _translated(), self.engine.connect() as conn:
            if self.engine.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield SqlUnit(conn, self.counter_shards)

    @contextmanager
    def writing(self) -> Iterator[SqlUnit]:
        """A write unit of its own (one transaction, one commit): for administration."""
        self._refuse_on_the_loop(waits=True)  # for the write lock, on SQLite too
        with _translated(), self.engine.connect() as conn:
            conn.execution_options(**WRITE)
            with conn.begin():
                unit = SqlUnit(conn, self.counter_shards)
                yield unit
                unit.flush()

    def write(self, key: str, work: Callable[[SqlUnit], T]) -> T:
        return self._committed().run(key, work)

    def write_many(self, jobs: Sequence[tuple[str, Callable[[SqlUnit], T]]]) -> list[T | BaseException]:
        return self._committed().run_many(jobs)

    def _committed(self) -> GroupCommitter:
        if self._committer is None:
            with self._lock:
                if self._committer is None:
                    engine, begins = self.engine, False
                    if self.engine.dialect.name == "postgresql":
                        # Connections in autocommit, whose units send their BEGIN with
                        # their first statement: one round trip fewer per batch.
                        engine = make_engine(_url_of(self.engine), pool_size=self._writers, autocommit=True)
                        self._write_engine, begins = engine, True
                    self._committer = GroupCommitter(
                        engine,
                        lambda conn: SqlUnit(conn, self.counter_shards, begins=begins),
                        translate,
                        self._writers,
                        self._max_batch,
                        # SQLite statements never wait on a network or, in the writer's
                        # transaction, on a lock: they may run on the event loop.
                        units_on_loop=self.engine.dialect.name == "sqlite",
                    )
        return self._committer

    def queued_writes(self) -> int:
        return 0 if self._committer is None else self._committer.queued()

    def ping(self) -> None:
        """On a connection of its own: a pool that calls keep busy is load, not an outage,
        and must not make the health probe wait for a connection."""
        with self._lock:
            if self._probe is None:
                self._probe = make_engine(_url_of(self.engine), pool_size=1)
            probe = self._probe
        with _translated(), probe.connect() as conn:
            conn.execute(text("SELECT 1"))

    def close(self) -> None:
        with self._lock:
            if self._committer is not None:
                self._committer.close()
                self._committer = None
            if self._probe is not None:
                self._probe.dispose()
                self._probe = None
            if self._write_engine is not None:
                self._write_engine.dispose()
                self._write_engine = None
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        self._reads.dispose()
        self.engine.dispose()


def _url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def translate(exc: BaseException, deadline: float | None = None) -> BaseException:
    """Database failures as the core's retryable outcomes; anything else unchanged. A
    timeout is DeadlineExceeded when the unit's deadline ran out, else StoreUnavailable
    (a cap fired: the database is too contended)."""
    if isinstance(exc, sa_exc.IntegrityError):
        return WriteConflict(str(exc.orig))
    if isinstance(exc, sa_exc.DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if sqlstate in RETRYABLE_SQLSTATES:
            return WriteConflict(str(exc.orig))
        if sqlstate in TIMEOUT_SQLSTATES:
            left = remaining(deadline)
            if left is not None and left <= MIN_DB_TIMEOUT:
                return DeadlineExceeded(f"deadline passed during database work ({type(exc.orig).__name__})")
            return StoreUnavailable(f"database timeout ({type(exc.orig).__name__}): too contended")
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or exc.connection_invalidated:
            return StoreUnavailable(type(exc.orig).__name__)
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free in time
        return StoreUnavailable("connection pool exhausted")
    return exc


def _bounds(deadline: float | None) -> str:
    """SET LOCAL statements that bound the rest of the transaction by `deadline`."""
    return _settings(remaining(deadline), "SET LOCAL")


def _settings(left: float | None, set_: str) -> str:
    lock = MAX_LOCK_WAIT if left is None else min(max(left, MIN_DB_TIMEOUT), MAX_LOCK_WAIT)
    statement = MAX_STATEMENT if left is None else min(max(left, MIN_DB_TIMEOUT), MAX_STATEMENT)
    return f"{set_} statement_timeout = {round(statement * 1000)}; {set_} lock_timeout = {round(lock * 1000)}"


def _send(cursor: Any, statement: str, params: Any, raw: bool) -> None:
    if params is None:
        cursor.execute(statement)
    elif raw or not isinstance(params, list):
        cursor.execute(statement, params)
    elif len(params) == 1:  # executemany costs psycopg a pipeline
        cursor.execute(statement, params[0])
    else:
        cursor.executemany(statement, params)


def _now(fn: Callable[[], object]) -> object:
    return fn()


def _bound_reads(
    conn: Connection, deadline: float | None, send: Callable[[Callable[[], object]], object] = _now
) -> None:
    """Bound a read unit's statements and lock waits by its deadline, rounded up to one of
    READ_BOUNDS: as session settings of its autocommit connection, sent only when they
    change, so that calls with like deadlines send none (a round trip saved per read).
    The database work of a read then ends at most one step of READ_BOUNDS after it.
    `send` runs the round trip (call_greenlet.blocking on the event loop)."""
    left = remaining(deadline)
    step = None if left is None else next((b for b in READ_BOUNDS if b >= left), None)
    info = conn.connection.info  # kept with the DBAPI connection, cleared when it is replaced
    if info.get("read_bound", False) != step:
        send(lambda: conn.exec_driver_sql(_settings(step, "SET")))
        info["read_bound"] = step


@contextmanager
def _translated(deadline: float | None = None) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        translated = translate(exc, deadline)
        if translated is exc:
            raise
        raise translated from exc


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


class SqlUnit:
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

    def setting(self, key: str) -> str | None:
        value = self._query(select(settings.c.value).where(settings.c.key == key)).scalar()
        return None if value is None else str(value)

    def get_token(self, token_id: str) -> TokenRecord | None:
        row = self._query(select(api_tokens).where(api_tokens.c.id == token_id)).first()
        return None if row is None else _token(row)

    def list_tokens(self, tenant_id: str | None) -> list[TokenRecord]:
        q = select(api_tokens).order_by(api_tokens.c.tenant_id, api_tokens.c.created_at)
        if tenant_id is not None:
            q = q.where(api_tokens.c.tenant_id == tenant_id)
        return [_token(row) for row in self._query(q)]

    def list_tenants(self) -> list[Tenant]:
        rows = self._query(select(tenants).order_by(tenants.c.id))
        return [Tenant(row.id, row.name, from_micros(row.created_at)) for row in rows]

    def get_account(self, tenant_id: str, account_id: str) -> Account | None:
        row = self._run("get_account", {"id": account_id}).fetchone()
        return _account(row) if _customer_of(tenant_id, row, tenant_at=2, kind_at=3) else None

    def list_accounts(
        self, tenant_id: str, external_ref: str, after: int | None, limit: int
    ) -> Page[Account]:
        q = select(accounts).where(accounts.c.tenant_id == tenant_id, accounts.c.kind == CUSTOMER)
        if external_ref:
            q = q.where(accounts.c.external_ref == external_ref)
        if after is not None:
            q = q.where(accounts.c.seq > after)
        rows = self._query(q.order_by(accounts.c.seq).limit(limit + 1)).all()
        return _page(rows, limit, _account, _account_size)

    def get_transaction(self, tenant_id: str, transaction_id: str) -> Transaction | None:
        row = self._run("get_transaction", {"id": transaction_id}).fetchone()
        return _transaction(row) if row is not None and row[2] == tenant_id else None

    def list_transactions(
        self, tenant_id: str, flt: TransactionFilter, before: int | None, limit: int
    ) -> Page[Transaction]:
        t = transactions.c
        if flt.account_id:
            direction, other = (flt.direction, flt.direction) if flt.direction else tuple(Direction)
            params = {
                "tenant_id": tenant_id,
                "account_id": flt.account_id,
                "before": INT64_MAX if before is None else before,
                "date_from": self._date_param(flt.date_from or dt.date.min),
                "date_to": self._date_param(flt.date_to or dt.date.max),
                "direction": direction.value,
                "other_direction": other.value,
                "limit": limit + 1,
            }
            rows = self._run("account_history", params).fetchall()
            return _page(rows, limit, _transaction, _transaction_size)
        q = select(transactions).where(t.tenant_id == tenant_id)
        if flt.date_from:
            q = q.where(t.posting_date >= flt.date_from)
        if flt.date_to:
            q = q.where(t.posting_date <= flt.date_to)
        if flt.direction:
            q = q.where(t.direction == flt.direction.value)
        if before is not None:
            q = q.where(t.seq < before)
        rows = self._query(q.order_by(t.seq.desc()).limit(limit + 1)).all()
        return _page(rows, limit, _transaction, _transaction_size)

    def open_lots(self, account_id: str) -> list[Lot]:
        rows = self._run("open_lots", {"account_id": account_id}).fetchall()
        return [Lot(seq, txn_id, from_micros(at), remaining) for seq, txn_id, at, remaining in rows]

    def expired_holds(self, account_id: str, now: dt.datetime) -> list[Transaction]:
        rows = self._run("expired_holds", {"now": to_micros(now), "account_id": account_id}).fetchall()
        return [_transaction(row) for row in rows]

    def balance_at_time(self, account_id: str, at: dt.datetime) -> int:
        row = self._run("balance_at_time", {"account_id": account_id, "at": to_micros(at)}).fetchone()
        return 0 if row is None else int(row[0])

    def balance_at_date(self, account_id: str, date: dt.date) -> int:
        return self.date_balance_before(account_id, date)

    def due_for_expiry(self, now: dt.datetime, limit: int) -> list[tuple[str, str]]:
        us = to_micros(now)
        t, lot = transactions.c, lots.c
        holds = select(t.tenant_id, t.account_id).where(
            t.status == TransactionStatus.PENDING.value, t.expires_at <= us
        )
        expired = select(lot.tenant_id, lot.account_id).where(lot.remaining > 0, lot.expires_at <= us)
        rows = self._query(union(holds, expired).limit(limit))
        return [(row[0], row[1]) for row in rows]

    def audit_accounts(self, tenant_id: str) -> list[AccountAudit]:
        a, e, t, lot = accounts.c, entries.c, transactions.c, lots.c
        entry_sum = select(func.coalesce(func.sum(e.amount), 0)).where(e.account_id == a.id).scalar_subquery()
        last_running = (
            select(e.running_balance)
            .where(e.account_id == a.id)
            .order_by(e.created_at.desc(), e.seq.desc())
            .limit(1)
            .scalar_subquery()
        )
        open_holds = (
            select(func.coalesce(func.sum(t.amount), 0))
            .where(t.account_id == a.id, t.type == "hold", t.status == TransactionStatus.PENDING.value)
            .scalar_subquery()
        )
        remainders = (
            select(func.coalesce(func.sum(lot.remaining), 0)).where(lot.account_id == a.id).scalar_subquery()
        )
        rows = self._query(
            select(
                a.id,
                a.kind,
                a.balance_floor,
                a.posted,
                a.pending,
                a.expiring,
                entry_sum,
                last_running,
                open_holds,
                remainders,
            )
            .where(a.tenant_id == tenant_id)
            .order_by(a.seq)
        )
        return [
            AccountAudit(
                id=row[0],
                kind=row[1],
                balance_floor=row[2],
                posted=row[3],
                pending=row[4],
                expiring=row[5],
                entry_sum=int(row[6]),
                last_running_balance=row[7],
                open_holds=int(row[8]),
                lot_remainders=int(row[9]),
            )
            for row in rows
        ]

    def unbalanced_transactions(self, tenant_id: str) -> list[tuple[str, int]]:
        e, t = entries.c, transactions.c
        total = func.sum(e.amount)
        rows = self._query(
            select(t.id, total)
            .join(entries, e.transaction_id == t.id)
            .where(t.tenant_id == tenant_id)
            .group_by(t.id)
            .having(total != 0)
        )
        return [(row[0], int(row[1])) for row in rows]

    def broken_running_balances(self, tenant_id: str) -> list[BrokenLink]:
        e, a = entries.c, accounts.c
        previous = func.lag(e.running_balance, 1, 0).over(
            partition_by=e.account_id, order_by=(e.created_at, e.seq)
        )
        chain = (
            select(e.account_id, e.transaction_id, e.amount, e.running_balance, previous.label("previous"))
            .join(accounts, a.id == e.account_id)
            .where(a.tenant_id == tenant_id)
            .subquery()
        )
        c = chain.c
        rows = self._query(
            select(c.account_id, c.transaction_id, c.previous + c.amount, c.running_balance).where(
                c.previous + c.amount != c.running_balance
            )
        )
        return [BrokenLink(row[0], row[1], int(row[2]), int(row[3])) for row in rows]

    def count_transactions(self, tenant_id: str) -> int:
        t = transactions.c
        return int(self._query(select(func.count()).where(t.tenant_id == tenant_id)).scalar_one())

    # -- writes -----------------------------------------------------------------------

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
            self._execute(_bounds(deadline))

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
        return "; " + _bounds(deadline) if self._dialect == "postgresql" else ""

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

    def _query(self, statement: TypedReturnsRows[*_Ts]) -> CursorResult[*_Ts]:
        """A read through SQLAlchemy (off the hot path), in a worker thread when the unit
        is offloaded: psycopg has every row of the result when execute returns."""
        if self._offload:
            return blocking(lambda: self._conn.execute(statement))
        return self._conn.execute(statement)

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
                "metadata": _dump(new.metadata),
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
        rows = self._run("lock_many_by_id", {"ids": self._ids_param(list(account_ids))}).fetchall()
        return {locked.id: locked for row in rows if (locked := self._locked_customer(tenant_id, row))}

    def _ids_param(self, ids: list[str]) -> Any:
        """A list for hot_sql's `{in_ids}`: an array on Postgres, JSON for SQLite's json_each."""
        return ids if self._dialect == "postgresql" else json.dumps(ids)

    def lock_customer_and_counter(
        self, tenant_id: str, account_id: str, currency: str, purpose: str
    ) -> tuple[LockedBalance | None, LockedBalance | None]:
        key = (tenant_id, currency, purpose)
        if key in self._counters:  # the shard this transaction uses: lock_counter_account
            return self.lock_customer_account(tenant_id, account_id), None
        where = {"id": account_id, "tenant_id": tenant_id, "currency": currency, "purpose": purpose}
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
        where = {"tenant_id": tenant_id, "currency": currency, "purpose": purpose}
        # Any shard nobody holds right now (Postgres; SQLite has one writer anyway).
        row = self._run("lock_any_counter", where).fetchone()
        if row is None:
            # None exist yet, or all are busy: make sure they exist, then queue on one.
            self._create_counter_shards(tenant_id, currency, purpose, to_micros(now))
            row = _one(self._run("lock_counter_shard", {**where, "shard": random.randrange(self._shards)}))
        self._counters[key] = row[0]
        return self._locked(row)

    def _locked_customer(self, tenant_id: str, row: Any) -> LockedBalance | None:
        """A lock_by_id row (tenant and kind after the locked columns), if a customer's."""
        return self._locked(row) if _customer_of(tenant_id, row, tenant_at=9, kind_at=10) else None

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
            _to_date(last_date),
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
                "metadata": _dump(txn.metadata),
                "ending_balance": txn.ending_balance,
                "created_at": created,
                "updated_at": to_micros(txn.updated_at),
                "creator_token_id": txn.creator.token_id if txn.creator else None,
                "creator_token_name": txn.creator.token_name if txn.creator else None,
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

    def insert_tenant(self, tenant: Tenant) -> None:
        self._conn.execute(
            insert(tenants).values(id=tenant.id, name=tenant.name, created_at=to_micros(tenant.created_at))
        )

    def insert_token(self, token: TokenRecord) -> None:
        self._conn.execute(
            insert(api_tokens).values(
                id=token.id,
                tenant_id=token.tenant_id,
                name=token.name,
                scopes=" ".join(sorted(token.scopes)),
                secret_hash=token.secret_hash,
                created_at=to_micros(token.created_at),
                expires_at=None if token.expires_at is None else to_micros(token.expires_at),
                revoked_at=None,
            )
        )

    def revoke_token(self, token_id: str, now: dt.datetime) -> bool:
        result = self._conn.execute(
            update(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=to_micros(now))
        )
        return result.rowcount == 1

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


def _customer_of(tenant_id: str, row: Any, *, tenant_at: int, kind_at: int) -> bool:
    """Whether `row` (looked up by id alone) is a customer account of the tenant."""
    return row is not None and row[tenant_at] == tenant_id and row[kind_at] == CUSTOMER


def _one(cursor: Any) -> Any:
    row = cursor.fetchone()
    if row is None:
        raise LookupError("expected a row")
    return row


def _dump(metadata: dict[str, str]) -> str:
    if not metadata:  # most postings carry none: skip the encoder
        return "{}"
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _load(metadata: str) -> dict[str, str]:
    return {} if metadata == "{}" else json.loads(metadata)


def _to_date(value: Any) -> Any:
    """A DATE as read through the DBAPI cursor: ISO text on SQLite (what SQLAlchemy's
    Date stores there), a date already on Postgres and through SQLAlchemy."""
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def _page(rows: Sequence[Any], limit: int, convert: Callable[[Any], T], size: Callable[[T], int]) -> Page[T]:
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
def _account_size(a: Account) -> int:
    chars = len(a.external_ref)
    return item_bytes(a.metadata, chars) if a.metadata else ITEM_BYTES + 4 * chars


def _transaction_size(t: Transaction) -> int:
    chars = len(t.description) + len(t.external_id)
    return item_bytes(t.metadata, chars) if t.metadata else ITEM_BYTES + 4 * chars


# Whole rows in table order (hot_sql's *_COLUMNS, or select(table)), from the DBAPI
# cursor or SQLAlchemy alike: unpacked by position, which fails loudly on a column count
# that does not match.


def _account(row: Sequence[Any]) -> Account:
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
    ) = row
    return Account(
        id=id_,
        tenant_id=tenant_id,
        external_ref=external_ref,
        currency=currency,
        balance_floor=balance_floor,
        status=AccountStatus(status),
        metadata=_load(metadata),
        posted=posted,
        pending=pending,
        created_at=from_micros(created_at),
        updated_at=from_micros(updated_at),
        expiring=expiring,
    )


# Enum members by stored value: a dict lookup costs a tenth of calling the Enum (a page of
# history reads four per row; profiled).
_DIRECTIONS = {m.value: m for m in Direction}
_KINDS = {m.value: m for m in TransactionKind}
_TX_STATUSES = {m.value: m for m in TransactionStatus}
_TX_TYPES = {m.value: m for m in TransactionType}


def _transaction(row: Sequence[Any]) -> Transaction:
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
        posting_date=_to_date(posting_date),
        external_id=external_id or "",
        metadata=_load(metadata),
        status=_TX_STATUSES[status],
        ending_balance=ending_balance,
        created_at=from_micros(created_at),
        updated_at=from_micros(updated_at),
        creator=Creator(creator_token_id, creator_token_name) if creator_token_id else None,
        type=_TX_TYPES[type_],
        expires_at=None if expires_at is None else from_micros(expires_at),
        counterparty_id=counterparty_id or "",
        counterparty_ending_balance=counterparty_ending_balance or 0,
        related_id=related_id or "",
        refunded_amount=refunded_amount,
        captured_amount=captured_amount,
    )


def _token(row: Row[Any]) -> TokenRecord:
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
