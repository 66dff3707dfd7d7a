"""TLS and mutual TLS, with certificates the tests make themselves (trustme)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme
from ledger_client import LedgerClient, LedgerError

from ledger_server.api.server import LedgerServer
from ledger_server.core.auth import Authenticator
from ledger_server.core.ledger import Ledger
from ledger_server.store.sql_store import SqlStore
from tests.support import server_settings


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server(
    tmp_path: Path, ca: trustme.CA, ledger: Ledger, store: SqlStore, *, mutual: bool
) -> LedgerServer:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    key_path, chain_path, ca_path = tmp_path / "server.key", tmp_path / "server.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key_path))
    cert.cert_chain_pems[0].write_to_path(str(chain_path))
    ca.cert_pem.write_to_path(str(ca_path))
    settings = server_settings(
        tls_cert=str(chain_path), tls_key=str(key_path), tls_client_ca=str(ca_path) if mutual else ""
    )
    server = LedgerServer(ledger, Authenticator(store, cache_seconds=0), settings)
    server.start()
    return server


@pytest.fixture
def tls(tmp_path: Path, ca: trustme.CA, ledger: Ledger, store: SqlStore) -> Iterator[LedgerServer]:
    server = tls_server(tmp_path, ca, ledger, store, mutual=False)
    yield server
    server.stop(0)


@pytest.fixture
def mtls(tmp_path: Path, ca: trustme.CA, ledger: Ledger, store: SqlStore) -> Iterator[LedgerServer]:
    server = tls_server(tmp_path, ca, ledger, store, mutual=True)
    yield server
    server.stop(0)


def credentials(ca: trustme.CA, client_ca: trustme.CA | None = None) -> grpc.ChannelCredentials:
    if client_ca is None:
        return grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
    cert = client_ca.issue_cert("checkout-service@example.test")
    return grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem.bytes(),
        private_key=cert.private_key_pem.bytes(),
        certificate_chain=cert.cert_chain_pems[0].bytes(),
    )


def test_call_over_tls_succeeds(tls: LedgerServer, ca: trustme.CA, token: str) -> None:
    assert tls.tls
    with LedgerClient(f"localhost:{tls.port}", token=token, credentials=credentials(ca)) as client:
        account = client.create_account(currency="USD")
        assert client.credit(account.name, 7, "USD").ending_balance == 7


def test_plaintext_call_to_tls_port_fails(tls: LedgerServer, token: str) -> None:
    with (
        LedgerClient(f"127.0.0.1:{tls.port}", token=token, timeout=3.0, max_attempts=1) as client,
        pytest.raises(LedgerError) as info,
    ):
        client.list_accounts()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_accepts_a_client_certificate_of_its_ca(
    mtls: LedgerServer, ca: trustme.CA, token: str
) -> None:
    with LedgerClient(f"localhost:{mtls.port}", token=token, credentials=credentials(ca, ca)) as client:
        assert list(client.list_accounts().accounts) == []


@pytest.mark.parametrize("client_ca", ["none", "other CA"])
def test_mutual_tls_rejects_clients_without_a_trusted_certificate(
    mtls: LedgerServer, ca: trustme.CA, token: str, client_ca: str
) -> None:
    creds = credentials(ca) if client_ca == "none" else credentials(ca, trustme.CA())
    with (
        LedgerClient(
            f"localhost:{mtls.port}", token=token, credentials=creds, timeout=3.0, max_attempts=1
        ) as client,
        pytest.raises(LedgerError) as info,
    ):
        client.list_accounts()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE  # the handshake fails: no call is made
