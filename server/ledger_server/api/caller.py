"""The authenticated caller of the RPC being served, set by the interceptor."""

from __future__ import annotations

from contextvars import ContextVar

from ledger_server.core.auth import Caller

_CALLER: ContextVar[Caller] = ContextVar("ledger_caller")


def current_caller() -> Caller:
    return _CALLER.get()


def tenant_of_call() -> str:
    return _CALLER.get().tenant_id


set_caller = _CALLER.set
reset_caller = _CALLER.reset
