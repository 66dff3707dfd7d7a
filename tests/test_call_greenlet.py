"""Synchronous code run on the event loop in greenlets (call_greenlet.py), and the group
commit waited for from there without blocking the loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from ledger_server.api.server import ACCOUNT_SERVICE, ADMIN_SERVICE, TRANSACTION_SERVICE, _short
from ledger_server.call_greenlet import await_, in_call_greenlet, run_in_greenlet
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


def test_a_group_commit_is_awaited_without_blocking_the_loop(store: SqlStore) -> None:
    """The unit waits for an event that only another coroutine on the same loop sets: it
    commits only if the loop keeps running while the behavior waits for the commit."""
    released = threading.Event()

    def work(unit: Any) -> str:
        assert released.wait(BOUND), "the loop was blocked"
        return "committed"

    async def main() -> str:
        call = asyncio.ensure_future(run_in_greenlet(store.write, "key", work))
        await asyncio.sleep(0.05)
        released.set()
        result: str = await call
        return result

    assert run(main()) == "committed"


def test_a_write_of_a_cancelled_call_still_commits_and_settles(store: SqlStore) -> None:
    started, release = threading.Event(), threading.Event()

    def work(unit: Any) -> None:
        started.set()
        release.wait(BOUND)

    async def main() -> None:
        call = asyncio.ensure_future(run_in_greenlet(store.write, "key", work))
        while not started.is_set():
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        release.set()
        # The writer settles the cancelled job without error and takes the next one.
        assert await run_in_greenlet(store.write, "key", lambda unit: "next") == "next"

    run(main())


def test_only_the_short_methods_run_on_the_loop() -> None:
    assert _short(f"/{TRANSACTION_SERVICE}/CreateTransaction")
    assert _short(f"/{ACCOUNT_SERVICE}/GetAccount")
    assert not _short(f"/{TRANSACTION_SERVICE}/BatchCreateTransactions")
    assert not _short(f"/{TRANSACTION_SERVICE}/ImportTransactions")
    assert not _short(f"/{ADMIN_SERVICE}/VerifyLedger")
