"""Synchronous code run on the event loop in greenlets (call_greenlet.py), and the group
commit waited for from there without blocking the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest

from ledger_server.api.server import ACCOUNT_SERVICE, ADMIN_SERVICE, TRANSACTION_SERVICE, _short
from ledger_server.call_greenlet import await_, in_call_greenlet, run_in_greenlet
from ledger_server.store.group_commit import _call_on
from ledger_server.store.sql_store import SqlStore

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


@contextmanager
def writer_held(store: SqlStore, until: threading.Event) -> Iterator[None]:
    """The store's writer busy with a unit from a thread, which ends once `until` is set:
    writes submitted meanwhile wait in its queue."""
    holding = threading.Event()

    def blocker(unit: Any) -> None:
        holding.set()
        assert until.wait(BOUND), "never released"

    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(store.write, "key", blocker)
        assert holding.wait(BOUND)
        try:
            yield
        finally:
            until.set()
            held.result(BOUND)


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


def test_only_the_short_methods_run_on_the_loop() -> None:
    assert _short(f"/{TRANSACTION_SERVICE}/CreateTransaction")
    assert _short(f"/{ACCOUNT_SERVICE}/GetAccount")
    assert not _short(f"/{TRANSACTION_SERVICE}/BatchCreateTransactions")
    assert not _short(f"/{TRANSACTION_SERVICE}/ImportTransactions")
    assert not _short(f"/{ADMIN_SERVICE}/VerifyLedger")
