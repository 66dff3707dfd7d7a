"""Test helpers: a `ledger-server` child process and the ledger's invariants in SQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
import pytest
from grpc_status import rpc_status
from sqlalchemy import Engine, text

from ledger_server.api.server import LedgerServer
from ledger_server.config import Settings
from ledger_server.core.auth import Authenticator
from ledger_server.core.ledger import Ledger
from ledger_server.store.engine import make_engine
from ledger_server.store.migrate import upgrade
from ledger_server.store.sql_store import SqlStore
from ledger_server.store.sql_unit import SqlUnit

SERVER = [sys.executable, "-m", "ledger_server.cli"]
START = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)  # the time a Clock starts at


class Clock:
    """A clock the test moves forward by hand (conftest's `clock`, and `book`: a ledger
    on it)."""

    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, by: dt.timedelta) -> None:
        self.now += by


def unit_calls(monkeypatch: pytest.MonkeyPatch, method: str) -> list[tuple[object, ...]]:
    """The arguments (after the unit) of every call of SqlUnit.`method` from now on; the
    calls still happen."""
    calls: list[tuple[object, ...]] = []
    original = getattr(SqlUnit, method)

    def recorded(unit: SqlUnit, *args: object) -> object:
        calls.append(args)
        return original(unit, *args)

    monkeypatch.setattr(SqlUnit, method, recorded)
    return calls


def server_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "database_url": "",
        "log_level": "INFO",
        "drain_seconds": 0.0,
        "grace_seconds": 5.0,
        "workers": 16,
        "db_pool_size": 16,
        "writers": 4,
        "max_concurrent_rpcs": 256,
        "max_message_bytes": 4 * 1024 * 1024,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@contextmanager
def serving(ledger: Ledger, store: SqlStore, **overrides: object) -> Iterator[LedgerServer]:
    """A LedgerServer of `ledger` on a free port, `overrides` changing server_settings()."""
    server = LedgerServer(ledger, Authenticator(store, cache_seconds=0), server_settings(**overrides))
    server.start()
    try:
        yield server
    finally:
        server.stop(0)


@contextmanager
def migrated_database(
    admin: psycopg.Connection[Any], url_of_any: str, prefix: str, revision: str = "head"
) -> Iterator[str]:
    """A fresh Postgres database migrated to `revision`, beside the one `url_of_any` names
    (its SQLAlchemy URL), made and dropped through `admin`, an autocommit connection."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = url_of_any.rsplit("/", 1)[0] + f"/{name}"
        engine = make_engine(url, pool_size=1)
        upgrade(engine, revision)
        engine.dispose()
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class ServerProcess:
    """`ledger-server serve` in a child process, its JSON log captured to a file."""

    def __init__(self, database_url: str, log_path: Path, *extra: str) -> None:
        self.database_url = database_url
        self.log_path = log_path
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.start()

    def start(self, port: int = 0) -> None:
        self._log = self.log_path.open("ab")
        self._offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [
                *SERVER,
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--database-url",
                self.database_url,
                *self.extra,
            ],
            stdout=self._log,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            self.port = int(self.wait_for("serving", timeout=60)["port"])
        except Exception:
            self.kill()  # a server that never served is not left behind
            raise

    def log_lines(self) -> list[dict[str, Any]]:
        with self.log_path.open("rb") as f:
            f.seek(self._offset)
            return [json.loads(line) for line in f if line.startswith(b"{")]

    def wait_for(self, msg: str, timeout: float, **fields: str) -> dict[str, Any]:
        """The first log line with this msg (and these field values) since the last start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if line.get("msg") == msg and all(line.get(k) == v for k, v in fields.items()):
                    return line
            if self.proc is not None and self.proc.poll() is not None and msg == "serving":
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        raise TimeoutError(f"no {msg!r} log line within {timeout}s:\n{self.log_path.read_text()}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"server did not exit; its log:\n{self.log_path.read_text()[-20000:]}"
            ) from exc
        self._log.close()
        return code

    def restart(self) -> None:
        """Stop (SIGTERM) and start again on the same port and database."""
        port = self.port
        self.signal(signal.SIGTERM)
        self.wait()
        self.start(port)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def invariant_violations(engine: Engine) -> list[str]:
    """The ledger's invariants, checked straight in SQL (the change feed's too: every
    transaction created in it once, its last change how it stands); returns what is violated."""
    problems: list[str] = []
    with engine.connect() as conn:
        for tx_id, total in conn.execute(
            text(
                "SELECT transaction_id, SUM(amount) FROM entries "
                "GROUP BY transaction_id HAVING SUM(amount) <> 0"
            )
        ):
            problems.append(f"entries of {tx_id} sum to {total}")
        for acct, posted, total in conn.execute(
            text(
                "SELECT a.id, a.posted, COALESCE(SUM(e.amount), 0) FROM accounts a "
                "LEFT JOIN entries e ON e.account_id = a.id GROUP BY a.id, a.posted "
                "HAVING a.posted <> COALESCE(SUM(e.amount), 0)"
            )
        ):
            problems.append(f"account {acct} stores {posted} but its entries sum to {total}")
        for acct, posted, floor in conn.execute(
            text(
                "SELECT id, posted - pending, balance_floor FROM accounts "
                "WHERE posted - pending < balance_floor"
            )
        ):
            problems.append(f"account {acct} available {posted} is below its floor {floor}")
        for acct, running, posted in conn.execute(
            text(
                "SELECT a.id, e.running_balance, a.posted FROM accounts a JOIN entries e ON e.seq = "
                "(SELECT MAX(seq) FROM entries WHERE account_id = a.id) WHERE e.running_balance <> a.posted"
            )
        ):
            problems.append(f"account {acct} last running balance {running} differs from posted {posted}")
        for tx_id, count in conn.execute(
            text(
                "SELECT t.id, COUNT(c.seq) FROM transactions t LEFT JOIN transaction_changes c "
                "ON c.transaction_id = t.id AND c.created = 1 GROUP BY t.id HAVING COUNT(c.seq) <> 1"
            )
        ):
            problems.append(f"transaction {tx_id} is created {count} times in the change feed")
        for (tx_id,) in conn.execute(
            text(
                "SELECT t.id FROM transactions t JOIN transaction_changes c ON c.transaction_id = t.id "
                "WHERE NOT EXISTS (SELECT 1 FROM transaction_changes later WHERE later.transaction_id = t.id "
                "AND (later.xid > c.xid OR (later.xid = c.xid AND later.seq > c.seq))) "
                "AND (c.status <> t.status OR c.refunded_amount <> t.refunded_amount "
                "OR c.captured_amount <> t.captured_amount)"
            )
        ):
            problems.append(f"the change feed's last change of transaction {tx_id} is not how it stands")
    return problems


@contextmanager
def writer_held(
    store: SqlStore, until: threading.Event, key: str = "key", bound: float = 10.0
) -> Iterator[None]:
    """The writer that serves `key` busy with a unit from a thread, which ends once `until`
    is set: writes for that key submitted meanwhile wait in its queue."""
    holding = threading.Event()

    def blocker(unit: Any) -> None:
        holding.set()
        assert until.wait(bound), "never released"

    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(store.write, key, blocker)
        assert holding.wait(bound)
        try:
            yield
        finally:
            until.set()
            held.result(bound)


@contextmanager
def holding_account_lock(database_url: str, account_id: str) -> Iterator[None]:
    """Block the server's writers on this account from outside, as a slow peer would."""
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
    else:
        with psycopg.connect(database_url.replace("+psycopg", "")) as pg, pg.transaction():
            pg.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (account_id,))
            yield


def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    """Wait (bounded) for a condition that the code under test brings about by itself."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not met within {timeout} s: {what}"
        time.sleep(0.02)


_T = TypeVar("_T")


def until_our_deadline(stream: Iterable[_T]) -> list[_T]:
    """What a stream that stays open (a watch) sent until the caller's own deadline ended
    it; an error the server ended it with (one with google.rpc details) is raised."""
    received = []
    try:
        for message in stream:
            received.append(message)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED or rpc_status.from_call(err) is not None:
            raise
    return received
