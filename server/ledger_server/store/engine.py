"""Engines tuned for a ledger: SQLite in WAL mode with durable commits and writers that
take the write lock up front; Postgres through psycopg 3 with a fixed-size pool."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

WRITE = {"ledger_write": True}
_T = TypeVar("_T")


def make_engine(
    url: str, pool_size: int = 16, autocommit: bool = False, settings: Mapping[str, str] | None = None
) -> Engine:
    """`autocommit` (Postgres only): connections that start no transaction by themselves,
    set once when each connects rather than at every checkout (that cost a read ~100 us).
    `settings` (Postgres only): the connections' session settings, sent as they connect."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, pool_size)
    # In autocommit no transaction is ever left open: no rollback when one is returned
    # to the pool (on a connection the database dropped, that rollback logged an error).
    options: dict[str, Any] = (
        {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None} if autocommit else {}
    )
    return create_engine(
        url,
        **options,
        pool_size=pool_size,
        # No overflow: beyond the pool, a call waits for a connection rather than opening
        # and closing one of its own (the benchmark saw ~100 new backends in 5 s that way).
        max_overflow=0,
        # No pre-ping: a round trip per checkout, a quarter of a GetAccount's (measured). A
        # connection found dead fails its one call with UNAVAILABLE (retryable), and the
        # pool then replaces every connection older than that failure (SQLAlchemy does so
        # on a disconnect error, SqlUnit._lost for the statements it runs itself), so a
        # restarted database costs one failed call per pool.
        pool_timeout=10,
        connect_args={
            "connect_timeout": 5,
            **({"options": " ".join(f"-c {k}={v}" for k, v in settings.items())} if settings else {}),
        },
    )


def _as_is(value: _T) -> _T:
    return value


# sqlite3 binds int, float and str directly but "adapts" every other parameter, None and
# bytes included: two attribute lookups that fail, one of them formatting an
# AttributeError message (~9 a posting, 2.7 % of a batch's instructions: callgrind). A
# registered adapter is found by one dict lookup instead; these two bind what they got.
sqlite3.register_adapter(type(None), _as_is)
sqlite3.register_adapter(bytes, _as_is)


def sqlite_file(url: str | URL) -> str | None:
    """The database file a SQLite URL names; None for another database or one in memory."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


def _sqlite_engine(url: str, pool_size: int) -> Engine:
    database = sqlite_file(url)
    if database:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        connect_args={"check_same_thread": False, "timeout": 10},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's begin event below issue BEGIN itself (pysqlite would defer it).
        dbapi_conn.isolation_level = None
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",  # an acknowledged commit survives power loss, not only kill -9
            "foreign_keys=ON",
            "busy_timeout=10000",
        ):
            dbapi_conn.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock first: no deadlock-prone read-to-write upgrade.
        # On the sqlite3 connection itself (through exec_driver_sql this cost a GetAccount
        # a third of its store time, profiled), its errors wrapped as exec_driver_sql would.
        begin = "BEGIN IMMEDIATE" if conn.get_execution_options().get("ledger_write", False) else "BEGIN"
        try:
            conn.connection.driver_connection.execute(begin)
        except sqlite3.Error as exc:
            raise sa_exc.DBAPIError.instance(begin, None, exc, sqlite3.Error) from exc

    return engine
