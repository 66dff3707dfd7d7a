"""Database failures as the core's retryable outcomes (WriteConflict: re-run the unit;
StoreUnavailable: tell the caller to retry; DeadlineExceeded: the call's deadline ran out
first), and the bounds that make Postgres give up in time.

On Postgres each unit's statements and lock waits are bounded by its call's deadline
(core/deadline.py): reads (in autocommit) by their connection's `statement_timeout`
and `lock_timeout`, set to the deadline rounded up to a step; group-committed writes
set them inside each unit's savepoint, and reset them to the caps when it is released,
so that one unit's short deadline never cuts a later unit or the shared commit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from ledger_server.core.deadline import remaining
from ledger_server.core.errors import DeadlineExceeded, StoreUnavailable, WriteConflict

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


def bounds_sql(deadline: float | None) -> str:
    """SET LOCAL statements that bound the rest of the transaction by `deadline`."""
    return settings_sql(remaining(deadline), "SET LOCAL")


def settings_sql(left: float | None, set_: str) -> str:
    lock = MAX_LOCK_WAIT if left is None else min(max(left, MIN_DB_TIMEOUT), MAX_LOCK_WAIT)
    statement = MAX_STATEMENT if left is None else min(max(left, MIN_DB_TIMEOUT), MAX_STATEMENT)
    return f"{set_} statement_timeout = {round(statement * 1000)}; {set_} lock_timeout = {round(lock * 1000)}"


def _now(fn: Callable[[], object]) -> object:
    return fn()


def bound_reads(
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
        send(lambda: conn.exec_driver_sql(settings_sql(step, "SET")))
        info["read_bound"] = step


@contextmanager
def translated(deadline: float | None = None) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        outcome = translate(exc, deadline)
        if outcome is exc:
            raise
        raise outcome from exc
