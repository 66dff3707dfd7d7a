"""The deadline of the call being served, which bounds the database work it triggers.

A plain float of time.monotonic() seconds (None: no deadline) in a context variable: the
interceptor sets it from the gRPC call, and the store reads it where the work starts, so
neither the core nor the store sees gRPC and no signature in between carries it. Context
variables do not cross threads: the group committer reads it in the caller's thread and
hands it to its writer thread with the unit (store/group_commit.py)."""

from __future__ import annotations

import time
from contextvars import ContextVar

_DEADLINE: ContextVar[float | None] = ContextVar("ledger_deadline", default=None)


def current_deadline() -> float | None:
    return _DEADLINE.get()


def remaining(deadline: float | None) -> float | None:
    """Seconds left until `deadline` (negative once passed), or None without one."""
    return None if deadline is None else deadline - time.monotonic()


set_deadline = _DEADLINE.set
reset_deadline = _DEADLINE.reset
