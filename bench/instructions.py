"""`python -m bench.instructions`: a ledger-server's CPU instructions per call, counted by
valgrind's callgrind.

Unlike seconds, an instruction count hardly depends on what else the machine is doing
(two runs of the same code agree within ~0.5 %), so it shows a change of a few percent
that calls/s on a shared machine cannot. It counts instructions, not time: a change that
trades instructions for waits (round trips, locks, thread switches) needs bench.threads or
make bench as well.

Starts one `ledger-server serve` under callgrind on a fresh database, seeds accounts,
makes --warmup calls of one scenario, zeroes the server's counters, makes --calls calls
(--in-flight at a time, from this process), dumps the counters and prints the server's
instructions per call: every thread of it, whatever it was doing in that window. About a
minute for 1000 CreateTransaction calls (callgrind runs the server ~50x slower).
Loopback only."""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc

from bench.ops import ONE_SERVER_SCENARIOS, Op, Workload, make_op
from bench.seed import seed_accounts
from bench.servers import PostgresDatabase, ServerProcess, bootstrap_token

_SUMMARY = re.compile(rb"^summary:\s+(\d+)", re.M)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--scenario", choices=ONE_SERVER_SCENARIOS, default="create_spread")
    parser.add_argument("--calls", type=int, default=1000, help="counted calls")
    parser.add_argument("--warmup", type=int, default=200, help="calls before the counters are zeroed")
    parser.add_argument("--in-flight", type=int, default=8, help="calls kept in flight")
    parser.add_argument("--accounts", type=int, default=100, help="accounts of the spread case")
    parser.add_argument("--batch", type=int, default=100, help="postings per call of batch_create")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--save", type=Path, help="keep the window's callgrind dump (for callgrind_annotate)")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="a flag for `ledger-server serve`, repeatable: --server-arg=--metrics-listen=127.0.0.1:0",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (callgrind) is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ledger-instructions-") as tmp:
        out = Path(tmp) / "callgrind.out"
        database = PostgresDatabase(args.postgres_url) if args.backend == "postgres" else None
        try:
            url = database.url if database else f"sqlite:///{tmp}/ledger.db"
            token = bootstrap_token(url)
            # Uninstrumented until the window: start-up and seeding run ~4x faster.
            wrapper = ("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}")
            with ServerProcess(
                url,
                Path(tmp) / "server.log",
                wrapper=wrapper,
                start_timeout=300,
                extra_args=tuple(args.server_arg),
            ) as server:
                workload = Workload(args.scenario, token, (), ())
                if args.scenario != "health":
                    accounts = seed_accounts(server.address, token, args.accounts, 10)
                    batch = args.batch if args.scenario == "batch_create" else 1
                    workload = Workload(args.scenario, token, accounts.spread, accounts.hot, batch)
                asyncio.run(_calls(server.address, workload, args.warmup, args.in_flight))
                _callgrind_control("-i", "on", server.pid)  # count from here
                _callgrind_control("-z", server.pid)
                asyncio.run(_calls(server.address, workload, args.calls, args.in_flight))
                _callgrind_control("-d", server.pid)  # dump what the window counted
            dumped = list(out.parent.glob(f"{out.name}.*"))  # the window's dump (-d)
            counted = sum(_summary(path) for path in dumped)
            if args.save is not None and dumped:
                shutil.copy(dumped[0], args.save)
        finally:
            if database is not None:
                database.drop()
    per = "call" if args.scenario != "batch_create" else f"call of {args.batch} postings"
    print(
        f"{args.scenario} on {args.backend}, {args.in_flight} in flight: "
        f"{counted / args.calls:,.0f} instructions per {per} ({args.calls} calls)"
    )
    return 0


async def _calls(address: str, workload: Workload, count: int, in_flight: int) -> None:
    """`count` calls, `in_flight` at a time; any failure is raised (a count must be of
    calls that did their work)."""
    left = count
    async with grpc.aio.insecure_channel(address) as channel:

        async def caller(op: Op) -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await op()

        # An op of its own per caller: the List pagers follow their own page tokens.
        ops = [make_op(workload, channel, random.Random(i)) for i in range(in_flight)]
        await asyncio.gather(*(caller(op) for op in ops))


def _callgrind_control(*args: str | int) -> None:
    subprocess.run(["callgrind_control", *map(str, args)], check=True, capture_output=True, timeout=120)


def _summary(dump: Path) -> int:
    """A dump's instruction total (callgrind writes the counted events' sum as `summary:`)."""
    found = _SUMMARY.search(dump.read_bytes())
    if found is None:
        raise ValueError(f"no summary line in {dump}")
    return int(found.group(1))


if __name__ == "__main__":
    sys.exit(main())
