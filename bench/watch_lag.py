"""`python -m bench.watch_lag`: how soon a committed change reaches a watch
(WatchTransactionChanges) when the watched server committed it and when another server on
the same Postgres database did (a replica: its commits reach the watch through
NOTIFY/LISTEN, server/ledger_server/store/commit_notices.py, or else at the watch's next
poll of the feed).

Starts two `ledger-server serve` on a fresh Postgres database, opens one watch on the
first, and makes --calls CreateTransaction calls, one at a time and at most --rate a
second, alternately on each server. A change's lag runs from its call's reply to its
arrival on the watch. Prints the lag's p50, p90 and p99 for each writing server. Loopback
only; bounded by --calls (each change waited for at most --wait seconds)."""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from ledger_client import LedgerClient

from bench.config import PG_ADMIN_URL
from bench.servers import PostgresDatabase, ServerProcess, bootstrap_token

CURRENCY = "USD"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.watch_lag", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="CreateTransaction calls, half on each server")
    parser.add_argument("--rate", type=float, default=40.0, help="at most this many calls a second")
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a change at most")
    parser.add_argument(
        "--pg-url", default=PG_ADMIN_URL, help="Postgres maintenance database (env LEDGER_BENCH_PG_URL)"
    )
    parser.add_argument(
        "--server-arg", action="append", default=[], help="a flag for both servers, repeatable"
    )
    return parser


def _watch(client: LedgerClient, arrivals: queue.Queue[tuple[str, float]]) -> None:
    try:
        for change in client.watch_transaction_changes():
            arrivals.put((change.transaction.name, time.perf_counter()))
    except Exception as exc:  # the client closed at the end, or a failure: end the thread
        arrivals.put((f"ended: {exc!r}", time.perf_counter()))


def _percentiles(lags: list[float]) -> str:
    cuts = statistics.quantiles(lags, n=100, method="inclusive")
    return f"p50 {cuts[49] * 1e3:7.1f} ms   p90 {cuts[89] * 1e3:7.1f} ms   p99 {cuts[98] * 1e3:7.1f} ms"


def measure(addresses: tuple[str, str], token: str, args: argparse.Namespace) -> dict[str, list[float]]:
    arrivals: queue.Queue[tuple[str, float]] = queue.Queue()
    lags: dict[str, list[float]] = {"watched server": [], "other server": []}
    with (
        LedgerClient(addresses[0], token=token) as watching,
        LedgerClient(addresses[0], token=token) as own,
        LedgerClient(addresses[1], token=token) as other,
    ):
        account = own.create_account(currency=CURRENCY).name
        watcher = threading.Thread(target=_watch, args=(watching, arrivals), daemon=True)
        watcher.start()
        for i in range(args.calls):
            started = time.perf_counter()
            writer, label = (own, "watched server") if i % 2 == 0 else (other, "other server")
            name = writer.credit(account, 1, CURRENCY).name
            replied = time.perf_counter()
            arrived_name, arrived = arrivals.get(timeout=args.wait)
            if arrived_name != name:
                raise RuntimeError(f"the watch sent {arrived_name}, expected {name}")
            lags[label].append(arrived - replied)
            time.sleep(max(0.0, 1 / args.rate - (time.perf_counter() - started)))
        watching.close()
        watcher.join(args.wait)
    return lags


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    extra = tuple(args.server_arg)
    with tempfile.TemporaryDirectory(prefix="watch-lag-") as tmp, PostgresDatabase(args.pg_url) as database:
        token = bootstrap_token(database.url)
        with (
            ServerProcess(database.url, Path(tmp) / "watched.log", extra) as watched,
            ServerProcess(database.url, Path(tmp) / "other.log", extra) as writing,
        ):
            lags = measure((watched.address, writing.address), token, args)
    for label, values in lags.items():
        print(f"{label:>15}: {len(values)} changes   {_percentiles(values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
