"""The store: the core's ports (core/ports.py) on a SQLAlchemy engine. Reads run where the
call is served (on the event loop, their database waits in worker threads on Postgres);
writes are group-committed (group_commit.py), SQLite's checkpoints in a thread of their own
(checkpointer.py); each unit is a SqlUnit (sql_unit.py), and database failures reach the
core translated (failures.py)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Connection, Engine, text

from ledger_server.call_greenlet import await_, blocking, in_call_greenlet
from ledger_server.core.deadline import current_deadline
from ledger_server.store.checkpointer import Checkpointer
from ledger_server.store.commit_notices import Announcer, Listener, new_origin
from ledger_server.store.engine import WRITE, make_engine, sqlite_file
from ledger_server.store.failures import bound_reads, translate, translated
from ledger_server.store.group_commit import CommitStats, GroupCommitter
from ledger_server.store.sql_unit import SqlUnit

# The Postgres reading connections' session settings. Without bitmap scans, a page read in
# `seq` order (ListTransactions with filters, the tenant's whole history) walks its index
# and stops after the page, where Postgres, on tables it has not analyzed, took the tenant
# or account for a few rows and read all of theirs through a bitmap, then sorted them
# (tests/test_query_plans.py). Every read here is a lookup or such a page.
READ_SETTINGS = {"enable_bitmapscan": "off"}

T = TypeVar("T")
log = logging.getLogger("ledger.store")
# Postgres: the reads of the event loop's calls at once, each on a connection the loop
# keeps from read to read (fewer than the read pool's connections).
LOOP_READERS = 8


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
            url = _url_of(engine)
            self._reads = make_engine(url, pool_size=size, autocommit=True, settings=READ_SETTINGS)
        self._committer: GroupCommitter | None = None  # started by the first write()
        self._checkpointer: Checkpointer | None = None  # SQLite's, started with the committer
        self._write_engine: Engine | None = None  # Postgres: the writers' (see _committed)
        self._probe: Engine | None = None  # ping()'s engine of one connection, made by the first ping
        # Each event loop thread's: SQLite, its reader (_loop_reader); Postgres, its idle read
        # connections (_loop_read_connection).
        self._readers = threading.local()
        self._reader_conns: list[Connection] = []
        self._lock = threading.Lock()
        # Replaced, never changed in place: the writers iterate it without the lock.
        self._commit_listeners: tuple[Callable[[], None], ...] = ()
        # Postgres: this store's commits announced to other processes, and theirs heard
        # (commit_notices.py); started by the first write and the first on_commit().
        self._origin = new_origin()
        self._announcer: Announcer | None = None
        self._listener: Listener | None = None

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
            with translated(deadline):
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
        # pool's pre-ping a fourth. Their bounds are the connection's own (failures.bound_reads).
        if in_call_greenlet():
            # On the event loop (api/server.py runs the short methods there), which must
            # not wait on the network: the unit's statements wait in worker threads
            # (call_greenlet.blocking) while the loop serves other calls, and the rest of
            # the call stays on the loop. Against the whole method in a worker thread:
            # GetAccount at 8 in flight +11-29 % (four pairs, measured).
            with translated(deadline), self._loop_read_slot():
                pool = self._reads.pool
                conn = self._loop_read_connection()
                try:
                    bound_reads(conn, deadline, send=blocking)
                    yield SqlUnit(conn, self.counter_shards, offload=True)
                finally:
                    self._loop_read_done(conn, pool)
            return
        with translated(deadline), self._reads.connect() as conn:
            bound_reads(conn, deadline)
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
        with translated(), self.engine.connect() as conn:
            if self.engine.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield SqlUnit(conn, self.counter_shards)

    @contextmanager
    def writing(self) -> Iterator[SqlUnit]:
        """A write unit of its own (one transaction, one commit): for administration."""
        self._refuse_on_the_loop(waits=True)  # for the write lock, on SQLite too
        with translated(), self.engine.connect() as conn:
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
                    if sqlite_file(self.engine.url):  # in memory there is no WAL to checkpoint
                        self._checkpointer = Checkpointer(_url_of(self.engine))
                    if self.engine.dialect.name == "postgresql":
                        # Connections in autocommit, whose units send their BEGIN with
                        # their first statement: one round trip fewer per batch.
                        engine = make_engine(_url_of(self.engine), pool_size=self._writers, autocommit=True)
                        self._write_engine, begins = engine, True
                        self._announcer = Announcer(
                            _conninfo_of(self.engine), self._origin, self._listener_pid
                        )
                    self._committer = GroupCommitter(
                        engine,
                        lambda conn: SqlUnit(conn, self.counter_shards, begins=begins),
                        translate,
                        self._writers,
                        self._max_batch,
                        # SQLite statements never wait on a network or, in the writer's
                        # transaction, on a lock: they may run on the event loop.
                        units_on_loop=self.engine.dialect.name == "sqlite",
                        checkpointer=self._checkpointer,
                        on_commit=self._after_commit,
                    )
        return self._committer

    def on_commit(self, listener: Callable[[], None]) -> Callable[[], None]:
        """`listener()` runs after each commit of write() and write_many() units, in the
        committing writer's thread, and on Postgres also when another process announces
        commits of its own (in the thread that hears it), so it must be quick and never
        block. Returns what removes it."""
        with self._lock:
            self._commit_listeners = (*self._commit_listeners, listener)
            if self.engine.dialect.name == "postgresql" and self._listener is None:
                self._listener = Listener(_conninfo_of(self.engine), self._origin, self._tell_listeners)

        def remove() -> None:
            with self._lock:
                self._commit_listeners = tuple(x for x in self._commit_listeners if x is not listener)

        return remove

    def _listener_pid(self) -> int | None:
        listener = self._listener
        return None if listener is None else listener.backend_pid

    def _after_commit(self) -> None:
        if self._announcer is not None:
            self._announcer.committed()
        self._tell_listeners()

    def _tell_listeners(self) -> None:
        for listener in self._commit_listeners:
            try:
                listener()
            except Exception:  # the writer must go on committing whatever a listener does
                log.exception("a commit listener failed")

    def queued_writes(self) -> int:
        return 0 if self._committer is None else self._committer.queued()

    def ping(self) -> None:
        """On a connection of its own: a pool that calls keep busy is load, not an outage,
        and must not make the health probe wait for a connection."""
        with self._lock:
            if self._probe is None:
                self._probe = make_engine(_url_of(self.engine), pool_size=1)
            probe = self._probe
        with translated(), probe.connect() as conn:
            conn.execute(text("SELECT 1"))

    def commit_stats(self) -> CommitStats:
        """The group-commit writers' counts so far (zeros before the first write)."""
        committer = self._committer
        return committer.stats() if committer is not None else CommitStats(0, 0, 0, 0.0, 0)

    def connections_in_use(self) -> int:
        """Pooled connections checked out now (reads and, on SQLite, the writer's)."""
        return int(self.engine.pool.checkedout())  # type: ignore[attr-defined]

    def close(self) -> None:
        with self._lock:
            if self._committer is not None:
                self._committer.close()
                self._committer = None
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
            if self._announcer is not None:  # after the writers: their last commits announced
                self._announcer.close()
                self._announcer = None
            if self._listener is not None:
                self._listener.close()
                self._listener = None
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


def _conninfo_of(engine: Engine) -> str:
    """The Postgres engine's database as libpq names it (psycopg.connect's)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
