"""Group commit: many requests' write units share one database transaction and one
commit (one fsync), each inside its own savepoint so that each stays atomic on its own
(on SQLite a batch first runs without savepoints: see _Writer._without_savepoint; a
batch's only unit needs none: _Writer._alone).

A writer thread owns the write path: it takes every unit waiting in its queue, runs
them one after another in one transaction, and acknowledges them only after the commit
has succeeded -- so an acknowledged write is as durable as with a commit per request,
and no request waits on a database lock held by another writer of this process. Units
are routed to writers by key (the account they post to), so one account's postings are
always serialized by the same writer and never contend across writers.

On SQLite the units of calls served on the event loop (call_greenlet.py) run on that
loop, a chunk at a time, while their writer waits: only BEGIN and COMMIT, which wait on the
file lock and the fsync, stay in the writer thread. A writer that ran them itself fought
the loop for the GIL at every statement (sqlite3 releases it at each one): 3.5 thread
switches per unit (measured). Postgres units wait on the network: they stay in the writers.

A unit carries its call's deadline (read in the caller's thread: context variables do not
cross threads). Its writer refuses it unrun once that has passed, and otherwise bounds its
statements and lock waits by it (the unit's savepoint hook); a timeout fails that unit
alone, rolled back to its savepoint, and the rest of the batch goes on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from ledger_server.call_greenlet import await_, in_call_greenlet
from ledger_server.core.deadline import current_deadline
from ledger_server.core.errors import DeadlineExceeded, LedgerError, StoreUnavailable
from ledger_server.os_thread import name_this_thread
from ledger_server.store.checkpointer import Checkpointer
from ledger_server.store.engine import WRITE

T = TypeVar("T")
log = logging.getLogger("ledger.store")
# Units run on the loop per hand-off: about 4 ms of the loop's time (~115 us of CPU a
# one-posting unit, measured), after which it serves other calls before the next chunk.
LOOP_CHUNK = 32
LOOP_CHECK_SECONDS = 0.5  # how often a writer waiting on a loop checks that it still runs
Work = Callable[[Any], Any]
Translate = Callable[[BaseException, "float | None"], BaseException]


@dataclass
class _Job:
    work: Work
    deadline: float | None  # time.monotonic() seconds, or None
    # Set once the job is settled: the Event for a caller in a thread, the future for a
    # caller in a call greenlet (resolved on its loop, which it must not block).
    done: threading.Event | asyncio.Future[None]
    result: Any = None
    error: BaseException | None = None


_STOP = object()


@dataclass(frozen=True)
class CommitStats:
    batches: int  # transactions committed or failed, each of one or more units
    units: int  # write units in them
    failed_batches: int  # whose BEGIN or COMMIT failed (their units answered UNAVAILABLE)
    commit_seconds: float  # time from a batch's BEGIN to the end of its COMMIT, summed
    queued: int  # units waiting for a writer now


class GroupCommitter:
    def __init__(
        self,
        engine: Engine,
        make_unit: Callable[[Any], Any],
        translate: Translate,
        writers: int,
        max_batch: int = 256,
        *,
        units_on_loop: bool = False,
        checkpointer: Checkpointer | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        """`checkpointer` (SQLite): takes the writers' checkpoints off their path.
        `on_commit()` runs in a writer after each batch it committed."""
        self._writers = [
            _Writer(
                engine,
                make_unit,
                translate,
                max_batch,
                units_on_loop=units_on_loop,
                checkpointer=checkpointer,
                on_commit=on_commit,
                name=f"writer-{i}",
            )
            for i in range(writers)
        ]
        for writer in self._writers:
            writer.start()

    def run(self, key: str, work: Callable[[Any], T]) -> T:
        """Run `work(unit)` atomically; return once it is committed, or raise what it raised."""
        (outcome,) = self.run_many([(key, work)])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def run_many(self, works: Sequence[tuple[str, Callable[[Any], T]]]) -> list[T | BaseException]:
        """Queue every (key, work) at once, so that they share commits; each one's result
        or exception once all are settled."""
        deadline = current_deadline()
        loop = asyncio.get_running_loop() if in_call_greenlet() else None
        if loop is None and _loop_of_this_thread() is not None:
            # Waiting here would block the loop, which may have to run this very unit.
            raise RuntimeError("a write from an event loop's thread must come from a call greenlet")
        jobs = [
            _Job(work, deadline, loop.create_future() if loop else threading.Event()) for _, work in works
        ]
        for (key, _), job in zip(works, jobs, strict=True):
            self._writers[zlib.crc32(key.encode()) % len(self._writers)].jobs.put(job)
        for job in jobs:
            if isinstance(job.done, threading.Event):
                job.done.wait()
            else:
                await_(job.done)  # cancelled with its call: then _resolve leaves it be
        return [job.error if job.error is not None else job.result for job in jobs]

    def queued(self) -> int:
        """Units waiting for a writer (not counting the batches being committed)."""
        return sum(writer.jobs.qsize() for writer in self._writers)

    def stats(self) -> CommitStats:
        """What the writers have done so far (each counts its own; read without a lock,
        so a figure may be one batch behind)."""
        return CommitStats(
            batches=sum(w.batches for w in self._writers),
            units=sum(w.units for w in self._writers),
            failed_batches=sum(w.failed_batches for w in self._writers),
            commit_seconds=sum(w.commit_seconds for w in self._writers),
            queued=self.queued(),
        )

    def close(self, timeout: float = 10.0) -> None:
        """Let the writers finish what they have (bounded: a writer stuck on the database
        must not keep the process from exiting; its units were never acknowledged)."""
        for writer in self._writers:
            writer.jobs.put(_STOP)
        for writer in self._writers:
            writer.join(timeout)
            if writer.is_alive():
                log.warning("writer did not stop", extra={"writer": writer.name})


class _Writer(threading.Thread):
    def __init__(
        self,
        engine: Engine,
        make_unit: Callable[[Any], Any],
        translate: Translate,
        max_batch: int,
        *,
        units_on_loop: bool,
        checkpointer: Checkpointer | None,
        on_commit: Callable[[], None] | None,
        name: str,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._checkpointer = checkpointer
        self._on_commit = on_commit
        self.jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._engine = engine
        self._make_unit = make_unit
        self._translate = translate
        self._max_batch = max_batch
        self._units_on_loop = units_on_loop
        self._conn: Connection | None = None
        # Written by this thread only (GroupCommitter.stats reads them).
        self.batches = self.units = self.failed_batches = 0
        self.commit_seconds = 0.0

    def run(self) -> None:
        name_this_thread()
        while True:
            first = self.jobs.get()
            if first is _STOP:
                self._close()
                return
            batch = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stop = True
                    break
                batch.append(job)
            self._commit(batch)
            if stop:
                self._close()
                return

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> Connection:
        """The writer's own connection, kept from batch to batch: checking one out of the
        pool (and pinging it, on Postgres) for every batch cost more than a posting."""
        if self._conn is None:
            self._conn = self._engine.connect().execution_options(**WRITE)
            if self._checkpointer is not None:
                self._checkpointer.take_over(self._conn)
        return self._conn

    def _drop_connection(self) -> None:
        """After a failed BEGIN or COMMIT the connection's state is unknown: never reuse it."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.invalidate()
                conn.close()
            except Exception:
                log.warning("could not discard a failed writer connection", exc_info=True)

    def _commit(self, batch: list[_Job]) -> None:
        start = time.perf_counter()
        committed = False
        try:
            try:
                self._run(batch, optimistic=True)
            except _Redo:  # rolled back: nothing of it happened
                for job in batch:
                    job.result = job.error = None
                self._run(batch, optimistic=False)
            committed = True
        except _Refused as refused:  # a lone unit failed, and its transaction was rolled back
            job = batch[0]
            job.result, job.error = None, self._translate(refused.cause, job.deadline)
        except Exception as exc:  # BEGIN or COMMIT failed: nothing of the batch is known to be durable
            self._drop_connection()
            error = self._translate(exc, None)
            if not isinstance(error, StoreUnavailable):
                log.exception("group commit failed")
                error = StoreUnavailable(f"commit failed: {type(exc).__name__}")
            for job in batch:
                if job.error is None:
                    job.error = error
            self.failed_batches += 1
        finally:
            self.batches += 1
            self.units += len(batch)
            self.commit_seconds += time.perf_counter() - start
            _settle(batch)
            if committed:  # after waking the callers: they come first
                if self._on_commit is not None:
                    self._on_commit()
                if self._checkpointer is not None:
                    self._checkpointer.committed()

    def _run(self, batch: list[_Job], *, optimistic: bool) -> None:
        conn = self._connection()
        with conn.begin():
            unit = self._make_unit(conn)
            in_thread = batch
            if self._units_on_loop:
                in_thread, on_loops = _by_loop(batch)
                for loop, jobs in on_loops.items():
                    for start in range(0, len(jobs), LOOP_CHUNK):
                        _call_on(loop, self._units, unit, jobs[start : start + LOOP_CHUNK], optimistic)
            self._units(unit, in_thread, optimistic, alone=len(batch) == 1)
            if optimistic:
                unit.change_count()  # still in the transaction that COMMIT is about to end

    def _units(self, unit: Any, jobs: list[_Job], optimistic: bool, alone: bool = False) -> None:
        """Run `jobs` in the open transaction, in this thread or on their loop; `alone`:
        they are the batch's only job."""
        for job in jobs:
            if job.deadline is not None and time.monotonic() >= job.deadline:
                job.error = DeadlineExceeded("deadline passed before the unit's turn: not run")
                continue
            mark = unit.change_count() if optimistic else None
            if mark is not None:
                self._without_savepoint(unit, job, mark)
            elif alone:
                self._alone(unit, job)
            else:
                self._in_savepoint(unit, job)

    def _in_savepoint(self, unit: Any, job: _Job) -> None:
        unit.savepoint(job.deadline)
        try:
            job.result = job.work(unit)
            unit.flush()  # what the unit buffered (sql_unit's _DEFERRED), in its savepoint
        except Exception as exc:  # this request fails alone
            unit.rollback_to_savepoint()
            job.error = self._translate(exc, job.deadline)
        unit.release_savepoint()

    def _alone(self, unit: Any, job: _Job) -> None:
        """The batch's only unit needs no savepoint: if it fails, the whole transaction is
        rolled back (_Refused). On Postgres a round trip fewer (the SET LOCAL of its bounds
        replaces SAVEPOINT, and no RELEASE), where batches hold ~1.3 units at 8 calls in
        flight (measured).
        The unit's bounds then also bound the COMMIT: if that times out, the caller gets
        an error (StoreUnavailable, retryable) for a write that was not committed."""
        unit.bound(job.deadline)
        try:
            job.result = job.work(unit)
            unit.flush()
        except Exception as exc:
            unit.forget_unit()
            raise _Refused(exc) from exc

    def _without_savepoint(self, unit: Any, job: _Job, mark: int) -> None:
        """Where the store counts changed rows (SQLite): most refusals (no funds, a frozen
        account...) come before a unit changes any row, and then only its buffers need
        dropping. Anything else is redone with a savepoint per unit (_Redo). Two statements
        fewer per unit in the writer, which is the bottleneck: writer CPU per unit -11 %,
        CreateTransaction +1-7 % (measured)."""
        try:
            job.result = job.work(unit)
            unit.flush()
        except LedgerError as exc:
            if unit.change_count() != mark:
                raise _Redo from exc
            unit.forget_unit()
            job.error = exc
        except Exception as exc:
            raise _Redo from exc


class _Refused(Exception):
    """A batch's only unit failed: the transaction is rolled back and `cause` is its outcome."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Redo(Exception):
    """A unit run without a savepoint failed after changing rows, or with a database
    error: its batch is rolled back and run again with a savepoint per unit."""


def _by_loop(batch: list[_Job]) -> tuple[list[_Job], dict[asyncio.AbstractEventLoop, list[_Job]]]:
    """The jobs of callers in threads, and those of callers on each event loop."""
    in_thread: list[_Job] = []
    on_loops: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
    for job in batch:
        if isinstance(job.done, threading.Event):
            in_thread.append(job)
        else:
            on_loops.setdefault(job.done.get_loop(), []).append(job)
    return in_thread, on_loops


def _call_on(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    """`fn(*args)` on `loop`, from a writer thread that waits for it (without the GIL);
    what it raises is raised here. A loop that is closed, or closes before it runs `fn`,
    fails the batch (RuntimeError) instead of leaving the writer waiting for ever."""
    done = threading.Event()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            fn(*args)
        except BaseException as exc:  # handed to the writer, which decides
            raised.append(exc)
        finally:
            done.set()

    loop.call_soon_threadsafe(run)
    while not done.wait(LOOP_CHECK_SECONDS):
        if loop.is_closed() and not done.is_set():  # a closed loop runs nothing more
            raise RuntimeError("the event loop closed before it ran its calls' units")
    if raised:
        raise raised[0]


def _loop_of_this_thread() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _settle(batch: list[_Job]) -> None:
    """Wake each job's caller: threads directly, and those waiting on a loop with one
    callback per loop and batch (each call_soon_threadsafe is a wake-up of the loop)."""
    on_loops: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for job in batch:
        if isinstance(job.done, threading.Event):
            job.done.set()
        else:
            on_loops.setdefault(job.done.get_loop(), []).append(job.done)
    for loop, futures in on_loops.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)
