"""Postgres: a server's watches are woken by other processes' commits, announced with
NOTIFY and heard with LISTEN (store/commit_notices.py), not only at their next poll. The
servers here poll hourly, so a change that arrives came with an announcement: from
another server, from a process that ends right after its commits (as `ledger-server
expire` does), and after the announcing or the listening connection was cut."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from ledger_client import LedgerClient

from ledger_server.core.admin import Admin
from ledger_server.core.auth import ADMIN
from ledger_server.core.ledger import Ledger
from ledger_server.core.model import Direction, NewTransaction
from ledger_server.store import commit_notices
from ledger_server.store.commit_notices import ANNOUNCER_NAME, CHANNEL, LISTENER_NAME, Announcer, Listener
from ledger_server.store.engine import make_engine
from ledger_server.store.sql_store import SqlStore
from tests.support import wait_until
from tests.test_watch_changes import WAIT, Watcher, running


@pytest.fixture
def stores(pg_url: str) -> Iterator[tuple[SqlStore, SqlStore]]:
    """Two stores on one database, as two server processes would have."""
    pair = SqlStore(make_engine(pg_url, pool_size=4)), SqlStore(make_engine(pg_url, pool_size=4))
    yield pair
    for store in pair:
        store.close()


@pytest.fixture
def tenant(stores: tuple[SqlStore, SqlStore]) -> tuple[str, str]:
    """A tenant of this test alone (the database is the session's) and its admin token."""
    name = f"notices-{uuid.uuid4().hex[:8]}"
    admin = Admin(stores[0])
    admin.create_tenant(name, "")
    return name, admin.create_token(name, "notices", [ADMIN])[1]


def database(pg_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True)


def backends(conn: psycopg.Connection[Any], application_name: str) -> set[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
        (application_name,),
    )
    return {pid for (pid,) in rows}


def cut(conn: psycopg.Connection[Any], application_name: str) -> set[int]:
    """End the database's connections of that name, as a database restart would."""
    pids = backends(conn, application_name)
    assert pids, f"no {application_name!r} connection to cut"
    conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (list(pids),))
    return pids


def amounts(watcher: Watcher, count: int) -> list[int]:
    return [c.transaction.amount for c in watcher.take(count)]


@pytest.fixture
def follow(
    stores: tuple[SqlStore, SqlStore], tenant: tuple[str, str], pg_url: str
) -> Iterator[tuple[Watcher, LedgerClient]]:
    """A watch on one server, caught up after a first change, and a client of another."""
    watched, writing = stores
    with (
        running(Ledger(watched), watched) as first,
        running(Ledger(writing), writing) as second,
        LedgerClient(f"127.0.0.1:{first.port}", token=tenant[1]) as follower,
        LedgerClient(f"127.0.0.1:{second.port}", token=tenant[1], max_attempts=1) as writer,
    ):
        # Both servers listening before the first write: a process that finds nobody else
        # listening announces nothing for CHECK_SECONDS, and these servers poll hourly.
        with database(pg_url) as conn:
            wait_until(lambda: len(backends(conn, LISTENER_NAME)) == 2, WAIT, "both servers listening")
        account = writer.create_account(currency="USD").name
        watcher = Watcher(follower)
        writer.credit(account, 1, "USD")
        assert amounts(watcher, 1) == [1]
        yield watcher, writer
        follower.close()
        watcher.end()


def account_of(writer: LedgerClient) -> str:
    return writer.list_accounts().accounts[0].name


def test_a_watch_is_woken_by_another_servers_commits(follow: tuple[Watcher, LedgerClient]) -> None:
    watcher, writer = follow
    account = account_of(writer)
    for amount in (2, 3, 4):
        writer.credit(account, amount, "USD")
        assert amounts(watcher, 1) == [amount]


def test_the_last_commits_of_a_process_that_ends_at_once_are_announced(
    follow: tuple[Watcher, LedgerClient],
    pg_url: str,
    tenant: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first commit is announced at once; the second comes while the announcer waits
    # out its spacing, made an hour here, so only its announcement at close() tells of it.
    monkeypatch.setattr(commit_notices, "SPACING_SECONDS", 3600.0)
    watcher, writer = follow
    account_id = account_of(writer).split("/")[1]
    ending = SqlStore(make_engine(pg_url, pool_size=2))
    for amount in (2, 3):
        Ledger(ending).post_transaction(
            tenant[0], NewTransaction(account_id, Direction.CREDIT, amount, "USD")
        )
        if amount == 2:
            assert amounts(watcher, 1) == [2]  # announced
    ending.close()
    assert amounts(watcher, 1) == [3]


@pytest.mark.parametrize("connection", [LISTENER_NAME, ANNOUNCER_NAME])
def test_a_cut_connection_is_made_again_and_watches_are_woken_as_before(
    follow: tuple[Watcher, LedgerClient], pg_url: str, connection: str
) -> None:
    """The listening connection comes back by itself; the announcing one at the next
    announcement, whose first try fails on the dead connection."""
    watcher, writer = follow
    with database(pg_url) as conn:
        before = cut(conn, connection)
        if connection == LISTENER_NAME:
            wait_until(lambda: backends(conn, LISTENER_NAME) - before, WAIT, "listening again")
    writer.credit(account_of(writer), 2, "USD")
    assert amounts(watcher, 1) == [2]


def test_a_listener_ignores_its_own_processs_announcements(pg_url: str) -> None:
    conninfo = pg_url.replace("+psycopg", "")
    heard = {"ours": 0, "another": 0}
    lock = threading.Lock()

    def hearing(who: str) -> Any:
        def count() -> None:
            with lock:
                heard[who] += 1

        return count

    ours, another = (
        Listener(conninfo, "ours", hearing("ours")),
        Listener(conninfo, "another", hearing("another")),
    )
    try:
        wait_until(
            lambda: heard == {"ours": 1, "another": 1}, WAIT, "both listening (each hears once as it starts)"
        )
        with database(pg_url) as conn:
            conn.execute("SELECT pg_notify(%s, 'ours')", (CHANNEL,))
            wait_until(lambda: heard["another"] == 2, WAIT, "the other listener heard it")
            conn.execute("SELECT pg_notify(%s, 'third')", (CHANNEL,))
            wait_until(lambda: heard["another"] == 3 and heard["ours"] >= 2, WAIT, "both heard the third")
        assert heard == {"ours": 2, "another": 3}
    finally:
        ours.close()
        another.close()


def test_a_process_announces_nothing_while_no_other_process_listens(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit_notices, "CHECK_SECONDS", 0.0)  # look at every announcement
    conninfo = pg_url.replace("+psycopg", "")
    heard: list[str] = []
    own = Listener(conninfo, "ours", lambda: heard.append("ours"))
    announcer = Announcer(conninfo, "ours", lambda: own.backend_pid)
    other: Listener | None = None
    try:
        wait_until(lambda: own.backend_pid is not None, WAIT, "our own listener listening")
        announcer.committed()
        wait_until(lambda: announcer.spared == 1, WAIT, "the commit considered")
        assert announcer.announced == 0  # only this process's own listener listens
        other = Listener(conninfo, "another", lambda: heard.append("another"))
        wait_until(
            lambda: other is not None and other.backend_pid is not None, WAIT, "another process listening"
        )
        announcer.committed()
        wait_until(
            lambda: heard.count("another") == 2, WAIT, "the other process heard it (and once as it started)"
        )
        assert (announcer.announced, announcer.spared) == (1, 1)
    finally:
        announcer.close()
        own.close()
        if other is not None:
            other.close()
