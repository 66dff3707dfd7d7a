"""WatchTransactionChanges, the change feed as a server stream, on SQLite and Postgres:
the backlog, then each commit's changes as this server commits them (the tests set a poll
interval of an hour, so nothing else could deliver them); resumable from any change or
begun at the feed's end, one tenant's only (also where watches of two tenants share
pages), refused like any call and cut off once its token is revoked, ended by the
server's shutdown with a retryable status, and followed by both clients across a restart
with no change skipped or repeated."""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from ledger.v1 import transaction_pb2, transaction_service_pb2, transaction_service_pb2_grpc
from ledger_client import LedgerClient, LedgerError
from sqlalchemy import Engine

from ledger_server.api.server import LedgerServer
from ledger_server.core.admin import Admin
from ledger_server.core.auth import ADMIN, Authenticator
from ledger_server.core.ledger import Ledger
from ledger_server.core.model import Direction, NewTransaction
from ledger_server.store.sql_store import SqlStore
from tests.blocking_view import ClientFactory
from tests.support import server_settings
from tests.test_authorization import reason_of
from tests.test_change_feed import (
    assert_followed_every_change_once,
    changes_in_feed,
    funded_accounts,
    write_concurrently,
)

HOUR = 3600.0  # the poll interval: a change that arrives came with its commit's wake-up
WAIT = 60.0  # at most this long for a change (a bound against hanging, not a speed test)
CREATED = transaction_service_pb2.TRANSACTION_CHANGE_TYPE_CREATED
UPDATED = transaction_service_pb2.TRANSACTION_CHANGE_TYPE_UPDATED


@contextmanager
def running(ledger: Ledger, store: SqlStore, port: int = 0, grace: float = 0) -> Iterator[LedgerServer]:
    """A server polling the feed hourly only, stopped with `grace` seconds at the end."""
    server = LedgerServer(
        ledger,
        Authenticator(store, cache_seconds=0),
        server_settings(listen=f"127.0.0.1:{port}", watch_poll_seconds=HOUR),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop(grace)


@pytest.fixture
def address(ledger: Ledger, store: SqlStore) -> Iterator[str]:
    with running(ledger, store) as server:
        yield f"127.0.0.1:{server.port}"


class Watcher:
    """A client's watch_transaction_changes iterated by a thread of its own, each change
    (or the error that ended it) put on a queue."""

    def __init__(self, client: LedgerClient, **options: Any) -> None:
        self._changes: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._watch, args=(client, options), daemon=True)
        self._thread.start()

    def _watch(self, client: LedgerClient, options: dict[str, Any]) -> None:
        try:
            for change in client.watch_transaction_changes(**options):
                self._changes.put(change)
        except Exception as exc:
            self._changes.put(exc)

    def take(self, count: int) -> list[transaction_service_pb2.TransactionChange]:
        taken = []
        for _ in range(count):
            item = self._changes.get(timeout=WAIT)
            if isinstance(item, Exception):
                raise item
            taken.append(item)
        return taken

    def nothing_more(self) -> bool:
        return self._changes.empty()

    def end(self) -> None:
        """After its client is closed: the thread ends."""
        self._thread.join(timeout=WAIT)
        assert not self._thread.is_alive()


def what(changes: list[transaction_service_pb2.TransactionChange]) -> list[tuple[int, int, int]]:
    return [(c.type, c.transaction.amount, c.transaction.status) for c in changes]


POSTED = transaction_pb2.TRANSACTION_STATUS_POSTED


def test_a_watch_sends_the_backlog_then_each_commit_as_it_happens(
    address: str, token: str, make_client: ClientFactory
) -> None:
    with make_client(address, token=token) as client:
        account = client.create_account(currency="USD").name
        client.credit(account, 100, "USD")
        client.debit(account, 30, "USD")
        watcher = Watcher(client, page_size=1)
        assert what(watcher.take(2)) == [(CREATED, 100, POSTED), (CREATED, 30, POSTED)]
        hold = client.create_hold(account, 20, "USD")
        assert what(watcher.take(1)) == [(CREATED, 20, transaction_pb2.TRANSACTION_STATUS_PENDING)]
        client.capture_hold(hold.name, amount=5)
        assert what(watcher.take(2)) == [
            (CREATED, 5, POSTED),
            (UPDATED, 20, transaction_pb2.TRANSACTION_STATUS_CAPTURED),
        ]
        assert watcher.nothing_more()
    watcher.end()


def test_each_message_holds_at_most_page_size_changes_and_the_token_after_them(
    address: str, token: str
) -> None:
    with LedgerClient(address, token=token) as client:
        account = client.create_account(currency="USD").name
        for amount in range(1, 6):
            client.credit(account, amount, "USD")
        with grpc.insecure_channel(address) as channel:
            stream = transaction_service_pb2_grpc.TransactionServiceStub(channel).WatchTransactionChanges(
                transaction_service_pb2.WatchTransactionChangesRequest(page_size=2),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=WAIT,
            )
            messages = [next(stream) for _ in range(3)]
            stream.cancel()
    assert [[c.transaction.amount for c in m.changes] for m in messages] == [[1, 2], [3, 4], [5]]
    assert all(m.next_page_token == m.changes[-1].resume_token for m in messages)


def test_a_watch_starts_right_after_the_change_whose_token_it_is_given(address: str, token: str) -> None:
    with LedgerClient(address, token=token) as client:
        account = client.create_account(currency="USD").name
        for amount in (1, 2, 3):
            client.credit(account, amount, "USD")
        first = client.list_transaction_changes(page_size=1).changes[0]
        watcher = Watcher(client, page_token=first.resume_token)
        assert [c.transaction.amount for c in watcher.take(2)] == [2, 3]
        client.credit(account, 4, "USD")
        assert [c.transaction.amount for c in watcher.take(1)] == [4]
    watcher.end()


def test_a_watch_sees_its_own_tenants_changes_only(address: str, token: str, admin: Admin) -> None:
    admin.create_tenant("globex", "Globex")
    other = admin.create_token("globex", "globex-admin", [ADMIN])[1]
    with LedgerClient(address, token=token) as acme, LedgerClient(address, token=other) as globex:
        acme.credit(acme.create_account(currency="USD").name, 7, "USD")
        acmes = Watcher(acme)  # from the start of acme's feed: its first page is kept to share
        assert [c.transaction.amount for c in acmes.take(1)] == [7]
        watcher = Watcher(globex)  # from the start of globex's feed, the same (empty) token
        theirs = globex.create_account(currency="USD").name
        globex.credit(theirs, 9, "USD")
        (change,) = watcher.take(1)
        assert (change.transaction.account, change.transaction.amount) == (theirs, 9)
        assert watcher.nothing_more() and acmes.nothing_more()
    watcher.end()
    acmes.end()


def test_a_watch_sends_nothing_once_its_token_is_revoked(address: str, token: str, admin: Admin) -> None:
    record, secret = admin.create_token("acme", "follower", ["transactions:read"])
    with LedgerClient(address, token=token) as writer, LedgerClient(address, token=secret) as follower:
        account = writer.create_account(currency="USD").name
        writer.credit(account, 1, "USD")
        watcher = Watcher(follower)
        assert [c.transaction.amount for c in watcher.take(1)] == [1]
        admin.revoke_token(record.id)
        writer.credit(account, 2, "USD")  # committed: the stream wakes, and ends unsent
        with pytest.raises(LedgerError) as ended:
            watcher.take(1)
    assert (ended.value.code, ended.value.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    watcher.end()


@pytest.mark.parametrize(
    ("options", "field"), [({"page_size": -1}, "page_size"), ({"page_token": "zz"}, "page_token")]
)
def test_a_bad_request_is_refused_before_anything_is_sent(
    address: str, token: str, make_client: ClientFactory, options: dict[str, Any], field: str
) -> None:
    with make_client(address, token=token) as client, pytest.raises(LedgerError) as refused:
        next(iter(client.watch_transaction_changes(**options)))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.attempts == 1  # final: not retried
    assert field in str(refused.value)


def test_a_shutdown_ends_an_open_watch_at_once_with_a_retryable_status(
    ledger: Ledger, store: SqlStore, token: str
) -> None:
    """With a grace period of a minute the stream still ends when the shutdown begins, with
    UNAVAILABLE (SHUTTING_DOWN), which clients retry, not the CANCELLED of its end."""
    with running(ledger, store, grace=WAIT) as server:
        with LedgerClient(f"127.0.0.1:{server.port}", token=token) as client:
            client.credit(client.create_account(currency="USD").name, 1, "USD")
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        stream = transaction_service_pb2_grpc.TransactionServiceStub(channel).WatchTransactionChanges(
            transaction_service_pb2.WatchTransactionChangesRequest(),
            metadata=(("authorization", f"Bearer {token}"),),
        )
        assert len(next(stream).changes) == 1
        stopping = threading.Thread(target=server.stop, args=(WAIT,))
        stopping.start()
        with pytest.raises(grpc.RpcError) as ended:
            next(stream)
        stopping.join(timeout=WAIT)
        channel.close()
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(ended.value)[0] == "SHUTTING_DOWN"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_a_client_follows_the_feed_across_a_restart_without_a_gap_or_a_repeat(
    ledger: Ledger, store: SqlStore, token: str, make_client: ClientFactory
) -> None:
    port = free_port()
    with make_client(
        f"127.0.0.1:{port}", token=token, max_attempts=100, initial_backoff=0.05, max_backoff=0.2
    ) as client:
        with running(ledger, store, port, grace=WAIT):
            account = client.create_account(currency="USD").name
            client.credit(account, 1, "USD")
            watcher = Watcher(client)
            assert [c.transaction.amount for c in watcher.take(1)] == [1]
        # The server is down, the client retrying; a commit by another process meanwhile:
        ledger.post_transaction("acme", NewTransaction(account.split("/")[1], Direction.CREDIT, 2, "USD"))
        with running(ledger, store, port):
            client.credit(account, 3, "USD")
            assert [c.transaction.amount for c in watcher.take(2)] == [2, 3]
            assert watcher.nothing_more()
    watcher.end()


def test_a_watch_while_many_write_sees_every_change_once_in_account_order(
    address: str, token: str, engine: Engine
) -> None:
    """As test_change_feed's follower test, following with a watch instead of pages: on
    Postgres the writers commit out of the order they numbered their transactions."""
    with LedgerClient(address, token=token) as client, LedgerClient(address, token=token) as following:
        accounts = funded_accounts(client)
        watcher = Watcher(following, page_size=7)
        with ThreadPoolExecutor(6) as pool:
            write_concurrently(client, accounts, pool)
        followed = watcher.take(changes_in_feed(engine))
        assert watcher.nothing_more()
        assert_followed_every_change_once(client, engine, accounts, followed)
    watcher.end()


def test_a_watch_from_the_end_sends_only_what_is_committed_after_it_began(
    address: str, token: str, make_client: ClientFactory
) -> None:
    with make_client(address, token=token) as client:
        account = client.create_account(currency="USD").name
        client.credit(account, 1, "USD")
        watcher = Watcher(client, start_at_end=True)
        amount = 2
        while watcher.nothing_more():  # commits until the watch, begun at the end, sends one
            assert amount < 1000, "the watch sent nothing"
            client.credit(account, amount, "USD")
            amount += 1
        first = watcher.take(1)[0].transaction.amount
        rest = [c.transaction.amount for c in watcher.take(amount - 1 - first)]
        assert first > 1 and rest == list(range(first + 1, amount))
    watcher.end()
