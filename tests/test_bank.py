"""The bank test, short (chaos/bank.py; `make chaos` runs it longer, and restarts
Postgres too): client processes move money between accounts through real servers
(two on Postgres) while the servers are killed (-9) and stopped (SIGTERM) at random;
afterwards no money appeared or vanished and every acknowledged write is there once."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from chaos.bank import BankConfig, run_bank
from ledger_server.store.engine import make_engine


@pytest.mark.slow
def test_bank_survives_kill_and_sigterm(database_url: str, tmp_path: Path) -> None:
    backend = "sqlite" if database_url.startswith("sqlite") else "postgres"
    cfg = BankConfig(
        backend=backend,
        database_url=database_url,
        workdir=tmp_path / "bank",
        workers=3,
        ops=3000,
        seconds=15,
        faults=("kill9", "sigterm"),
        fault_interval=2.5,
        call_budget=20,
        replay_sample=300,
        seed=11,
    )
    summary = run_bank(cfg)
    print(summary.text())
    assert summary.anomalies == []
    assert summary.faults.get("kill9", 0) >= 1 and summary.faults.get("sigterm", 0) >= 1
    assert summary.acknowledged >= 100
    assert summary.final["transactions_listed"] >= summary.acknowledged // 2
    assert summary.durations_s["total"] < 120


def test_bank_checks_catch_a_corrupted_ledger(tmp_path: Path) -> None:
    """The checks can fail: money made out of thin air between the workload and the end."""

    def corrupt(url: str) -> None:
        engine = make_engine(url, pool_size=1)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE accounts SET posted = posted + 7 WHERE id = "
                    "(SELECT MIN(id) FROM accounts WHERE kind = 'customer')"
                )
            )
        engine.dispose()

    cfg = BankConfig(workdir=tmp_path / "bank", workers=2, ops=100, seconds=3, faults=(), seed=5)
    summary = run_bank(cfg, before_final=corrupt)
    assert not summary.ok
    found = "\n".join(summary.anomalies)
    assert "money not conserved" in found
    assert "expected" in found and "from acknowledged operations" in found
    assert "VerifyLedger: account_balance" in found
    assert "SQL invariant" in found
