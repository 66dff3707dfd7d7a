"""A call's deadline bounds the database work it triggers: statements and lock waits end
with it (Postgres statement_timeout and lock_timeout), a group-committed unit whose
deadline has passed is refused unrun, and none of it is half-applied. Row locks are held
by a second, real connection; nothing of the database is mocked."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
import psycopg
import pytest
from ledger.v1 import transaction_pb2, transaction_service_pb2, transaction_service_pb2_grpc
from ledger_client import LedgerClient, LedgerError

from ledger_server.api.server import LedgerServer
from ledger_server.core.deadline import reset_deadline, set_deadline
from ledger_server.core.errors import DeadlineExceeded, StoreUnavailable
from ledger_server.core.ledger import Ledger
from ledger_server.core.model import Account, Direction, NewAccount, NewTransaction, Tenant
from ledger_server.store import failures
from ledger_server.store.sql_store import SqlStore
from ledger_server.store.sql_unit import SqlUnit
from tests.support import invariant_violations, wait_until, writer_held

T = TypeVar("T")
TENANT = "acme"
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
postgres_only = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def within(seconds: float | None, fn: Callable[[], T]) -> T:
    """`fn()` with the deadline `seconds` from now (None: no deadline), as the interceptor
    sets it for a call; run in a thread of its own and awaited boundedly, so that a test
    of a missing bound fails instead of hanging."""

    def run() -> T:
        token = set_deadline(None if seconds is None else time.monotonic() + seconds)
        try:
            return fn()
        finally:
            reset_deadline(token)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result(timeout=60)


@contextmanager
def row_locked(url: str, sql: str, *params: object) -> Iterator[None]:
    """Another connection holds the locks `sql` takes until the block ends."""
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        conn.execute(sql, params)
        try:
            yield
        finally:
            conn.rollback()


def credit_cmd(account_id: str, amount: int) -> NewTransaction:
    return NewTransaction(account_id=account_id, direction=Direction.CREDIT, amount=amount, currency="USD")


def posted(ledger: Ledger, account_id: str) -> int:
    return ledger.get_account(TENANT, account_id).posted


@pytest.fixture
def account_id(ledger: Ledger, token: str) -> str:
    """An account of tenant acme (made by `token`) holding 100."""
    account = ledger.create_account(TENANT, NewAccount(external_ref="", currency="USD"))
    assert isinstance(account, Account)
    ledger.post_transaction(TENANT, credit_cmd(account.id, 100))
    return account.id


# -- the store ------------------------------------------------------------------------


def test_a_unit_whose_deadline_has_passed_is_refused_unrun(store: SqlStore) -> None:
    ran = threading.Event()

    def work(unit: SqlUnit) -> None:
        ran.set()
        unit.insert_tenant(Tenant("late", "late", NOW))

    with pytest.raises(DeadlineExceeded):
        within(-0.001, lambda: store.write("key", work))
    assert not ran.is_set()
    assert within(None, lambda: store.write("key", lambda u: "on time")) == "on time"
    with store.reading() as r:
        assert "late" not in {t.id for t in r.list_tenants()}


@postgres_only
def test_a_write_waiting_on_a_row_lock_ends_with_its_deadline(
    ledger: Ledger, account_id: str, database_url: str
) -> None:
    with row_locked(database_url, "SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", account_id):
        with pytest.raises(DeadlineExceeded):
            within(0.3, lambda: ledger.post_transaction(TENANT, credit_cmd(account_id, 5)))
        assert posted(ledger, account_id) == 100  # reads do not wait on row locks
    assert posted(ledger, account_id) == 100
    ledger.post_transaction(TENANT, credit_cmd(account_id, 5))
    assert posted(ledger, account_id) == 105


@postgres_only
def test_without_a_deadline_a_lock_wait_is_capped_and_retryable(
    ledger: Ledger, account_id: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(failures, "MAX_LOCK_WAIT", 0.2)
    with row_locked(database_url, "SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", account_id):
        with pytest.raises(StoreUnavailable):
            within(None, lambda: ledger.post_transaction(TENANT, credit_cmd(account_id, 5)))
        # A long deadline is capped alike: the cap fired, not the deadline, so retry.
        with pytest.raises(StoreUnavailable):
            within(60, lambda: ledger.post_transaction(TENANT, credit_cmd(account_id, 5)))
    assert posted(ledger, account_id) == 100


@postgres_only
def test_a_stuck_row_lock_fails_its_unit_alone_not_its_batch(
    store: SqlStore, ledger: Ledger, account_id: str, database_url: str
) -> None:
    """Units of one writer share a transaction: the one waiting on a row lock held
    elsewhere ends with its deadline, and the rest of its batch commits."""
    hold, holding = threading.Event(), threading.Event()

    def blocker(_: SqlUnit) -> None:
        holding.set()
        hold.wait(30)

    def stuck(unit: SqlUnit) -> None:
        unit.lock_customer_account(TENANT, account_id)

    def fine(unit: SqlUnit) -> str:
        unit.insert_tenant(Tenant("fine", "fine", NOW))
        return "fine"

    with row_locked(database_url, "SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", account_id):
        pool = ThreadPoolExecutor(3)
        first = pool.submit(within, None, lambda: store.write("key", blocker))
        assert holding.wait(30)
        futures: list[Future[Any]] = [pool.submit(within, 2.0, lambda: store.write("key", stuck))]
        wait_until(lambda: store.queued_writes() == 1)
        futures.append(pool.submit(within, None, lambda: store.write("key", fine)))
        wait_until(lambda: store.queued_writes() == 2)  # both wait in the same writer's queue
        hold.set()
        first.result(30)
        with pytest.raises(DeadlineExceeded):
            futures[0].result(60)
        assert futures[1].result(60) == "fine"  # committed while the lock is still held
        pool.shutdown(wait=True)
    with store.reading() as r:
        assert "fine" in {t.id for t in r.list_tenants()}


@postgres_only
def test_a_read_waiting_on_a_lock_ends_with_its_deadline(
    ledger: Ledger, account_id: str, database_url: str
) -> None:
    with (
        row_locked(database_url, "LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE"),
        pytest.raises(DeadlineExceeded),
    ):
        within(0.3, lambda: ledger.get_account(TENANT, account_id))
    assert posted(ledger, account_id) == 100


@postgres_only
def test_a_slow_read_statement_ends_with_its_deadline(store: SqlStore) -> None:
    def sleep() -> None:
        with store.reading() as r:
            r._conn.exec_driver_sql("SELECT pg_sleep(30)")

    with pytest.raises(DeadlineExceeded):
        within(0.3, sleep)


# -- end to end -----------------------------------------------------------------------


def create_transaction_codes(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The status codes of the CreateTransaction calls in the call log so far."""
    return [
        str(getattr(record, "code", ""))
        for record in caplog.records
        if record.msg == "rpc" and getattr(record, "method", "").endswith("/CreateTransaction")
    ]


@postgres_only
def test_a_call_blocked_by_a_row_lock_answers_by_its_deadline_and_changes_nothing(
    client: LedgerClient, database_url: str, engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ledger.rpc")
    account = client.create_account(currency="USD")
    client.credit(account.name, 100, "USD")
    account_id = account.name.removeprefix("accounts/")
    request_id = str(uuid.uuid4())

    def answers() -> set[str]:
        return set(create_transaction_codes(caplog))

    before = answers()
    with row_locked(database_url, "SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", account_id):
        with pytest.raises(LedgerError) as info:
            client.debit(account.name, 30, "USD", request_id=request_id, timeout=0.5)
        assert info.value.code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
        # The server's own answer (its call log) comes while the lock is still held: its
        # database work ended with the deadline instead of queueing behind the lock.
        wait_until(lambda: bool(answers() - before - {"OK"}))
        assert answers() - before <= {"DEADLINE_EXCEEDED", "UNAVAILABLE"}
        assert client.get_account(account.name).balance.posted == 100
    spent = client.debit(account.name, 30, "USD", request_id=request_id)
    assert spent.ending_balance == 70
    assert client.debit(account.name, 30, "USD", request_id=request_id) == spent  # applied once
    assert client.get_account(account.name).balance.posted == 70
    assert invariant_violations(engine) == []


def test_a_call_whose_deadline_passes_while_its_write_queues_is_logged_as_such(
    client: LedgerClient, store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The call ends at its deadline with its unit still queued (on the event loop, its
    greenlet is cancelled): its log line says DEADLINE_EXCEEDED, not OK, and the writer
    later refuses the unit unrun."""
    caplog.set_level(logging.INFO, logger="ledger.rpc")
    account = client.create_account(currency="USD")
    released = threading.Event()
    with writer_held(store, released, key=account.name.removeprefix("accounts/")):
        with pytest.raises(LedgerError) as info:
            client.credit(account.name, 5, "USD", timeout=0.5)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(lambda: bool(create_transaction_codes(caplog)))
    assert create_transaction_codes(caplog) == ["DEADLINE_EXCEEDED"]
    assert client.get_account(account.name).balance.posted == 0


def test_a_call_its_client_cancels_while_its_write_queues_is_logged_as_cancelled(
    server: LedgerServer, client: LedgerClient, store: SqlStore, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Against the one above: a call whose client gives up long before its deadline is
    CANCELLED in the log, not DEADLINE_EXCEEDED."""
    caplog.set_level(logging.INFO, logger="ledger.rpc")
    account = client.create_account(currency="USD")
    request = transaction_service_pb2.CreateTransactionRequest(
        transaction=transaction_pb2.Transaction(
            account=account.name, direction=transaction_pb2.DIRECTION_CREDIT, amount=5, currency="USD"
        ),
        request_id=str(uuid.uuid4()),
    )
    released = threading.Event()
    with (
        writer_held(store, released, key=account.name.removeprefix("accounts/")),
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = transaction_service_pb2_grpc.TransactionServiceStub(channel)
        call = stub.CreateTransaction.future(
            request, timeout=30, metadata=(("authorization", f"Bearer {token}"),)
        )
        time.sleep(0.3)  # the call reaches the server and its unit queues behind the held writer
        assert call.cancel()
        wait_until(lambda: bool(create_transaction_codes(caplog)))
    assert create_transaction_codes(caplog) == ["CANCELLED"]
