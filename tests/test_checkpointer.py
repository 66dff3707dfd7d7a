"""SQLite checkpoints run in a thread of their own (store/checkpointer.py): what the writer
commits reaches the database file without the writer copying it there."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ledger_server.core.model import Tenant
from ledger_server.store.checkpointer import BACKSTOP_PAGES
from ledger_server.store.engine import make_engine
from ledger_server.store.sql_store import SqlStore
from ledger_server.store.sql_unit import SqlUnit

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
WAIT_SECONDS = 20  # for the thread to have run: far beyond its INTERVAL_SECONDS


@pytest.fixture
def sqlite_store(tmp_path: Path, sqlite_template: Path) -> Iterator[SqlStore]:
    path = tmp_path / "ledger.db"
    shutil.copy(sqlite_template, path)
    store = SqlStore(make_engine(f"sqlite:///{path}"))
    yield store
    store.close()


def inserting(tenant: Tenant) -> Callable[[SqlUnit], None]:
    def work(unit: SqlUnit) -> None:
        unit.insert_tenant(tenant)

    return work


def tenants_in_the_file_alone(database: Path, copy: Path) -> set[str]:
    """The tenants in the database file itself, read from a copy without its WAL."""
    shutil.copy(database, copy)
    with sqlite3.connect(copy) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM tenants")}


def test_commits_reach_the_database_file_though_the_wal_is_far_below_the_backstop(
    sqlite_store: SqlStore, tmp_path: Path
) -> None:
    made = {f"tenant-{i}" for i in range(3)}
    for tenant_id in sorted(made):  # each a commit of the group-commit writer
        sqlite_store.write("key", inserting(Tenant(tenant_id, tenant_id, NOW)))
    # A few pages of WAL: neither the writer's own checkpoint (at BACKSTOP_PAGES) nor
    # SQLite's default one (1,000 pages) would copy them into the file.
    deadline = time.monotonic() + WAIT_SECONDS
    while not made <= (found := tenants_in_the_file_alone(tmp_path / "ledger.db", tmp_path / "copy.db")):
        assert time.monotonic() < deadline, f"not checkpointed: {sorted(made - found)}"
        time.sleep(0.05)


def test_the_writer_checkpoints_only_at_the_backstop(sqlite_store: SqlStore) -> None:
    def autocheckpoint(unit: SqlUnit) -> int:
        return int(unit._execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    assert sqlite_store.write("key", autocheckpoint) == BACKSTOP_PAGES
