"""The storage ceilings, measured by the benchmark itself in the same run: what the bare
database driver does for the ledger's essential write (insert one entry row, update one
balance row), with no gRPC, validation or idempotency around it.

- raw sqlite3: WAL, synchronous=FULL, BEGIN IMMEDIATE; 1 posting per commit, and 1000;
- raw psycopg: 1 posting per commit on 1 and on N connections (threads)."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from array import array
from collections.abc import Callable
from pathlib import Path

import psycopg

from bench import cpu
from bench.measurement import LoadResult, Measurement, merge

ACCOUNTS = 1000

SQLITE_SCHEMA = """
CREATE TABLE balances (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
CREATE TABLE entries (
    seq INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES balances (id),
    amount INTEGER NOT NULL,
    running_balance INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX entries_account_seq ON entries (account_id, seq);
"""

POSTGRES_SCHEMA = """
CREATE TABLE bench_raw_balances (id INTEGER PRIMARY KEY, balance BIGINT NOT NULL);
CREATE TABLE bench_raw_entries (
    seq BIGSERIAL PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES bench_raw_balances (id),
    amount BIGINT NOT NULL,
    running_balance BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX bench_raw_entries_account_seq ON bench_raw_entries (account_id, seq);
INSERT INTO bench_raw_balances (id, balance) SELECT g, 0 FROM generate_series(0, 999) AS g;
"""


def _timed(
    commit: Callable[[], None], postings_per_commit: int, until_ns: int, from_ns: int, result: LoadResult
) -> None:
    """Commit in a loop until `until_ns`; commits started at or after `from_ns` are counted."""
    latencies: array[int] = array("q")
    while (started := time.monotonic_ns()) < until_ns:
        commit()
        if started >= from_ns:
            latencies.append(time.monotonic_ns() - started)
            result.calls += 1
            result.postings += postings_per_commit
    result.latencies_ns = latencies.tobytes()


def raw_sqlite(directory: Path, per_commit: int, warmup: float, seconds: float) -> Measurement:
    """Postings/s of bare sqlite3 in this process; 'calls' are commits."""
    path = directory / f"raw-sqlite-{per_commit}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "synchronous=FULL"):
            conn.execute(f"PRAGMA {pragma}")
        conn.executescript(SQLITE_SCHEMA)
        conn.executemany("INSERT INTO balances (id, balance) VALUES (?, 0)", ((i,) for i in range(ACCOUNTS)))
        rng = random.Random(per_commit)

        def commit() -> None:
            conn.execute("BEGIN IMMEDIATE")
            for _ in range(per_commit):
                account, amount = rng.randrange(ACCOUNTS), rng.randint(-100, 100)
                conn.execute("UPDATE balances SET balance = balance + ? WHERE id = ?", (amount, account))
                conn.execute(
                    "INSERT INTO entries (account_id, amount, running_balance, created_at) "
                    "VALUES (?, ?, (SELECT balance FROM balances WHERE id = ?), ?)",
                    (account, amount, account, time.time_ns() // 1000),
                )
            conn.execute("COMMIT")

        from_ns = time.monotonic_ns() + int(warmup * 1e9)
        until_ns = from_ns + int(seconds * 1e9)
        result = LoadResult()
        _timed(commit, per_commit, from_ns, from_ns, LoadResult())  # warm-up, not counted
        before = cpu.sample([os.getpid()], [], database=None)
        _timed(commit, per_commit, until_ns, from_ns, result)
        after = cpu.sample([os.getpid()], [], database=None)
        return merge([result], seconds, cpu.usage(before, after, with_database=False))
    finally:
        conn.close()


def prepare_postgres(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(POSTGRES_SCHEMA)


def raw_postgres(dsn: str, connections: int, warmup: float, seconds: float) -> Measurement:
    """Postings/s of bare psycopg, one posting per commit, `connections` threads each with
    its own connection; 'calls' are commits. Run prepare_postgres(dsn) once first."""
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(connections)]
    database = conns[0].info.dbname
    results = [LoadResult() for _ in conns]
    start_ns = time.monotonic_ns() + 200_000_000
    from_ns = start_ns + int(warmup * 1e9)
    until_ns = from_ns + int(seconds * 1e9)

    def run(index: int) -> None:
        conn, rng = conns[index], random.Random(index)

        def commit() -> None:
            account, amount = rng.randrange(ACCOUNTS), rng.randint(-100, 100)
            with conn.transaction():
                row = conn.execute(
                    "UPDATE bench_raw_balances SET balance = balance + %s WHERE id = %s RETURNING balance",
                    (amount, account),
                ).fetchone()
                assert row is not None
                conn.execute(
                    "INSERT INTO bench_raw_entries (account_id, amount, running_balance, created_at) "
                    "VALUES (%s, %s, %s, %s)",
                    (account, amount, row[0], time.time_ns() // 1000),
                )

        time.sleep(max(start_ns - time.monotonic_ns(), 0) / 1e9)
        _timed(commit, 1, until_ns, from_ns, results[index])

    threads = [threading.Thread(target=run, args=(i,), name=f"raw-pg-{i}") for i in range(connections)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(max(from_ns - time.monotonic_ns(), 0) / 1e9)
        before = cpu.sample([os.getpid()], [], database=database)
        time.sleep(max(until_ns - time.monotonic_ns(), 0) / 1e9)
        after = cpu.sample([os.getpid()], [], database=database)
        for thread in threads:
            thread.join()
    finally:
        for conn in conns:
            conn.close()
    return merge(results, seconds, cpu.usage(before, after, with_database=True))
