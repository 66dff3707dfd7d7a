"""Synchronous behaviors run on the event loop itself, each in a greenlet of its own.

A behavior that would block (its write waiting for a group commit, say) hands an awaitable
to `await_`: its greenlet switches back to the coroutine that drives it, which awaits it on
the loop and switches back in with the result. So a call's whole synchronous stack runs
without a thread hop, which cost a call about 300 us of CPU (measured), and the loop serves
other calls while it waits. Only behaviors whose other waits are short may run this way:
anything that blocks without `await_` blocks the loop.

The same technique as SQLAlchemy's asyncio layer, on the greenlet package directly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import greenlet

T = TypeVar("T")


class _CallGreenlet(greenlet.greenlet):
    """A behavior's greenlet; its parent is the coroutine's greenlet that drives it."""


def in_call_greenlet() -> bool:
    """True inside a behavior run by `run_in_greenlet` (then waits must go to `await_`)."""
    return isinstance(greenlet.getcurrent(), _CallGreenlet)


def await_(awaitable: Awaitable[T]) -> T:
    """From inside a call greenlet: wait for `awaitable` on the loop, without blocking it."""
    current = greenlet.getcurrent()
    if not isinstance(current, _CallGreenlet):
        raise RuntimeError("await_ outside a call greenlet")
    driver = current.parent
    assert driver is not None  # given by run_in_greenlet
    return driver.switch(awaitable)  # type: ignore[no-any-return]


async def run_in_greenlet(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a new greenlet, awaiting on its behalf whatever it passes to await_.
    An exception of an awaitable (a cancellation too) is raised inside `fn` where it waited."""
    child = _CallGreenlet(fn, greenlet.getcurrent())
    step: Any = child.switch(*args)
    while not child.dead:
        try:
            value = await step
        except BaseException as exc:
            step = child.throw(exc)
        else:
            step = child.switch(value)
    return step  # type: ignore[no-any-return]


def blocking(fn: Callable[[], T]) -> T:
    """`fn()`, which may block (a Postgres read, say): in a worker thread when called from a
    call greenlet, whose loop serves other calls meanwhile; directly anywhere else."""
    if not in_call_greenlet():
        return fn()
    return await_(asyncio.to_thread(fn))
