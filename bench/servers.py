"""The system under test: `ledger-server serve` child processes on fresh databases, each
with a tenant and an admin token made directly on the database before the server starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType

import psycopg

from ledger_server.core.admin import Admin
from ledger_server.core.auth import ADMIN
from ledger_server.store.engine import make_engine
from ledger_server.store.migrate import upgrade
from ledger_server.store.sql_store import SqlStore

TENANT = "bench"
SERVE = [sys.executable, "-m", "ledger_server.cli", "serve"]


def bootstrap_token(database_url: str) -> str:
    """Migrate the database, create the bench tenant and return an admin token's secret."""
    engine = make_engine(database_url, pool_size=1)
    try:
        upgrade(engine)
        admin = Admin(SqlStore(engine))
        admin.create_tenant(TENANT, "Bench")
        return admin.create_token(TENANT, "bench", [ADMIN])[1]
    finally:
        engine.dispose()


class ServerProcess:
    """One `ledger-server serve` on 127.0.0.1 and a free port; its JSON log goes to a file."""

    def __init__(
        self,
        database_url: str,
        log_path: Path,
        extra_args: tuple[str, ...] = (),
        *,
        wrapper: tuple[str, ...] = (),
        start_timeout: float = 60,
    ) -> None:
        """`wrapper`: a command the server runs under (e.g. valgrind's)."""
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [*wrapper, *SERVE, "--listen", "127.0.0.1:0", "--database-url", database_url, *extra_args],
            stdout=self._log,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.pid = self.proc.pid
        self.port = self._wait_serving(timeout=start_timeout)
        self.address = f"127.0.0.1:{self.port}"

    def _wait_serving(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as f:
                for line in f:
                    if line.startswith(b"{"):
                        record = json.loads(line)
                        if record.get("msg") == "serving":
                            return int(record["port"])
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"ledger-server exited early; log {self.log_path}:\n{self._tail()}")
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"ledger-server did not report 'serving' within {timeout}s:\n{self._tail()}")

    def _tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM this server (and only it), then SIGKILL if it has not exited in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class PostgresUnavailable(Exception):
    """Postgres cannot be reached or used; the message says why."""


class PostgresDatabase:
    """A fresh `ledger_bench_<random>` database, dropped (WITH (FORCE)) on exit."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"ledger_bench_{uuid.uuid4().hex[:12]}"
        try:
            self._admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
            self._admin.execute(f'CREATE DATABASE "{self.name}"')
        except psycopg.Error as exc:
            raise PostgresUnavailable(f"{type(exc).__name__}: {str(exc).strip()}") from exc
        self.dsn = admin_url.rsplit("/", 1)[0] + f"/{self.name}"
        self.url = self.dsn.replace("postgresql://", "postgresql+psycopg://", 1)

    def settings(self) -> dict[str, str]:
        names = ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "max_connections")
        return {name: str(self._admin.execute(f"SHOW {name}").fetchone()[0]) for name in names}  # type: ignore[index]

    def drop(self) -> None:
        if not self._admin.closed:
            self._admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self._admin.close()

    def __enter__(self) -> PostgresDatabase:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.drop()
