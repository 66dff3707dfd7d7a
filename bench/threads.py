"""`python -m bench.threads`: where a ledger-server's CPU goes, thread by thread.

Starts one `ledger-server serve` on a fresh database, seeds accounts, keeps N calls of one
scenario in flight, and prints per level the throughput, p50 and p99 and, for each server
thread (by its OS name, see server/ledger_server/os_thread.py), its user and system CPU and
its context switches per call, counted from /proc over the measured window only. It is how
the event loop was found to be the bottleneck (docs/performance.md). Loopback only; about
(warm-up + seconds + 1) s per level after a few seconds of set-up."""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench.cpu import stat_fields, user_system_seconds
from bench.load import LoadPool
from bench.ops import ONE_SERVER_SCENARIOS, Workload
from bench.seed import seed_accounts
from bench.servers import PostgresDatabase, ServerProcess, bootstrap_token

_SWITCHES = re.compile(rb"ctxt_switches:\s+(\d+)")


@dataclass
class ThreadTimes:
    user: float = 0.0  # seconds
    system: float = 0.0
    switches: int = 0


def thread_times(pid: int) -> dict[str, ThreadTimes]:
    """Each thread of `pid` by OS name, threads of one name summed (rpc_0, rpc_1... as rpc)."""
    times: dict[str, ThreadTimes] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = stat_fields(f"{pid}/task/{task.name}")
        if stat is None:  # the thread ended meanwhile
            continue
        try:
            status = (task / "status").read_bytes()
        except OSError:
            continue
        name, fields = stat
        t = times.setdefault(re.sub(r"_\d+$", "", name), ThreadTimes())
        user, system = user_system_seconds(fields)
        t.user += user
        t.system += system
        t.switches += sum(int(n) for n in _SWITCHES.findall(status))
    return times


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--scenario", choices=ONE_SERVER_SCENARIOS, default="create_spread")
    parser.add_argument("--in-flight", default="8,64", help="calls kept in flight, comma-separated")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of calls before each window")
    parser.add_argument("--accounts", type=int, default=1000, help="accounts of the spread case")
    parser.add_argument("--batch", type=int, default=1000, help="postings per call of batch_create")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    levels = [int(n) for n in args.in_flight.split(",")]
    with tempfile.TemporaryDirectory(prefix="ledger-threads-") as tmp:
        database = PostgresDatabase(args.postgres_url) if args.backend == "postgres" else None
        try:
            url = database.url if database else f"sqlite:///{tmp}/ledger.db"
            token = bootstrap_token(url)
            pool = LoadPool(2)
            try:
                with ServerProcess(url, Path(tmp) / "server.log") as server:
                    accounts = seed_accounts(server.address, token, args.accounts, 10)
                    batch = args.batch if args.scenario == "batch_create" else 1
                    workload = Workload(args.scenario, token, accounts.spread, accounts.hot, batch)
                    for in_flight in levels:
                        samples: list[dict[str, ThreadTimes]] = []
                        m = pool.measure(
                            workload=workload,
                            addresses=(server.address,),
                            in_flight=in_flight,
                            warmup=args.warmup,
                            seconds=args.seconds,
                            server_pids=[server.pid],
                            database=database.name if database else None,
                            window=partial(_sample, samples, server.pid),
                        )
                        each, count = ("posting", m.postings) if batch > 1 else ("call", m.calls)
                        print(
                            f"{args.scenario} on {args.backend}, {in_flight} in flight: {m.calls_per_s:,.0f} "
                            f"calls/s, {m.postings_per_s:,.0f} postings/s, p50 {m.p50_ms or 0:.2f} ms, "
                            f"p99 {m.p99_ms or 0:.2f} ms; CPU per {each}:"
                        )
                        print(_per_call(samples[0], samples[1], count, each))
            finally:
                pool.close()
        finally:
            if database:
                database.drop()
    return 0


def _sample(samples: list[dict[str, ThreadTimes]], pid: int) -> None:
    samples.append(thread_times(pid))


def _per_call(before: dict[str, ThreadTimes], after: dict[str, ThreadTimes], calls: int, each: str) -> str:
    """One line per thread that used CPU in the window, the busiest first; `calls` counts
    the `each` (call, or posting of a batch) that the figures are per."""
    per_call = 1e6 / max(calls, 1)
    rows = []
    for name, t in after.items():
        b = before.get(name, ThreadTimes())
        user, system = (t.user - b.user) * per_call, (t.system - b.system) * per_call
        if user + system > 0:
            rows.append((user + system, name, user, system, (t.switches - b.switches) / max(calls, 1)))
    lines = [f"  {'thread':<16}{'user us/' + each:>17}{'system us/' + each:>19}{'switches/' + each:>18}"]
    for _, name, user, system, switches in sorted(rows, reverse=True):
        lines.append(f"  {name:<16}{user:>17.0f}{system:>19.0f}{switches:>18.2f}")
    # The whole process: on a shared machine its CPU per call varies less than calls/s.
    total = [sum(column) for column in zip(*(row[2:] for row in rows), strict=True)] if rows else [0, 0, 0]
    lines.append(f"  {'(all)':<16}{total[0]:>17.0f}{total[1]:>19.0f}{total[2]:>18.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
