"""Prometheus metrics (--metrics-listen) of a real `ledger-server` process, scraped over
HTTP on SQLite and Postgres: calls by method and code, group commits, the database. The
health gauge during an outage is checked in test_store_outage.py; the expiry worker's
counts in process."""

from __future__ import annotations

import re
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from ledger_client import LedgerClient, LedgerError, transaction_request
from prometheus_client.parser import text_string_to_metric_families

from ledger_server.core.admin import Admin
from ledger_server.core.ledger import Ledger
from ledger_server.expiry_worker import ExpiryWorker
from ledger_server.metrics import Metrics
from tests.support import START, Clock, ServerProcess
from tests.test_lifecycle import DAY, credit, hold, open_account

CREATE = "/ledger.v1.TransactionService/CreateTransaction"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_calls_commits_and_the_database_are_counted(database_url: str, tmp_path: Path, token: str) -> None:
    proc = ServerProcess(database_url, tmp_path / "server.log", "--metrics-listen", "127.0.0.1:0")
    try:
        url = proc.wait_for("metrics", timeout=10)["address"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        with LedgerClient(f"127.0.0.1:{proc.port}", token=token, timeout=30.0) as client:
            account = client.create_account(currency="USD").name
            client.credit(account, 5, "USD")
            with pytest.raises(LedgerError):
                client.debit(account, 6, "USD")
            items = [transaction_request(account=account, direction="credit", amount=1, currency="USD")] * 3
            client.batch_create_transactions(items, independent=True)
        metrics = scrape(url)
        calls = {
            labels: value
            for (name, labels), value in metrics.items()
            if name == "ledger_rpc_duration_seconds_count" and dict(labels)["method"] == CREATE
        }
        assert calls == {
            (("code", "FAILED_PRECONDITION"), ("method", CREATE)): 1,
            (("code", "OK"), ("method", CREATE)): 1,
        }
        le = "ledger_rpc_duration_seconds_bucket"
        assert metrics[(le, (("code", "OK"), ("le", "+Inf"), ("method", CREATE)))] == 1
        # Units: the account, the credit, the refused debit and three batch items.
        assert metrics[("ledger_group_commit_units_total", ())] == 6
        assert 1 <= metrics[("ledger_group_commit_batches_total", ())] <= 6
        assert metrics[("ledger_group_commit_failed_batches_total", ())] == 0
        assert metrics[("ledger_group_commit_seconds_total", ())] > 0
        assert metrics[("ledger_database_up", ())] == 1
        assert metrics[("ledger_database_connections_in_use", ())] >= 0
    finally:
        proc.signal(signal.SIGTERM)
        proc.wait()


def test_calls_are_counted_by_tenant(database_url: str, tmp_path: Path, token: str, admin: Admin) -> None:
    admin.create_tenant("other", "Other")
    other = admin.create_token("other", "other-service", ["accounts:write"])[1]
    proc = ServerProcess(database_url, tmp_path / "server.log", "--metrics-listen", "127.0.0.1:0")
    try:
        url = proc.wait_for("metrics", timeout=10)["address"]
        address = f"127.0.0.1:{proc.port}"
        with (
            LedgerClient(address, token=token, timeout=30.0) as acme,
            LedgerClient(address, token=other, timeout=30.0) as theirs,
            LedgerClient(address, token="ltk_nope", max_attempts=1) as anonymous,
        ):
            account = acme.create_account(currency="USD").name
            acme.create_account(currency="USD")
            theirs.create_account(currency="EUR")
            with pytest.raises(LedgerError):
                theirs.get_account(account)  # no accounts:read
            with pytest.raises(LedgerError):
                anonymous.get_account(account)
        counted = {
            tuple(value for _, value in labels): count
            for (name, labels), count in scrape(url).items()
            if name == "ledger_tenant_rpc_total"
        }
        opened, read = "/ledger.v1.AccountService/CreateAccount", "/ledger.v1.AccountService/GetAccount"
        assert counted == {  # (code, method, tenant)
            ("OK", opened, "acme"): 2,
            ("OK", opened, "other"): 1,
            ("PERMISSION_DENIED", read, "other"): 1,
            ("UNAUTHENTICATED", read, "-"): 1,
        }
    finally:
        proc.signal(signal.SIGTERM)
        proc.wait()


def test_no_metrics_unless_asked_and_a_bad_metrics_address_stops_start_up(
    database_url: str, tmp_path: Path
) -> None:
    proc = ServerProcess(database_url, tmp_path / "server.log")
    try:
        assert not [line for line in proc.log_lines() if line["msg"] == "metrics"]
    finally:
        proc.kill()
    with pytest.raises(
        RuntimeError, match=re.escape("--dev serves only on a loopback address, not 0.0.0.0:0")
    ):
        ServerProcess(database_url, tmp_path / "dev.log", "--dev", "--metrics-listen", "0.0.0.0:0")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(RuntimeError, match=re.escape(f"cannot serve metrics on {busy}")):
            ServerProcess(database_url, tmp_path / "busy.log", "--metrics-listen", busy)


def test_the_expiry_worker_counts_what_it_wrote_off(book: Ledger, clock: Clock) -> None:
    account = open_account(book)
    credit(book, account, 500, expires=START + DAY)
    hold(book, account, 200, expires=START + DAY)
    hold(book, account, 100)  # kept: no expiry
    clock.advance(2 * DAY)
    metrics = Metrics()
    worker = ExpiryWorker(book, 0.02, metrics)

    def expired(kind: str) -> float | None:
        return metrics.registry.get_sample_value("ledger_expired_total", {"kind": kind})

    worker.start()
    try:
        deadline = time.monotonic() + 30
        while expired("lot") != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop()
    assert (expired("lot"), expired("hold")) == (1, 1)
