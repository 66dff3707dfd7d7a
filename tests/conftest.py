"""Fixtures shared by the suite. Every storage test runs on SQLite and on Postgres.

Postgres: one fresh database per test session on 127.0.0.1:5432 (override with
LEDGER_TEST_PG_URL), emptied between tests. Where Postgres cannot be reached the
Postgres half is skipped with a message -- except under CI=true, where it fails."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from ledger_client import LedgerClient
from sqlalchemy import Engine, text

from ledger_server.api.server import LedgerServer
from ledger_server.core.admin import Admin
from ledger_server.core.auth import ADMIN
from ledger_server.core.ledger import Ledger
from ledger_server.store.engine import make_engine
from ledger_server.store.migrate import upgrade
from ledger_server.store.sql_store import SqlStore
from tests.blocking_view import ClientFactory, asyncio_client
from tests.support import Clock, ServerProcess, migrated_database, serving

PG_URL = os.environ.get("LEDGER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MUTABLE_TABLES = (
    "entries, transactions, transaction_changes, account_feed_clocks, idempotency_keys, accounts, api_tokens"
)
TENANT = "acme"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated Postgres database for this test session; dropped afterwards."""
    admin = PG_URL.replace("+psycopg", "")
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI requires Postgres at {PG_URL}: {exc}")
        pytest.skip(f"Postgres not reachable at {PG_URL}; Postgres tests skipped ({exc})")
    with conn, migrated_database(conn, PG_URL, "ledger_test") as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "ledger.db"
    engine = make_engine(f"sqlite:///{path}", pool_size=1)
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_url")
    engine = make_engine(url, pool_size=1)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {MUTABLE_TABLES} RESTART IDENTITY CASCADE"))
        conn.execute(text("DELETE FROM tenants WHERE id <> 'default'"))
    engine.dispose()
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=16)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> Iterator[SqlStore]:
    store = SqlStore(engine)
    yield store
    store.close()


@pytest.fixture
def ledger(store: SqlStore) -> Ledger:
    return Ledger(store)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def book(store: SqlStore, clock: Clock) -> Ledger:
    """A ledger on the test's clock."""
    return Ledger(store, clock)


@pytest.fixture
def admin(store: SqlStore) -> Admin:
    return Admin(store)


@pytest.fixture
def token(admin: Admin) -> str:
    """An admin-scope token of tenant `acme`."""
    admin.create_tenant(TENANT, "Acme")
    return admin.create_token(TENANT, "test-suite", [ADMIN])[1]


@pytest.fixture
def server(ledger: Ledger, store: SqlStore) -> Iterator[LedgerServer]:
    with serving(ledger, store) as srv:
        yield srv


@pytest.fixture
def client(server: LedgerServer, token: str) -> Iterator[LedgerClient]:
    with LedgerClient(f"127.0.0.1:{server.port}", token=token, timeout=20.0) as c:
        yield c


@pytest.fixture
def server_process(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """A real `ledger-server serve` process on a free port; ended by pid after the test."""
    proc = ServerProcess(database_url, tmp_path / "server.log", "--log-level", "DEBUG")
    yield proc
    proc.kill()


@pytest.fixture(params=["blocking", "asyncio"])
def make_client(request: pytest.FixtureRequest) -> ClientFactory:
    """Each test that makes its client with this runs against LedgerClient and against
    AsyncLedgerClient (seen through BlockingView): the blocking client is written from the
    asyncio one, and these tests show the two behave alike."""
    return LedgerClient if request.param == "blocking" else asyncio_client
