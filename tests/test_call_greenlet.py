"""Synchronous code run on the event loop in greenlets (call_greenlet.py), and the group
commit waited for from there without blocking the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from ledger_server.api.server import ACCOUNT_SERVICE, ADMIN_SERVICE, TRANSACTION_SERVICE, on_loop
from ledger_server.call_greenlet import await_, blocking, in_call_greenlet, run_in_greenlet
from ledger_server.store.group_commit import _call_on
from ledger_server.store.sql_store import SqlStore
from tests.support import writer_held

BOUND = 10.0  # seconds: a blocked loop fails the test instead of hanging it


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, BOUND))


def test_a_behavior_awaits_through_await_and_returns_its_result() -> None:
    def behavior(x: int) -> tuple[int, bool]:
        doubled = await_(asyncio.sleep(0, result=2 * x))
        return doubled + 1, in_call_greenlet()

    assert run(run_in_greenlet(behavior, 20)) == (41, True)
    assert not in_call_greenlet()


def test_an_awaitables_exception_is_raised_where_the_behavior_waited() -> None:
    async def failing() -> None:
        raise KeyError("boom")

    def behavior() -> str:
        try:
            await_(failing())
        except KeyError as exc:
            return f"caught {exc}"
        return "not raised"

    assert run(run_in_greenlet(behavior)) == "caught 'boom'"


def test_a_behaviors_exception_leaves_run_in_greenlet() -> None:
    def behavior() -> None:
        await_(asyncio.sleep(0))
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        run(run_in_greenlet(behavior))


def test_await_outside_a_call_greenlet_is_an_error() -> None:
    sleeping = asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await_(sleeping)
    sleeping.close()


def test_behaviors_interleave_on_one_loop() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        first, second = loop.create_future(), loop.create_future()
        done: list[str] = []

        def behavior(name: str, waits_for: asyncio.Future[str]) -> str:
            value = await_(waits_for)
            done.append(name)
            return value

        a = asyncio.ensure_future(run_in_greenlet(behavior, "a", first))
        b = asyncio.ensure_future(run_in_greenlet(behavior, "b", second))
        await asyncio.sleep(0)
        second.set_result("for b")  # b, started second, finishes first
        assert await b == "for b"
        first.set_result("for a")
        assert await a == "for a"
        return done

    assert run(main()) == ["b", "a"]


def test_a_cancelled_call_unwinds_its_behavior() -> None:
    unwound: list[type[BaseException]] = []

    async def main() -> None:
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def behavior() -> None:
            try:
                await_(never)
            except BaseException as exc:
                unwound.append(type(exc))
                raise

        task = asyncio.ensure_future(run_in_greenlet(behavior))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    assert unwound == [asyncio.CancelledError]


async def queued(store: SqlStore, count: int) -> None:
    while store.queued_writes() < count:
        await asyncio.sleep(0.01)


def test_a_group_commit_is_awaited_without_blocking_the_loop(store: SqlStore) -> None:
    """The call's write waits behind a unit that only a coroutine on the same loop lets
    finish: it commits only if the loop keeps running while the behavior waits."""
    released = threading.Event()

    async def main() -> str:
        call = asyncio.ensure_future(run_in_greenlet(store.write, "key", lambda unit: "committed"))
        await queued(store, 1)
        released.set()
        result: str = await call
        return result

    with writer_held(store, released):
        assert run(main()) == "committed"


def test_a_write_of_a_cancelled_call_still_commits_and_settles(store: SqlStore) -> None:
    released = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        call = asyncio.ensure_future(
            run_in_greenlet(store.write, "key", lambda unit: ran.append("cancelled"))
        )
        await queued(store, 1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        released.set()
        # The writer runs and settles the cancelled job without error and takes the next one.
        assert await run_in_greenlet(store.write, "key", lambda unit: "next") == "next"

    with writer_held(store, released):
        run(main())
    assert ran == ["cancelled"]


def test_a_closed_loop_fails_its_units_batch_and_the_writer_goes_on(store: SqlStore) -> None:
    released = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        call = asyncio.ensure_future(run_in_greenlet(store.write, "key", lambda unit: ran.append("orphan")))
        await queued(store, 1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    with writer_held(store, released):
        run(main())  # its loop is closed now, with the unit still queued
    assert store.write("key", lambda unit: "next") == "next"
    # On SQLite that unit was to run on its loop: it never ran. Postgres runs it in the writer.
    assert ran == ([] if store.engine.dialect.name == "sqlite" else ["orphan"])


def test_a_writer_waiting_on_a_loop_that_closes_unrun_is_freed() -> None:
    loop = asyncio.new_event_loop()  # never run: what it is handed waits until it closes
    ran: list[str] = []
    raised: list[BaseException] = []

    def writer() -> None:
        try:
            _call_on(loop, ran.append, "unit")
        except RuntimeError as exc:
            raised.append(exc)

    waiting = threading.Thread(target=writer, daemon=True)  # daemon: a hang fails, not blocks, the run
    waiting.start()
    time.sleep(0.1)
    loop.close()
    waiting.join(BOUND)
    assert not waiting.is_alive()
    assert "closed" in str(raised[0])
    assert ran == []


def test_a_write_on_the_loop_outside_a_call_greenlet_is_refused(store: SqlStore) -> None:
    """It would block the loop, which may have to run the unit: a deadlock."""

    async def main() -> None:
        store.write("key", lambda unit: None)

    with pytest.raises(RuntimeError, match="call greenlet"):
        run(main())


def test_which_methods_run_on_the_loop() -> None:
    """Every short method; batches, imports and the admin methods in worker threads."""
    for method in ("CreateTransaction", "CaptureHold", "GetTransaction", "ListTransactions"):
        assert on_loop(f"/{TRANSACTION_SERVICE}/{method}")
    assert on_loop(f"/{ACCOUNT_SERVICE}/GetAccount")
    for method in ("BatchCreateTransactions", "ImportTransactions"):
        assert not on_loop(f"/{TRANSACTION_SERVICE}/{method}")
    assert not on_loop(f"/{ADMIN_SERVICE}/VerifyLedger")


def test_a_database_wait_on_the_loop_is_refused(store: SqlStore) -> None:
    """A snapshot on Postgres, or any write lock taken outside group commit, would stall
    the loop; reads may wait there (their statements wait in worker threads)."""

    def behavior() -> list[str]:
        refused = []
        for name, unit in (
            ("reading", store.reading),
            ("snapshot", store.snapshot),
            ("writing", store.writing),
        ):
            try:
                with unit():
                    pass
            except RuntimeError:
                refused.append(name)
        return refused

    expected = ["writing"] if store.quick_reads else ["snapshot", "writing"]
    assert run(run_in_greenlet(behavior)) == expected
    assert behavior() == []  # in a thread, all may wait


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgres_reads_on_the_loop_wait_in_threads_and_keep_their_connections(store: SqlStore) -> None:
    """A read's statement waits in a worker thread while the loop runs other coroutines,
    and the loop keeps its read connections from read to read."""

    def slow_read() -> object:
        with store.reading() as unit:
            unit._execute("SELECT pg_sleep(0.3)")
            return unit._conn

    async def main() -> tuple[int, list[object]]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.ensure_future(tick())
        first = await run_in_greenlet(slow_read)
        during = ticks
        rest = [await run_in_greenlet(read_connection, store) for _ in range(2)]
        ticking.cancel()
        return during, [first, *rest]

    during, connections = run(main())
    assert during >= 10, "the loop was blocked while the read waited"
    assert all(conn is connections[0] for conn in connections)
    assert read_connection(store) is not connections[0]  # a thread's read: from the pool
    # The pool replaced, as when the database was lost: its connections are let go.
    store._reads.dispose(close=False)
    assert run(run_in_greenlet(read_connection, store)) is not connections[0]
    assert connections[0].closed


def test_blocking_work_leaves_the_loop_free() -> None:
    """From a call greenlet, `blocking` runs its function in another thread, while the loop
    runs the coroutine that lets it finish; elsewhere it runs it in place."""
    released = threading.Event()

    def wait_for_release() -> int:
        assert released.wait(BOUND), "the loop was blocked"
        return threading.get_ident()

    async def main() -> int:
        call = asyncio.ensure_future(run_in_greenlet(blocking, wait_for_release))
        await asyncio.sleep(0.05)
        released.set()
        result: int = await call
        return result

    assert run(main()) != threading.get_ident()
    assert blocking(threading.get_ident) == threading.get_ident()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # Postgres reads never run on the loop
def test_sqlite_reads_on_the_loop_keep_one_connection(store: SqlStore) -> None:
    """SQLite reads in call greenlets share their loop thread's connection, held from read
    to read, instead of a pool checkout each; reads elsewhere take pooled connections."""

    async def main() -> list[object]:
        return [await run_in_greenlet(read_connection, store) for _ in range(3)]

    first, *rest = run(main())
    assert all(conn is first for conn in rest)
    assert store.engine.pool.checkedout() == 1  # type: ignore[attr-defined]  # the loop's, between reads
    assert read_connection(store) is not first  # a thread's read


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_many_postgres_reads_on_the_loop_at_once_all_finish(store: SqlStore) -> None:
    """64 reads at once, more than the read pool's connections: unbounded, they held every
    connection and every worker thread waited for one, until the pool's timeout."""

    def slow_read() -> int:
        with store.reading() as unit:
            return int(unit._execute("SELECT 1 FROM pg_sleep(0.02)").fetchone()[0])

    async def main() -> list[int]:
        return list(await asyncio.gather(*(run_in_greenlet(slow_read) for _ in range(64))))

    assert run(main()) == [1] * 64


def read_connection(store: SqlStore) -> object:
    """The connection a read ran on."""
    with store.reading() as unit:
        assert unit.get_account("default", "00000000-0000-0000-0000-000000000000") is None
        return unit._conn


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_read_on_the_loop_while_another_waits_inside_its_read_gets_its_own(store: SqlStore) -> None:
    """A call greenlet that waits (on a write, say) inside a read keeps its loop's reader
    busy: a read of another greenlet meanwhile takes a pooled connection, and both reads
    end normally."""

    async def main() -> tuple[object, object]:
        loop = asyncio.get_running_loop()
        release = loop.create_future()

        def waits_inside() -> object:
            with store.reading() as unit:
                await_(release)
                assert unit.list_tenants()
                return unit._conn

        def reads() -> object:
            with store.reading() as unit:
                assert unit.list_tenants()
                return unit._conn

        waiting = asyncio.ensure_future(run_in_greenlet(waits_inside))
        await asyncio.sleep(0)
        other = await run_in_greenlet(reads)
        release.set_result(None)
        return await waiting, other

    held, other = run(main())
    assert held is not other
    assert run(run_in_greenlet(read_connection, store)) is held  # the loop's reader, free again
