"""The bank test (after Jepsen's bank workload): money moves between accounts while
servers are killed, stopped and paused and Postgres restarts; no money may appear or
vanish, and every acknowledged write must be there exactly once.

Setup: a tenant and an admin token (the `ledger-server` CLI), N USD accounts with floor
0, each funded by one CREDIT. Workload: M client processes doing random transfers,
holds that are captured (money leaves the accounts: "out") or voided, and full reads;
every mutation has a request_id and is retried with the same bytes on UNAVAILABLE,
DEADLINE_EXCEEDED and connection errors, switching servers. Faults: a thread kills
(-9), stops (SIGTERM), pauses (SIGSTOP) servers and restarts Postgres. Then every
unanswered request is sent again until it answers, and the ledger is checked: balances
exactly as the acknowledged operations make them, totals conserved, every acknowledged
transaction present once and nothing else, no floor broken, nothing left pending,
replays byte-identical, VerifyLedger and the SQL invariants clean.

Only 127.0.0.1; only processes it started are ended, by pid. Exit status 1 on any anomaly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import random
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ledger.v1 import account_pb2, account_service_pb2, transaction_pb2
from ledger.v1 import transaction_service_pb2 as tx_pb

from chaos.checks import Final, build_model, check_ledger, resolve_unknown, scan_server_logs
from chaos.cluster import (
    FaultInjector,
    PostgresDatabase,
    Server,
    create_tenant_and_token,
    postgres_is_up,
    wait_postgres,
)
from chaos.worker import N_COUNTERS, Caller, WorkerConfig, run_worker
from ledger_server.store.engine import make_engine
from tests.support import invariant_violations

TENANT = "bank"
CURRENCY = "USD"
ALL_FAULTS = ("kill9", "sigterm", "pause", "pg_restart")


@dataclass
class BankConfig:
    backend: str = "sqlite"  # sqlite | postgres
    database_url: str = ""  # an existing (empty or migrated) database; default: a fresh one
    workdir: Path = Path("var/chaos")
    accounts: int = 8
    initial: int = 1_000_000  # minor units per account
    workers: int = 4
    ops: int = 2000  # per worker
    seconds: float = 60.0  # of workload, per worker
    faults: tuple[str, ...] = ("kill9", "sigterm", "pause")
    fault_interval: float = 4.0  # mean seconds between faults
    attempt_timeout: float = 5.0
    call_budget: float = 30.0  # per logical call, retries included
    max_attempts: int = 40
    final_budget: float = 90.0  # per unanswered request in the final phase
    replay_sample: int = -1  # acknowledged mutations replayed at the end (-1: all)
    seed: int = 0
    servers: int = 0  # default: 2 on Postgres, 1 on SQLite
    keep_database: bool = False  # leave the fresh Postgres database for a post-mortem


@dataclass
class Summary:
    backend: str
    ok: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    durations_s: dict[str, float] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    reads: dict[str, int] = field(default_factory=dict)
    mutations: int = 0
    acknowledged: int = 0
    refused: int = 0
    unanswered: int = 0
    retried: int = 0
    attempts: int = 0
    attempt_errors: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    fault_events: list[dict[str, object]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    anomalies: list[str] = field(default_factory=list)
    workdir: str = ""

    def text(self) -> str:
        lines = [
            f"== bank test on {self.backend}: {'OK' if self.ok else 'ANOMALIES'} ==",
            f"durations (s): {self.durations_s}",
            f"mutations {self.mutations}: acknowledged {self.acknowledged}, refused {self.refused}, "
            f"unanswered during the run {self.unanswered} (resolved at the end: "
            f"{self.final.get('unknown_resolved', {})}); retried {self.retried}, attempts {self.attempts}",
            f"operations: {dict(sorted(self.ops.items()))}",
            f"reads: {self.reads}",
            f"failed attempts by code: {self.attempt_errors}",
            f"faults: {self.faults}",
            f"final: {json.dumps({k: v for k, v in self.final.items() if k != 'unknown_resolved'})}",
            f"anomalies: {len(self.anomalies)}",
            *(f"  - {a}" for a in self.anomalies[:50]),
            f"logs: {self.workdir}",
        ]
        return "\n".join(lines)


def run_bank(cfg: BankConfig, before_final: Callable[[str], None] | None = None) -> Summary:
    """One bank test; never raises for what it finds (that goes into the summary).
    `before_final(database_url)` runs between the workload and the final checks (the
    tests use it to corrupt the ledger and see the checks fail)."""
    run = BankRun(cfg)
    try:
        run.setup()
        run.workload()
        if before_final is not None:
            before_final(run.url)
        run.final_phase()
    except Exception as exc:  # the harness itself failed: that is an anomaly too
        run.summary.anomalies.append(f"harness error: {type(exc).__name__}: {exc}")
    finally:
        run.teardown()
    run.summary.durations_s["total"] = round(time.monotonic() - run.started, 1)
    run.summary.ok = not run.summary.anomalies
    return run.summary


class BankRun:
    def __init__(self, cfg: BankConfig) -> None:
        self.cfg = cfg
        self.summary = Summary(cfg.backend, config={k: str(v) for k, v in asdict(cfg).items()})
        self.started = time.monotonic()
        shutil.rmtree(cfg.workdir, ignore_errors=True)
        cfg.workdir.mkdir(parents=True)
        self.summary.workdir = str(cfg.workdir)
        self.database: PostgresDatabase | None = None
        self.servers: list[Server] = []
        self.faults: FaultInjector | None = None
        self.caller: Caller | None = None
        self.url = cfg.database_url
        self.token = ""
        self.credits: dict[str, str] = {}
        self.records: list[dict[str, Any]] = []

    def setup(self) -> None:
        cfg = self.cfg
        if not self.url and cfg.backend == "postgres":
            self.database = PostgresDatabase()
            self.url = self.database.url
        elif not self.url:
            self.url = f"sqlite:///{cfg.workdir / 'ledger.db'}"
        self.token = create_tenant_and_token(self.url, TENANT)
        n_servers = cfg.servers or (2 if cfg.backend == "postgres" else 1)
        self.servers = [
            Server(f"server{i}", self.url, cfg.workdir / f"server{i}.log") for i in range(n_servers)
        ]
        for s in self.servers:
            s.start()
        self.caller = Caller(
            [s.address for s in self.servers],
            self.token,
            attempt_timeout=cfg.attempt_timeout,
            budget=cfg.call_budget,
            max_attempts=cfg.max_attempts,
            rng=random.Random(cfg.seed),
        )
        self.credits = open_accounts(self.caller, cfg)
        self.summary.durations_s["setup"] = round(time.monotonic() - self.started, 1)

    def workload(self) -> None:
        """The workers, with the fault thread running."""
        cfg, summary = self.cfg, self.summary
        began = time.monotonic()
        kinds = [k for k in cfg.faults if k != "pg_restart" or cfg.backend == "postgres"]
        if kinds:
            self.faults = FaultInjector(
                self.servers, kinds, cfg.fault_interval, cfg.seed, cfg.workdir / "faults.jsonl"
            )
            self.faults.start()
        addresses = [s.address for s in self.servers]
        results = run_workers(cfg, addresses, self.token, sorted(self.credits), summary)
        if self.faults is not None:
            self.faults.stop()
            summary.faults = dict(self.faults.counts)
            summary.fault_events = self.faults.events
            summary.anomalies.extend(self.faults.problems)
        summary.durations_s["workload"] = round(time.monotonic() - began, 1)
        self.records = [r for result in results for r in result["records"]]
        for result in results:
            summary.anomalies.extend(f"worker {result['index']}: {a}" for a in result["anomalies"])
            if result["error"]:
                summary.anomalies.append(f"worker {result['index']} crashed: {result['error']}")
        tally(summary, results, self.records)

    def final_phase(self) -> None:
        """Everything up again; every outcome learnt; then the checks."""
        cfg, summary, caller = self.cfg, self.summary, self.caller
        assert caller is not None
        began = time.monotonic()
        if cfg.backend == "postgres" and not wait_postgres(60):
            raise RuntimeError("Postgres is not back")
        for s in self.servers:
            if not s.alive():
                summary.anomalies.append(f"{s.name} was down at the end of the workload")
                s.start()
            if not s.wait_healthy(60):
                summary.anomalies.append(f"{s.name} is not SERVING after the workload")
        final = Final()
        resolve_unknown(caller, self.records, cfg.final_budget, final)
        model = build_model(self.records, self.credits, cfg.initial, final)
        check_ledger(caller, self.records, model, cfg.replay_sample, final)
        engine = make_engine(self.url, pool_size=1)
        try:
            final.anomalies.extend(f"SQL invariant: {p}" for p in invariant_violations(engine))
        finally:
            engine.dispose()
        for s in self.servers:
            if not s.terminate():
                final.anomalies.append(f"{s.name} did not stop within 20 s of SIGTERM at the end")
            elif s.proc is not None and s.proc.returncode != 0:
                final.anomalies.append(f"{s.name} exited with {s.proc.returncode} after SIGTERM at the end")
        scan_server_logs([s.log_path for s in self.servers], final)
        summary.final = final.stats
        summary.anomalies.extend(final.anomalies)
        summary.durations_s["final"] = round(time.monotonic() - began, 1)
        with (cfg.workdir / "records.jsonl").open("w") as f:
            for r in self.records:
                f.write(json.dumps(r) + "\n")

    def teardown(self) -> None:
        """Whatever happened: no fault thread, no server, no database left behind."""
        if self.faults is not None and self.faults.is_alive():
            self.faults.stop()
        if self.caller is not None:
            self.caller.close()
        for s in self.servers:
            s.kill9()
        if self.database is not None and self.cfg.keep_database:
            print(f"kept the database: {self.database.url}", flush=True)
        elif self.database is not None:
            try:
                self.database.drop()
            except Exception as exc:
                self.summary.anomalies.append(f"could not drop {self.database.name}: {exc}")


def open_accounts(caller: Caller, cfg: BankConfig) -> dict[str, str]:
    """N accounts, each funded by one CREDIT of cfg.initial; account -> credit name."""
    credits: dict[str, str] = {}
    for i in range(cfg.accounts):
        request = account_service_pb2.CreateAccountRequest(
            account=account_pb2.Account(currency=CURRENCY, external_ref=f"bank-{i}", balance_floor=0),
            request_id=str(uuid.uuid4()),
        )
        outcome = caller.call("CreateAccount", request)
        if outcome.status != "ok":
            raise RuntimeError(f"CreateAccount: {outcome.code} {outcome.reason} {outcome.message}")
        name = account_service_pb2.CreateAccountResponse.FromString(outcome.response).account.name
        credit = tx_pb.CreateTransactionRequest(
            transaction=transaction_pb2.Transaction(
                account=name,
                direction=transaction_pb2.DIRECTION_CREDIT,
                amount=cfg.initial,
                currency=CURRENCY,
                kind=transaction_pb2.TRANSACTION_KIND_TOP_UP,
                description="bank test funding",
            ),
            request_id=str(uuid.uuid4()),
        )
        outcome = caller.call("CreateTransaction", credit)
        if outcome.status != "ok":
            raise RuntimeError(f"funding credit: {outcome.code} {outcome.reason} {outcome.message}")
        credits[name] = tx_pb.CreateTransactionResponse.FromString(outcome.response).transaction.name
    return credits


def run_workers(
    cfg: BankConfig, addresses: list[str], token: str, accounts: list[str], summary: Summary
) -> list[dict[str, Any]]:
    """M client processes (spawned: no gRPC state crosses a fork); each writes its
    records to a file. One that outlives its bound is killed (by pid) and reported."""
    ctx = multiprocessing.get_context("spawn")
    counters = ctx.Array("q", N_COUNTERS)
    procs = []
    for i in range(cfg.workers):
        wcfg = WorkerConfig(
            index=i,
            addresses=addresses,
            token=token,
            accounts=accounts,
            currency=CURRENCY,
            initial_total=cfg.initial * cfg.accounts,
            ops=cfg.ops,
            seconds=cfg.seconds,
            seed=cfg.seed,
            out_path=str(cfg.workdir / f"worker{i}.json"),
            attempt_timeout=cfg.attempt_timeout,
            call_budget=cfg.call_budget,
            max_attempts=cfg.max_attempts,
        )
        proc = ctx.Process(target=run_worker, args=(wcfg, counters), name=f"bank-worker-{i}", daemon=True)
        proc.start()
        procs.append((wcfg, proc))
    # Bound: the workload, then the open holds' resolution, then start-up slack.
    deadline = time.monotonic() + cfg.seconds + cfg.call_budget * 6 + 60
    results = []
    for wcfg, proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(10)
            summary.anomalies.append(f"worker {wcfg.index} did not finish in time; killed")
        path = Path(wcfg.out_path)
        if path.exists():
            results.append(json.loads(path.read_text()))
        else:
            summary.anomalies.append(f"worker {wcfg.index} left no results (exit {proc.exitcode})")
    return results


def tally(summary: Summary, results: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
    ops: Counter[str] = Counter()
    reads: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    for result in results:
        ops.update(result["ops"])
        reads.update(result["reads"])
        codes.update(result["attempt_codes"])
    summary.ops, summary.reads, summary.attempt_errors = dict(ops), dict(reads), dict(codes)
    summary.mutations = len(records)
    summary.acknowledged = sum(1 for r in records if r["status"] == "ok")
    summary.refused = sum(1 for r in records if r["status"] == "refused")
    summary.unanswered = sum(1 for r in records if r["status"] == "unknown")
    summary.retried = sum(1 for r in records if r["attempts"] > 1)
    summary.attempts = sum(r["attempts"] for r in records)


def _parser() -> argparse.ArgumentParser:
    d = BankConfig()
    p = argparse.ArgumentParser(
        prog="python -m chaos.bank",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--accounts", type=int, default=d.accounts)
    p.add_argument("--initial", type=int, default=d.initial, help="minor units each account starts with")
    p.add_argument("--workers", type=int, default=d.workers, help="client processes")
    p.add_argument("--ops", type=int, default=d.ops, help="operations per worker (at most)")
    p.add_argument("--seconds", type=float, default=d.seconds, help="workload duration per backend (at most)")
    p.add_argument(
        "--faults",
        default=",".join(d.faults),
        help=f"comma-separated, of {','.join(ALL_FAULTS)} ('' for none); pg_restart only on Postgres",
    )
    p.add_argument("--pg-restart", action="store_true", help="add pg_restart to --faults")
    p.add_argument(
        "--fault-interval", type=float, default=d.fault_interval, help="mean seconds between faults"
    )
    p.add_argument("--attempt-timeout", type=float, default=d.attempt_timeout)
    p.add_argument(
        "--call-budget", type=float, default=d.call_budget, help="seconds per call, retries included"
    )
    p.add_argument("--replay-sample", type=int, default=d.replay_sample, help="-1: replay every acknowledged")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workdir", default="var/chaos", help="logs and records go to WORKDIR/<backend>/")
    p.add_argument("--json", default="", help="write the summaries here as JSON")
    p.add_argument("--database-url", default="", help="use this database instead of a fresh one")
    p.add_argument("--keep-database", action="store_true", help="do not drop the fresh Postgres database")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    faults = tuple(f for f in args.faults.split(",") if f)
    if args.pg_restart and "pg_restart" not in faults:
        faults = (*faults, "pg_restart")
    unknown = set(faults) - set(ALL_FAULTS)
    if unknown:
        print(f"unknown faults: {sorted(unknown)}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    summaries = []
    for backend in backends:
        if backend == "postgres" and not args.database_url and not postgres_is_up():
            print("Postgres is not reachable on 127.0.0.1:5432", file=sys.stderr)
            return 2
        cfg = BankConfig(
            backend=backend,
            database_url=args.database_url,
            workdir=Path(args.workdir) / backend,
            accounts=args.accounts,
            initial=args.initial,
            workers=args.workers,
            ops=args.ops,
            seconds=args.seconds,
            faults=faults,
            fault_interval=args.fault_interval,
            attempt_timeout=args.attempt_timeout,
            call_budget=args.call_budget,
            replay_sample=args.replay_sample,
            seed=seed,
            keep_database=args.keep_database,
        )
        print(
            f"bank test on {backend} (seed {seed}): {cfg.workers} workers, up to {cfg.seconds:.0f}s",
            flush=True,
        )
        summary = run_bank(cfg)
        print(summary.text(), flush=True)
        summaries.append(summary)
    ok = all(s.ok for s in summaries)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "seed": seed,
            "ok": ok,
            "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "runs": [asdict(s) for s in summaries],
        }
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"summary written to {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
