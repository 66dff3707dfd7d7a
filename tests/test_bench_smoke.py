"""`make bench`, `python -m bench.threads`, `bench.instructions` and `bench.watch_lag`
smoke tests: each runs for about a second per point (on SQLite, but bench.watch_lag's on
Postgres) and reports. They check that figures are reported, never how fast they
are (no timed assertions)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LEVEL = 4
EXPECTED = {
    "raw_sqlite_1/sqlite/0/1",
    "raw_sqlite_1000/sqlite/0/1",
    f"health/sqlite/1/{LEVEL}",
    f"create_spread/sqlite/1/{LEVEL}",
    f"get_account/sqlite/1/{LEVEL}",
    f"list_changes/sqlite/1/{LEVEL}",
}


def run_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_benchmark_runs_briefly_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = run_module(
        "bench.run",
        "--backends",
        "sqlite",
        "--levels",
        str(LEVEL),
        "--scenarios",
        "raw,health,create_spread,batch_create,get_account,list_changes",
        "--seconds-per-point",
        "1",
        "--warmup-seconds",
        "0.2",
        "--accounts",
        "20",
        "--load-processes",
        "2",
        "--out",
        str(out),
    )
    assert run.returncode == 0, run.stderr[-4000:]

    report = json.loads((out / "latest.json").read_text())
    assert {"meta", "figures", "targets"} <= report.keys()
    figures = {f["key"]: f for f in report["figures"]}
    assert figures.keys() >= EXPECTED
    for key in EXPECTED:
        f = figures[key]
        assert f["status"] == "ok", (key, f["status"])
        assert f["value"] > 0 and f["calls"] > 0 and f["postings"] >= 0, f
        assert f["p50_ms"] > 0 and f["p99_ms"] >= f["p50_ms"], f
        assert f["server_cpu_pct"] is not None, f
    create = figures[f"create_spread/sqlite/1/{LEVEL}"]
    assert create["postings"] == create["calls"]
    assert create["insufficient_funds"] == 0, create["errors"]
    assert create["ceiling"] == f"health/sqlite/1/{LEVEL}" and create["ratio"] > 0
    batches = [f for f in report["figures"] if f["section"] == "batch"]
    assert {f["batch_size"] for f in batches} == {100, 1000}
    for f in batches:
        assert f["status"] == "ok", f
        assert f["postings"] == f["calls"] * f["batch_size"], f
    assert len(report["targets"]) == 6
    for target in report["targets"]:
        assert target["status"] in ("PASS", "FAIL") or target["status"].startswith("n/a"), target

    markdown = (out / "latest.md").read_text()
    for heading in (
        "## Targets",
        "## Ceilings (same run)",
        "## CreateTransaction",
        "## Batch create",
        "## Reads",
    ):
        assert heading in markdown
    assert "| Health/Check | sqlite |" in markdown
    assert "| CreateTransaction, 20 accounts | sqlite |" in markdown
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "latest.png").stat().st_size > 0
        assert "](latest.png)" in markdown
    else:
        assert "chart skipped" in markdown


def test_thread_profile_names_the_loop_and_the_writer() -> None:
    """`python -m bench.threads` runs briefly and reports each named server thread's CPU
    per call (only that the figures are there)."""
    run = run_module(
        "bench.threads", "--in-flight", "4", "--seconds", "0.5", "--warmup", "0.2", "--accounts", "10"
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert re.search(r"create_spread on sqlite, 4 in flight: [\d,]+ calls/s", run.stdout), run.stdout
    rows = {
        name.strip(): user
        for name, user in re.findall(r"^  (.{16})\s*(\d+)\s+\d+\s+[\d.]+$", run.stdout, re.M)
    }
    # The units run on the loop (SQLite), the writer commits: both named, both busy.
    assert {"grpc-aio-loop", "writer-0"} <= rows.keys(), run.stdout
    assert int(rows["grpc-aio-loop"]) > 0
    # Each figure is rounded on its own: the two rounded parts may pass the rounded total by 1.
    assert int(rows["(all)"]) >= int(rows["grpc-aio-loop"]) + int(rows["writer-0"]) - 1


@pytest.mark.skipif(
    shutil.which("valgrind") is None, reason="valgrind is not installed: bench.instructions needs it"
)
def test_instruction_count_covers_the_calls_window() -> None:
    """`python -m bench.instructions` counts the server's instructions over its calls: a
    health check through gRPC takes far more than 100,000 (a window that counted nothing,
    or only the dump, would report a few thousand at most)."""
    run = run_module("bench.instructions", "--scenario", "health", "--calls", "20", "--warmup", "5")
    assert run.returncode == 0, run.stderr[-4000:]
    found = re.search(
        r"health on sqlite, 8 in flight: ([\d,]+) instructions per call \(20 calls\)", run.stdout
    )
    assert found, run.stdout
    assert int(found.group(1).replace(",", "")) > 100_000


def test_watch_lag_reports_the_lag_of_each_writing_server(pg_url: str) -> None:
    """`python -m bench.watch_lag` makes a few calls on each of two Postgres servers and
    reports how soon a watch on the first saw their changes."""
    maintenance = pg_url.replace("+psycopg", "").rsplit("/", 1)[0] + "/postgres"
    run = run_module("bench.watch_lag", "--calls", "6", "--pg-url", maintenance)
    assert run.returncode == 0, run.stderr
    for writer in ("watched server", "other server"):
        assert re.search(
            rf"{writer}: 3 changes +p50 +[\d.]+ ms +p90 +[\d.]+ ms +p99 +[\d.]+ ms", run.stdout
        ), run.stdout
