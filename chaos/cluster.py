"""The system under test and the faults done to it: `ledger-server serve` child processes
on 127.0.0.1 (ended only by their own pid), a throwaway Postgres database, and a fault
thread that kills, stops and restarts them (and restarts Postgres when allowed)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

CLI = [sys.executable, "-m", "ledger_server.cli"]
PG_ADMIN_URL = os.environ.get("LEDGER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
PG_RESTART = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart"]
SERVER_FLAGS = (
    "--drain-seconds",
    "0.3",
    "--grace-seconds",
    "5",
    "--token-cache-seconds",
    "2",
    "--log-level",
    "INFO",
)


def cli(database_url: str, *args: str, timeout: float = 60) -> str:
    """Run one `ledger-server` admin command; its stdout."""
    done = subprocess.run(
        [*CLI, *args, "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ledger-server {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def create_tenant_and_token(database_url: str, tenant: str) -> str:
    """The tenant and an admin token, the way an operator makes them (the CLI)."""
    cli(database_url, "tenants", "create", tenant, "--name", "Bank test")
    out = cli(
        database_url, "tokens", "create", "--tenant", tenant, "--name", "bank-test", "--scopes", "admin"
    )
    return out.strip().splitlines()[0]


class Server:
    """One `ledger-server serve` on 127.0.0.1; after the first start always on the same port."""

    def __init__(self, name: str, database_url: str, log_path: Path) -> None:
        self.name = name
        self.database_url = database_url
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        """Start it and wait for its 'serving' line; a start that fails (the database
        restarting, the port not yet free) is tried again until `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._start_once(max(1.0, deadline - time.monotonic()))
                return
            except RuntimeError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def _start_once(self, timeout: float) -> None:
        with self.log_path.open("ab") as log:
            offset = log.tell()
            listen = f"127.0.0.1:{self.port}"
            self.proc = subprocess.Popen(
                [*CLI, "serve", "--listen", listen, "--database-url", self.database_url, *SERVER_FLAGS],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self._serving_line(offset)
            if line is not None:
                self.port = int(line["port"])
                return
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited early with {self.proc.returncode}; see {self.log_path}"
                )
            time.sleep(0.05)
        self.kill9()
        raise RuntimeError(f"{self.name} did not serve within {timeout:.0f}s; see {self.log_path}")

    def _serving_line(self, offset: int) -> dict[str, Any] | None:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            for raw in f:
                if raw.startswith(b'{"') and b'"serving"' in raw:
                    record: dict[str, Any] = json.loads(raw)
                    if record.get("msg") == "serving":
                        return record
        return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # by its pid: SIGKILL
            self.proc.wait(10)

    def terminate(self, timeout: float = 20) -> bool:
        """SIGTERM, wait for it to exit; SIGKILL after `timeout`. True if it exited by itself."""
        if self.proc is None or self.proc.poll() is not None:
            return True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            self.kill9()
            return False

    def pause(self, seconds: float) -> None:
        """SIGSTOP, then SIGCONT: calls in flight hang, connections stay open."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def wait_healthy(self, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return True
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        return False


def postgres_is_up(timeout: float = 2) -> bool:
    try:
        with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), connect_timeout=int(max(1, timeout))):
            return True
    except psycopg.Error:
        return False


def wait_postgres(timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if postgres_is_up():
            return True
        time.sleep(0.5)
    return False


class PostgresDatabase:
    """A fresh `ledger_chaos_<random>` database on 127.0.0.1, dropped by `drop()`."""

    def __init__(self) -> None:
        self.name = f"ledger_chaos_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), autocommit=True, connect_timeout=5) as c:
            c.execute(f'CREATE DATABASE "{self.name}"')
        self.url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{self.name}"

    def drop(self) -> None:
        wait_postgres(30)
        with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), autocommit=True, connect_timeout=5) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class FaultInjector(threading.Thread):
    """Every `interval` seconds (jittered) one fault; each round of len(kinds) faults has
    each kind once, in a random order:

    - `kill9`: SIGKILL a server, start it again at once on the same port;
    - `sigterm`: graceful stop (drain, grace), then start again;
    - `pause`: SIGSTOP a server for 0.5-2.5 s, then SIGCONT;
    - `pg_restart`: `pg_ctlcluster ... restart` while calls are in flight (Postgres only).
    """

    def __init__(
        self, servers: list[Server], kinds: list[str], interval: float, seed: int, log: Path
    ) -> None:
        super().__init__(name="faults", daemon=True)
        self.servers = servers
        self.kinds = kinds
        self.interval = interval
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.problems: list[str] = []
        self.events: list[dict[str, object]] = []
        self._stop_event = threading.Event()
        self._log = log

    def stop(self, timeout: float = 120) -> None:
        self._stop_event.set()
        self.join(timeout)

    def run(self) -> None:
        started = time.monotonic()
        deck: list[str] = []  # every kind once per round, in a random order
        while not self._stop_event.wait(self.rng.uniform(0.5, 1.5) * self.interval):
            for s in self.servers:  # a server that died of its own accord is a finding
                if not s.alive():
                    code = s.proc.returncode if s.proc is not None else None
                    self.problems.append(f"{s.name} died on its own (exit {code}); see {s.log_path}")
                    s.start()
            if not deck:
                deck = self.rng.sample(self.kinds, len(self.kinds))
            kind = deck.pop()
            server = self.rng.choice(self.servers)
            began = time.monotonic()
            try:
                detail = self._inject(kind, server)
            except Exception as exc:  # a fault that could not be done, or a server that won't start
                self.problems.append(f"fault {kind} on {server.name}: {type(exc).__name__}: {exc}")
                detail = f"failed: {exc}"
            self.counts[kind] += 1
            event = {
                "at_s": round(began - started, 2),
                "kind": kind,
                "server": server.name if kind != "pg_restart" else "postgres",
                "took_s": round(time.monotonic() - began, 2),
                "detail": detail,
            }
            self.events.append(event)
            with self._log.open("a") as f:
                f.write(json.dumps(event) + "\n")

    def _inject(self, kind: str, server: Server) -> str:
        if kind == "kill9":
            server.kill9()
            server.start()
            return "killed and restarted"
        if kind == "sigterm":
            clean = server.terminate()
            code = server.proc.returncode if server.proc is not None else None
            server.start()
            if not clean:
                self.problems.append(f"{server.name} did not stop within 20 s of SIGTERM")
            elif code != 0:
                self.problems.append(f"{server.name} exited with {code} after SIGTERM")
            return f"stopped (exit {code}) and restarted"
        if kind == "pause":
            seconds = self.rng.uniform(0.5, 2.5)
            server.pause(seconds)
            return f"paused {seconds:.1f}s"
        if kind == "pg_restart":
            done = subprocess.run(PG_RESTART, capture_output=True, text=True, timeout=120, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"pg_ctlcluster restart: {done.returncode} {done.stderr.strip()}")
            if not wait_postgres(60):
                raise RuntimeError("Postgres did not come back within 60 s")
            return "restarted"
        raise ValueError(f"unknown fault {kind}")
