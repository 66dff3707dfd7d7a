"""A database outage answers UNAVAILABLE (retryable), never INTERNAL, health says
NOT_SERVING meanwhile, and the server recovers by itself when the database comes back."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ledger_client import LedgerClient, LedgerError

from ledger_server.api.server import LEDGER_SERVICES, LedgerServer
from ledger_server.core.admin import Admin
from ledger_server.core.auth import ADMIN, Authenticator
from ledger_server.core.errors import StoreUnavailable
from ledger_server.core.ledger import Ledger
from ledger_server.core.model import Account, NewAccount
from ledger_server.metrics import Metrics
from ledger_server.store.engine import make_engine
from ledger_server.store.sql_store import SqlStore
from tests.support import server_settings

NOWHERE = "postgresql+psycopg://postgres@127.0.0.1:1/ledger"  # nothing listens on port 1


def test_unreachable_database_is_store_unavailable() -> None:
    store = SqlStore(make_engine(NOWHERE, pool_size=1))
    with pytest.raises(StoreUnavailable):
        store.ping()
    with pytest.raises(StoreUnavailable), store.writing():
        pass
    store.close()


def maintenance(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url.replace("+psycopg", "").rsplit("/", 1)[0] + "/postgres", autocommit=True)


def drop_connections(admin: psycopg.Connection[Any], name: str) -> None:
    """What a database restart does to a pool: every connection to `name` is gone."""
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )


@contextmanager
def database_down(url: str) -> Iterator[None]:
    """Refuse new connections to the database and drop the existing ones, then restore."""
    name = url.rsplit("/", 1)[1]
    with maintenance(url) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        drop_connections(admin, name)
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_outage_answers_unavailable_then_recovers_without_restart(pg_url: str) -> None:
    engine = make_engine(pg_url, pool_size=4)
    store = SqlStore(engine)
    Admin(store).create_tenant("outage", "")
    token = Admin(store).create_token("outage", "outage-test", [ADMIN])[1]
    # Tokens are cached, as in production: the outage hits the ledger, not only the token lookup.
    server = LedgerServer(Ledger(store), Authenticator(store, cache_seconds=60), server_settings())
    server.start()
    try:
        with LedgerClient(f"127.0.0.1:{server.port}", token=token, timeout=20.0, max_attempts=2) as client:
            account = client.create_account(currency="USD")
            with database_down(pg_url), pytest.raises(LedgerError) as info:
                client.credit(account.name, 5, "USD")
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
            assert info.value.reason == "STORE_UNAVAILABLE"
            assert info.value.attempts == 2  # retried by the client with the same request_id
            assert client.credit(account.name, 5, "USD").ending_balance == 5
    finally:
        server.stop(0)
        store.close()


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_of(port: int) -> set[int]:
    """The statuses health reports for the server as a whole and each ledger service."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return {
            stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            for service in ["", *LEDGER_SERVICES]
        }


def wait_for_health(port: int, status: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while (seen := health_of(port)) != {status}:
        assert time.monotonic() < deadline, f"health still {seen}, expected {status}"
        time.sleep(0.05)


@contextmanager
def probed_server(
    pg_url: str, metrics: Metrics | None = None, **settings: object
) -> Iterator[tuple[LedgerServer, str]]:
    """A server whose health probe pings every 50 ms, and an admin token of a new tenant."""
    engine = make_engine(pg_url, pool_size=4)
    store = SqlStore(engine)
    tenant = f"health-{uuid.uuid4().hex[:8]}"
    Admin(store).create_tenant(tenant, "")
    token = Admin(store).create_token(tenant, "health-test", [ADMIN])[1]
    server = LedgerServer(
        Ledger(store),
        Authenticator(store, cache_seconds=60),
        server_settings(health_probe_seconds=0.05, **settings),
        metrics,
    )
    server.start()
    try:
        yield server, token
    finally:
        server.stop(0)
        store.close()


def test_health_is_not_serving_during_an_outage_and_serving_after(pg_url: str) -> None:
    metrics = Metrics()

    def up() -> float | None:
        return metrics.registry.get_sample_value("ledger_database_up")

    with (
        probed_server(pg_url, metrics) as (server, token),
        LedgerClient(f"127.0.0.1:{server.port}", token=token, timeout=20.0, max_attempts=1) as client,
    ):
        account = client.create_account(currency="USD")
        assert health_of(server.port) == {SERVING}
        with database_down(pg_url):
            wait_for_health(server.port, NOT_SERVING)
            with pytest.raises(LedgerError) as info:
                client.credit(account.name, 5, "USD")
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
            assert info.value.reason == "STORE_UNAVAILABLE"
            assert health_of(server.port) == {NOT_SERVING}
            assert up() == 0
        wait_for_health(server.port, SERVING)  # by itself: nothing restarted
        assert up() == 1
        assert client.credit(account.name, 5, "USD").ending_balance == 5
    method = "/ledger.v1.TransactionService/CreateTransaction"
    counts = {
        code: metrics.registry.get_sample_value(
            "ledger_rpc_duration_seconds_count", {"method": method, "code": code}
        )
        for code in ("OK", "UNAVAILABLE")
    }
    assert counts == {"OK": 1, "UNAVAILABLE": 1}


def test_health_stays_not_serving_once_shutdown_began(pg_url: str) -> None:
    with probed_server(pg_url, drain_seconds=3.0) as (server, _):
        stopping = threading.Thread(target=server.stop)
        with database_down(pg_url):
            wait_for_health(server.port, NOT_SERVING)
            stopping.start()  # drains for 3 s: health answers, but must not recover
        for _ in range(10):  # twenty probe periods with the database back
            assert health_of(server.port) == {NOT_SERVING}
            time.sleep(0.05)
        stopping.join(30)
        assert not stopping.is_alive()


def test_after_the_database_drops_every_connection_only_one_read_fails(pg_url: str) -> None:
    """No pre-ping: the first call to find its connection dead fails (retryably) and the
    pool is replaced, so the next call does not take another of the dead connections."""
    store = SqlStore(make_engine(pg_url, pool_size=4))
    tenant = f"dropped-{uuid.uuid4().hex[:8]}"
    Admin(store).create_tenant(tenant, "")
    ledger = Ledger(store)
    account = ledger.create_account(tenant, NewAccount(external_ref="", currency="USD"))
    assert isinstance(account, Account)
    with ThreadPoolExecutor(4) as pool:  # fill the read pool with 4 connections
        list(pool.map(lambda _: ledger.get_account(tenant, account.id), range(32)))
    with maintenance(pg_url) as admin:
        drop_connections(admin, pg_url.rsplit("/", 1)[1])
    try:
        with pytest.raises(StoreUnavailable):
            ledger.get_account(tenant, account.id)
        for _ in range(4):
            assert ledger.get_account(tenant, account.id).id == account.id
    finally:
        store.close()
