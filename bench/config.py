"""What one benchmark run measures, and for how long: the command line of `python -m bench.run`."""

from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

PG_ADMIN_URL = os.environ.get("LEDGER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ("sqlite", "postgres")
# Every scenario, in the order a run measures them (see bench/README.md for each).
SCENARIOS = (
    "raw",  # the raw sqlite3 / psycopg ceilings, no ledger server involved
    "health",  # the trivial-RPC ceiling: grpc.health.v1 Health/Check on the ledger server
    "create_spread",  # CreateTransaction over many accounts
    "create_hot",  # CreateTransaction over 10 accounts
    "batch_create",  # BatchCreateTransactions, atomic, 100 and 1000 postings per call
    "get_account",
    "list_transactions",
    "list_changes",  # ListTransactionChanges pages, the change feed from its start
    "two_servers",  # Postgres: CreateTransaction spread over two server processes
)
DEFAULT_LEVELS = (1, 8, 64)
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class BenchConfig:
    seconds_per_point: float
    warmup_seconds: float
    levels: tuple[int, ...]
    backends: tuple[str, ...]
    scenarios: tuple[str, ...]
    out_dir: Path
    spread_accounts: int
    hot_accounts: int
    load_processes: int
    batch_sizes: tuple[int, ...]
    pg_admin_url: str
    server_args: tuple[str, ...]
    quick: bool

    def wants(self, scenario: str) -> bool:
        return scenario in self.scenarios


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark the ledger against its own ceilings (loopback only).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="shorter points and fewer accounts (about 1 min)"
    )
    parser.add_argument(
        "--seconds-per-point",
        type=float,
        default=None,
        help="measured seconds per point (default 3; quick 0.8)",
    )
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=None,
        help="unmeasured warm-up per point (default 1; quick 0.4)",
    )
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: sqlite,postgres")
    parser.add_argument(
        "--levels", default=",".join(map(str, DEFAULT_LEVELS)), help="calls in flight, e.g. 1,8,64"
    )
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated subset of {SCENARIOS}"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where latest.{json,md,png} go")
    parser.add_argument(
        "--accounts", type=int, default=None, help="accounts of the spread case (default 1000)"
    )
    parser.add_argument("--load-processes", type=int, default=2, help="load generator processes (default 2)")
    parser.add_argument(
        "--pg-url", default=PG_ADMIN_URL, help="Postgres maintenance database (env LEDGER_BENCH_PG_URL)"
    )
    parser.add_argument(
        "--server-args", default="", help="extra `ledger-server serve` flags, e.g. '--workers 32'"
    )
    return parser


def parse_config(argv: list[str] | None = None) -> BenchConfig:
    parser = _parser()
    args = parser.parse_args(argv)
    backends = _csv(args.backends)
    scenarios = _csv(args.scenarios)
    for name, chosen, allowed in (("backend", backends, BACKENDS), ("scenario", scenarios, SCENARIOS)):
        unknown = set(chosen) - set(allowed)
        if unknown:
            parser.error(f"unknown {name}(s) {sorted(unknown)}; choose from {allowed}")
    levels = tuple(sorted({int(level) for level in _csv(args.levels)}))
    if not levels or min(levels) < 1:
        parser.error("--levels needs positive integers")
    quick: bool = args.quick
    seconds = args.seconds_per_point if args.seconds_per_point is not None else (0.8 if quick else 3.0)
    warmup = args.warmup_seconds if args.warmup_seconds is not None else (0.4 if quick else 1.0)
    accounts = args.accounts if args.accounts is not None else (200 if quick else 1000)
    return BenchConfig(
        seconds_per_point=seconds,
        warmup_seconds=warmup,
        levels=levels,
        backends=backends,
        scenarios=tuple(s for s in SCENARIOS if s in scenarios),
        out_dir=args.out,
        spread_accounts=max(accounts, 1),
        hot_accounts=10,
        load_processes=max(args.load_processes, 1),
        batch_sizes=(100, 1000),
        pg_admin_url=args.pg_url,
        server_args=tuple(shlex.split(args.server_args)),
        quick=quick,
    )
