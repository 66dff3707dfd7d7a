"""Alembic migrations produce exactly the schema the store queries (schema.py), and bring
existing databases up to it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text

from ledger_server.core.ledger import Ledger
from ledger_server.core.model import (
    Account,
    AccountChanges,
    AccountStatus,
    Creator,
    Direction,
    NewAccount,
    NewTransaction,
    StatusChange,
)
from ledger_server.store.engine import make_engine
from ledger_server.store.migrate import current_revision, head_revision, upgrade
from ledger_server.store.rows import from_micros
from ledger_server.store.schema import metadata
from ledger_server.store.sql_store import SqlStore
from tests.support import migrated_database


def test_database_is_at_head(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()


def test_migrated_schema_matches_schema_module(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


@contextmanager
def database_at(revision: str, database_url: str, tmp_path: Path) -> Iterator[Engine]:
    """A new database of the test's backend, migrated up to `revision` only."""
    if database_url.startswith("sqlite"):
        engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}", pool_size=2)
        upgrade(engine, revision)
        yield engine
        engine.dispose()
        return
    admin_dsn = database_url.replace("+psycopg", "").rsplit("/", 1)[0] + "/postgres"
    with (
        psycopg.connect(admin_dsn, autocommit=True) as admin,
        migrated_database(admin, database_url, "ledger_old", revision) as url,
    ):
        engine = make_engine(url, pool_size=2)
        yield engine
        engine.dispose()


def test_accounts_opened_before_0004_work_after_it(database_url: str, tmp_path: Path) -> None:
    with database_at("0003", database_url, tmp_path) as engine:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO accounts (id, tenant_id, kind, external_ref, currency, balance_floor, "
                    "status, metadata, posted, pending, created_at, updated_at) VALUES ('a1', 'default', "
                    "'customer', 'old', 'USD', 0, 'frozen', '{}', 0, 0, 1, 1)"
                )
            )
        upgrade(engine)
        store = SqlStore(engine)
        try:
            ledger = Ledger(store)
            old = ledger.get_account("default", "a1")
            assert (old.status, old.status_reason) == (AccountStatus.FROZEN, "")
            closed = ledger.change_account_status("default", "a1", AccountStatus.CLOSED, "migrated")
            assert ledger.get_account("default", "a1") == closed
        finally:
            store.close()


def test_the_latest_status_change_before_0005_starts_each_accounts_history(
    database_url: str, tmp_path: Path
) -> None:
    with database_at("0004", database_url, tmp_path) as engine:
        with engine.begin() as conn:
            for id_, status, changed_at in (("f", "frozen", 5), ("c", "closed", 7), ("n", "active", None)):
                conn.execute(
                    text(
                        "INSERT INTO accounts (id, tenant_id, kind, external_ref, currency, balance_floor, "
                        "status, metadata, posted, pending, created_at, updated_at, status_reason, "
                        "status_changed_at, status_changed_by_token_id, status_changed_by_token_name) "
                        "VALUES (:id, 'default', 'customer', '', 'USD', 0, :status, '{}', 0, 0, 1, 1, "
                        "'why', :at, 't1', 'ops')"
                    ),
                    {"id": id_, "status": status, "at": changed_at},
                )
        upgrade(engine)
        store = SqlStore(engine)
        try:
            ledger = Ledger(store)
            ops = Creator("t1", "ops")
            (frozen,) = ledger.list_status_changes("default", "f", 10, "")[0]
            assert frozen == StatusChange(
                AccountStatus.ACTIVE, AccountStatus.FROZEN, "why", from_micros(5), ops
            )
            (closed,) = ledger.list_status_changes("default", "c", 10, "")[0]
            assert (closed.previous, closed.status, closed.changed_at) == (
                None,
                AccountStatus.CLOSED,
                from_micros(7),
            )
            assert ledger.list_status_changes("default", "n", 10, "")[0] == []
            ledger.change_account_status("default", "f", AccountStatus.ACTIVE, "cleared")
            assert [c.reason for c in ledger.list_status_changes("default", "f", 10, "")[0]] == [
                "cleared",
                "why",
            ]
        finally:
            store.close()


def test_accounts_from_before_0006_start_an_empty_update_history(database_url: str, tmp_path: Path) -> None:
    with database_at("0005", database_url, tmp_path) as engine:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO accounts (id, tenant_id, kind, external_ref, currency, balance_floor, "
                    "status, metadata, posted, pending, created_at, updated_at) VALUES ('a1', 'default', "
                    "'customer', 'old', 'USD', 0, 'active', '{\"k\":\"v\"}', 0, 0, 1, 1)"
                )
            )
        upgrade(engine)
        store = SqlStore(engine)
        try:
            ledger = Ledger(store)
            assert ledger.list_account_updates("default", "a1", 10, "")[0] == []
            ledger.update_account("default", "a1", AccountChanges(external_ref="new"), "renamed")
            (renamed,) = ledger.list_account_updates("default", "a1", 10, "")[0]
            assert (renamed.previous, renamed.current, renamed.reason) == (
                AccountChanges(external_ref="old"),
                AccountChanges(external_ref="new"),
                "renamed",
            )
            assert ledger.get_account("default", "a1").metadata == {"k": "v"}
        finally:
            store.close()


def test_transactions_from_before_0009_open_the_change_feed(database_url: str, tmp_path: Path) -> None:
    with database_at("0008", database_url, tmp_path) as engine:
        store = SqlStore(engine)
        try:
            ledger = Ledger(store)  # its writes touch nothing 0009 adds
            account = ledger.create_account("default", NewAccount("old", "USD"))
            assert isinstance(account, Account)
            posted = [
                ledger.post_transaction("default", NewTransaction(account.id, Direction.CREDIT, n, "USD"))
                for n in (3, 4)
            ]
        finally:
            store.close()
        upgrade(engine)
        store = SqlStore(engine)
        try:
            ledger = Ledger(store)
            later = ledger.post_transaction("default", NewTransaction(account.id, Direction.DEBIT, 5, "USD"))
            changes = ledger.list_transaction_changes("default", 10, "").changes
            assert [(c.transaction, c.created) for c, _ in changes] == [
                (posted[0], True),
                (posted[1], True),
                (later, True),
            ]
        finally:
            store.close()
