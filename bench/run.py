"""`python -m bench.run`: one benchmark run. Starts the load processes, measures the raw
ceilings, then per backend a fresh database, a real `ledger-server serve`, seeded
accounts and every point; writes bench/results/latest.{json,md,png}."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench import chart, cpu, report
from bench.ceilings import prepare_postgres, raw_postgres, raw_sqlite
from bench.config import BenchConfig, parse_config
from bench.figures import HEALTH, RAW_PSYCOPG, RAW_SQLITE, Figure, attach_ceilings, key
from bench.load import START_DELAY, LoadPool
from bench.measurement import Measurement
from bench.ops import Workload
from bench.seed import Accounts, seed_accounts
from bench.servers import PostgresDatabase, PostgresUnavailable, ServerProcess, bootstrap_token
from bench.targets import evaluate
from ledger_server.config import OPTIONS

RAW_PSYCOPG_CONNECTIONS = (1, 8)
RAW_SQLITE_PER_COMMIT = (1, 1000)
DISTURBED_PCT = 40.0  # other CPU above which a point is flagged as disturbed
QUIET_MACHINE_PCT = 20.0  # % of one core busy before the run above which the report warns
BATCH_MAX_IN_FLIGHT = 8  # a batch call carries up to 1000 postings: more in flight adds nothing
# A point whose calls outlast its warm-up and window (8 batches of 1000 in flight took ~5 s
# each on a slow run) measures few or no calls: it is measured again, warm-up and window
# doubled each time, at most this many times.
MAX_STRETCHES = 2


def _figure(
    *,
    section: str,
    scenario: str,
    label: str,
    backend: str,
    servers: int,
    in_flight: int,
    unit: str = "calls/s",
    batch: int = 1,
) -> Figure:
    return Figure(
        key=key(scenario, backend, in_flight, servers, batch),
        section=section,
        scenario=scenario,
        label=label,
        backend=backend,
        servers=servers,
        in_flight=in_flight,
        unit=unit,
        batch_size=batch,
    )


def raw_sqlite_plan(config: BenchConfig) -> list[Figure]:
    if not config.wants("raw"):
        return []
    return [
        _figure(
            section="ceilings",
            scenario=f"{RAW_SQLITE}_{n}",
            label=f"raw sqlite3, {n} posting{'s' if n > 1 else ''}/commit",
            backend="sqlite",
            servers=0,
            in_flight=1,
            unit="postings/s",
        )
        for n in RAW_SQLITE_PER_COMMIT
    ]


def backend_plan(config: BenchConfig, backend: str, with_health: bool) -> list[Figure]:
    """Every figure of one backend, unmeasured, in the order they are measured."""
    plan: list[Figure] = []

    def add(
        section: str,
        scenario: str,
        label: str,
        levels: Iterable[int],
        *,
        servers: int = 1,
        unit: str = "calls/s",
        batch: int = 1,
    ) -> None:
        plan.extend(
            _figure(
                section=section,
                scenario=scenario,
                label=label,
                backend=backend,
                servers=servers,
                in_flight=n,
                unit=unit,
                batch=batch,
            )
            for n in levels
        )

    levels = config.levels
    if backend == "postgres" and config.wants("raw"):
        for n in RAW_PSYCOPG_CONNECTIONS:
            label = f"raw psycopg, 1 posting/commit, {n} connection{'s' if n > 1 else ''}"
            add("ceilings", RAW_PSYCOPG, label, [n], servers=0, unit="postings/s")
    if with_health and config.wants(HEALTH):
        add("ceilings", HEALTH, "Health/Check", levels)
    if config.wants("create_spread"):
        add("create", "create_spread", f"CreateTransaction, {config.spread_accounts} accounts", levels)
    if config.wants("create_hot"):
        add("create", "create_hot", f"CreateTransaction, {config.hot_accounts} hot accounts", levels)
    if config.wants("batch_create"):
        for size in config.batch_sizes:
            batch_levels = [n for n in levels if n <= BATCH_MAX_IN_FLIGHT]
            add(
                "batch",
                "batch_create",
                f"batch create, {size}/call",
                batch_levels,
                unit="postings/s",
                batch=size,
            )
    if config.wants("get_account"):
        add("reads", "get_account", "GetAccount", levels)
    if config.wants("list_transactions"):
        add("reads", "list_transactions", "ListTransactions, 50/page", levels)
    if config.wants("list_changes"):
        add("reads", "list_changes", "ListTransactionChanges, 50/page", levels)
    if backend == "postgres" and config.wants("two_servers"):
        label = f"CreateTransaction, {config.spread_accounts} accounts"
        add("replicas", "two_servers", label, [n for n in levels if n >= 2], servers=2)
    return plan


@dataclass
class Run:
    config: BenchConfig
    pool: LoadPool
    tmp: Path
    started: float = field(default_factory=time.monotonic)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def log(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", file=sys.stderr, flush=True)

    def add(self, f: Figure) -> None:
        self.figures.append(f)
        if f.ok:
            p99 = f"p99 {f.p99_ms:.2f} ms" if f.p99_ms is not None else ""
            self.log(f"{f.key:<40} {f.value:>10,.0f} {f.unit}  {p99}  errors {sum(f.errors.values())}")
        else:
            self.log(f"{f.key:<40} {f.status}")

    def give_up(self, plan: list[Figure], status: str) -> None:
        """Report every planned figure not measured yet with this status."""
        done = {f.key for f in self.figures}
        for f in plan:
            if f.key not in done:
                f.status = status
                self.add(f)


def measure_point(
    run: Run, f: Figure, servers: list[ServerProcess], token: str, accounts: Accounts, *, database: str | None
) -> Figure:
    workload = Workload(f.scenario, token, accounts.spread, accounts.hot, f.batch_size)
    warmup, seconds = run.config.warmup_seconds, run.config.seconds_per_point
    for stretch in range(MAX_STRETCHES + 1):
        measurement = run.pool.measure(
            workload=workload,
            addresses=tuple(s.address for s in servers),
            in_flight=f.in_flight,
            warmup=warmup,
            seconds=seconds,
            server_pids=[s.pid for s in servers],
            database=database,
        )
        if stretch == MAX_STRETCHES or not too_short(measurement, f.in_flight):
            break
        warmup, seconds = 2 * warmup, 2 * seconds
        run.log(f"{f.key}: {measurement.calls} calls measured; again with {warmup:g}s + {seconds:g}s")
    return f.record(measurement)


def too_short(m: Measurement, in_flight: int) -> bool:
    """Whether a point's window held fewer calls than were in flight: each call then
    lasted about the window or longer, and the figure is mostly where the window fell."""
    return m.failure is None and not m.errors and m.calls < in_flight


def run_backend(run: Run, backend: str, database_url: str, dsn: str, plan: list[Figure]) -> None:
    """`dsn`: the psycopg DSN of the Postgres database ("" for SQLite)."""
    config = run.config
    raw = [f for f in plan if f.scenario == RAW_PSYCOPG]
    if raw:
        prepare_postgres(dsn)
        for f in raw:
            run.add(f.record(raw_postgres(dsn, f.in_flight, config.warmup_seconds, config.seconds_per_point)))
    rest = [f for f in plan if f.scenario != RAW_PSYCOPG]
    if not rest:
        return
    token = bootstrap_token(database_url)
    with ServerProcess(database_url, run.tmp / f"{backend}-server-1.log", config.server_args) as server:
        run.log(f"{backend}: ledger-server pid {server.pid} on {server.address}; seeding accounts")
        accounts = seed_accounts(server.address, token, config.spread_accounts, config.hot_accounts)
        run.log(f"{backend}: {len(accounts.spread)} + {len(accounts.hot)} accounts funded")
        second: ServerProcess | None = None
        try:
            for f in rest:
                servers = [server]
                if f.servers == 2:
                    if second is None:
                        second = ServerProcess(
                            database_url, run.tmp / f"{backend}-server-2.log", config.server_args
                        )
                        run.log(f"{backend}: second ledger-server pid {second.pid} on {second.address}")
                    servers.append(second)
                database = dsn.rsplit("/", 1)[1] if dsn else None
                run.add(measure_point(run, f, servers, token, accounts, database=database))
        finally:
            if second is not None:
                second.stop()


def run_sqlite(run: Run, with_health: bool) -> None:
    plan = backend_plan(run.config, "sqlite", with_health)
    try:
        run_backend(run, "sqlite", f"sqlite:///{run.tmp / 'ledger.db'}", "", plan)
    except Exception as exc:
        run.log(f"sqlite: failed: {exc}")
        run.give_up(plan, f"failed: {type(exc).__name__}: {exc}".splitlines()[0])


def run_postgres(run: Run, with_health: bool) -> None:
    plan = backend_plan(run.config, "postgres", with_health)
    try:
        with PostgresDatabase(run.config.pg_admin_url) as db:
            run.meta["postgres"] = {"database": db.name, **db.settings()}
            run.log(f"postgres: fresh database {db.name}")
            try:
                run_backend(run, "postgres", db.url, db.dsn, plan)
            except Exception as exc:
                run.log(f"postgres: failed: {exc}")
                run.give_up(plan, f"failed: {type(exc).__name__}: {exc}".splitlines()[0])
    except PostgresUnavailable as exc:
        short = str(exc).splitlines()[0].rsplit(": ", 1)[-1]
        reason = f"skipped: Postgres unreachable at {run.config.pg_admin_url} ({short})"
        run.meta["postgres"] = {"skipped": reason, "error": str(exc)}
        run.log(reason)
        run.give_up(plan, reason)


def _machine_busy_pct(seconds: float) -> float:
    before = cpu.machine_busy_seconds()
    time.sleep(seconds)
    return 100.0 * (cpu.machine_busy_seconds() - before) / seconds


def _server_defaults() -> str:
    """The serve flags that shape throughput, as this server version defaults them."""
    shown = ("--workers", "--db-pool-size", "--writers", "--max-concurrent-rpcs", "--log-level")
    return ", ".join(
        f"{opt.flag} {os.environ.get(opt.env, opt.default)}" for opt in OPTIONS if opt.flag in shown
    )


def _filesystem(path: Path) -> str:
    """The type of the filesystem holding `path` (SQLite files and fsync costs live there)."""
    best, kind = "", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        mount_point = fields[1]
        if str(path).startswith(mount_point) and len(mount_point) > len(best):
            best, kind = mount_point, fields[2]
    return f"{kind} (mounted at {best})"


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], check=False, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "server_changes_uncommitted": bool(git("status", "--porcelain", "server")),
    }


def estimate_seconds(config: BenchConfig) -> float:
    points = len(raw_sqlite_plan(config))
    for i, backend in enumerate(config.backends):
        points += sum(1 for f in backend_plan(config, backend, i == 0) if f.section != "batch")
    return points * (config.seconds_per_point + config.warmup_seconds + START_DELAY + 0.2)


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    started_at = dt.datetime.now(dt.UTC)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    busy_before = _machine_busy_pct(0.5)
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        pool = LoadPool(config.load_processes)
        run = Run(config, pool, Path(tmp))
        if busy_before > QUIET_MACHINE_PCT:
            run.notes.append(
                f"The machine was already {busy_before:.0f}% busy (of one core) before the run started: "
                "other work competed for the cores; see the `other CPU` column."
            )
            run.log(run.notes[-1])
        run.log(
            f"benchmark: {config.backends}, in flight {config.levels}, {config.seconds_per_point}s/point "
            f"(+{config.warmup_seconds}s warm-up); about {estimate_seconds(config):.0f}s of points plus setup"
        )
        try:
            for f in raw_sqlite_plan(config):
                per_commit = int(f.scenario.rsplit("_", 1)[1])
                run.add(
                    f.record(raw_sqlite(run.tmp, per_commit, config.warmup_seconds, config.seconds_per_point))
                )
            for i, backend in enumerate(config.backends):
                (run_sqlite if backend == "sqlite" else run_postgres)(run, i == 0)
        finally:
            pool.close()
    attach_ceilings(run.figures)
    targets = evaluate(run.figures)
    chart_note = chart.draw(run.figures, config.out_dir / "latest.png")
    run.notes += _notes(config, run, chart_note)
    meta = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - run.started, 1),
        "config": {**asdict(config), "out_dir": str(config.out_dir)},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "grpcio": grpc.__version__,
            "temp_dir": f"{tempfile.gettempdir()} on {_filesystem(Path(tempfile.gettempdir()).resolve())}",
        },
        "git": _git(),
        **run.meta,
        "notes": run.notes,
    }
    report.write_json(config.out_dir / "latest.json", meta, run.figures, targets)
    text = report.markdown(meta, run.figures, targets, None if chart_note else "latest.png")
    (config.out_dir / "latest.md").write_text(text)
    print(text)
    print("\n".join(report.target_lines(targets)))
    written = "latest.json, latest.md" + ("" if chart_note else ", latest.png")
    print(f"\nwrote {written} to {config.out_dir} in {meta['duration_s']}s")
    return 0


def _notes(config: BenchConfig, run: Run, chart_note: str | None) -> list[str]:
    notes = [
        f"The load generator ({config.load_processes} processes, grpc.aio), the ledger server and the "
        f"database share the machine's {os.cpu_count()} cores: every throughput here is bounded by "
        "that sharing, and the health-check ceiling is measured under the same conditions.",
        f"Server: `ledger-server serve` with its default flags ({_server_defaults()}; one INFO log line per "
        "call, to a file)"
        + (f" plus `{' '.join(config.server_args)}`" if config.server_args else "")
        + "; the same process and flags answer the Health/Check ceiling.",
        "DB CPU (Postgres rows): every `postgres` process on the machine except client backends of "
        "other databases (those count as other CPU).",
    ]
    disturbed = [f.key for f in run.figures if (f.other_cpu_pct or 0.0) > DISTURBED_PCT]
    if disturbed:
        notes.append(
            f"{len(disturbed)} point(s) ran while other work took more than {DISTURBED_PCT:.0f}% of a core "
            f"(`other CPU`): their figures are disturbed: {', '.join(disturbed)}."
        )
    failed = [f.key for f in run.figures if f.status.startswith("failed")]
    if failed:
        notes.append(f"Failed points: {', '.join(failed)}.")
    if chart_note:
        notes.append(chart_note)
    return notes


if __name__ == "__main__":
    sys.exit(main())
