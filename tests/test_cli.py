"""`ledger-server tenants|tokens` administration and `serve --dev`, as an operator runs them."""

from __future__ import annotations

import re
import stat
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from ledger_client import LedgerClient, LedgerError
from sqlalchemy import Engine, func, select

from ledger_server.store.schema import api_tokens
from tests.support import SERVER, ServerProcess

TOKEN_RE = re.compile(r"ltk_[0-9a-f]{32}_[A-Za-z0-9_-]{43}")


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVER, *args, "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_tenants_and_tokens_lifecycle(database_url: str, tmp_path: Path) -> None:
    assert cli(database_url, "tenants", "create", "acme", "--name", "Acme Inc").returncode == 0
    duplicate = cli(database_url, "tenants", "create", "acme")
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    assert "acme\tAcme Inc" in cli(database_url, "tenants", "list").stdout

    created = cli(
        database_url,
        "tokens",
        "create",
        "--tenant",
        "acme",
        "--name",
        "checkout",
        "--scopes",
        "accounts:read",
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert TOKEN_RE.fullmatch(secret)
    assert "shown only now" in created.stderr
    token_id = secret.split("_")[1]

    listing = cli(database_url, "tokens", "list", "--tenant", "acme").stdout
    assert token_id in listing and "checkout" in listing and "active" in listing
    assert secret.split("_", 2)[2] not in listing  # never the secret

    proc = ServerProcess(database_url, tmp_path / "server.log")
    try:
        with LedgerClient(f"127.0.0.1:{proc.port}", token=secret) as client:
            assert list(client.list_accounts().accounts) == []
            with pytest.raises(LedgerError) as denied:
                client.create_account(currency="USD")
            assert denied.value.reason == "MISSING_SCOPE"
            assert cli(database_url, "tokens", "revoke", token_id).returncode == 0
            assert "revoked" in cli(database_url, "tokens", "list").stdout
            deadline = time.monotonic() + 10  # the server caches tokens for 2 s
            while True:
                try:
                    client.list_accounts()
                except LedgerError as err:
                    assert err.code == grpc.StatusCode.UNAUTHENTICATED
                    assert err.reason == "TOKEN_REVOKED"
                    break
                assert time.monotonic() < deadline, "revocation did not take effect"
                time.sleep(0.2)
    finally:
        proc.kill()
    log = (tmp_path / "server.log").read_text()
    assert '"method": "/ledger.v1.AccountService/ListAccounts"' in log
    assert secret.split("_", 2)[2] not in log  # tokens never reach the logs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenant", "acme", "--name", "x", "--scopes", "accounts:delete"], "scopes must be"),
        (["--tenant", "nobody", "--name", "x", "--scopes", "admin"], "no tenant nobody"),
        (
            ["--tenant", "acme", "--name", "x", "--scopes", "admin", "--expires-in", "soon"],
            "durations look like",
        ),
        (["--tenant", "acme", "--name", "n" * 201, "--scopes", "admin"], "at most 200 characters"),
    ],
)
def test_bad_token_requests_are_refused(database_url: str, args: list[str], message: str) -> None:
    cli(database_url, "tenants", "create", "acme")
    result = cli(database_url, "tokens", "create", *args)
    assert result.returncode == 1 and message in result.stderr


def test_dev_mode_creates_and_reuses_a_dev_token(database_url: str, tmp_path: Path, engine: Engine) -> None:
    token_file = tmp_path / "dev-token"
    proc = ServerProcess(database_url, tmp_path / "server.log", "--dev", "--dev-token-file", str(token_file))
    try:
        banner = wait_for_banner(tmp_path / "server.log")
        secret = token_file.read_text().strip()
        assert "DEVELOPMENT MODE" in banner and secret in banner and "grpcurl" in banner
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        with LedgerClient(f"127.0.0.1:{proc.port}", token=secret) as client:
            account = client.create_account(currency="USD")
            assert client.get_account(account.name).currency == "USD"
        proc.restart()
        assert token_file.read_text().strip() == secret  # not a second token
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(api_tokens)).scalar_one() == 1
    finally:
        proc.kill()


def wait_for_banner(log: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text()
        if "DEVELOPMENT MODE" in text and text.rstrip().endswith("=" * 88):
            return text
        time.sleep(0.05)
    raise TimeoutError(log.read_text())


def test_dev_mode_refuses_a_non_loopback_address(database_url: str) -> None:
    result = subprocess.run(
        [*SERVER, "serve", "--dev", "--listen", "0.0.0.0:0", "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "loopback" in result.stderr


def test_production_serve_never_invents_credentials(
    database_url: str, tmp_path: Path, engine: Engine
) -> None:
    proc = ServerProcess(database_url, tmp_path / "server.log")
    try:
        with (
            LedgerClient(f"127.0.0.1:{proc.port}", max_attempts=1) as client,
            pytest.raises(LedgerError) as info,
        ):
            client.list_accounts()
        assert info.value.reason == "TOKEN_MISSING"
    finally:
        proc.kill()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(api_tokens)).scalar_one() == 0
    assert "DEVELOPMENT MODE" not in (tmp_path / "server.log").read_text()
