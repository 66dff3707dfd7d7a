"""A database outage answers UNAVAILABLE (retryable), never INTERNAL, and the server
recovers by itself when the database comes back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import psycopg
import pytest
from ledger_client import LedgerClient, LedgerError

from ledger_server.api.server import LedgerServer
from ledger_server.core.admin import Admin
from ledger_server.core.auth import ADMIN, Authenticator
from ledger_server.core.errors import StoreUnavailable
from ledger_server.core.ledger import Ledger
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


@contextmanager
def database_down(url: str) -> Iterator[None]:
    """Refuse new connections to the database and drop the existing ones, then restore."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(
        url.replace("+psycopg", "").rsplit("/", 1)[0] + "/postgres", autocommit=True
    ) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
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
