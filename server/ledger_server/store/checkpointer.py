"""SQLite checkpoints in a thread of their own, off the write path.

In WAL mode a commit appends pages to the `-wal` file, and a checkpoint copies them back
into the database file so that the WAL can start over. By default the connection that
commits runs one itself once the WAL holds 1,000 pages: the group-commit writer then stops
for the copy and an fsync of the database file while every call in flight waits on it
(~4 pages a posting, so every ~250 postings). Here a thread runs a PASSIVE checkpoint (it
never blocks the writer, and never waits for one) at most every INTERVAL_SECONDS after a
commit, on a connection of its own, and the writer's own automatic checkpoint stays only
as a backstop at BACKSTOP_PAGES: under steady writes the thread rarely finishes between
two commits, so the WAL starts over only once the writer's backstop has copied what the
thread has not yet (the `-wal` file then holds ~40-50 MB). Measured (docs/performance.md):
atomic batches of 100 +8-30 %, of 1000 -2 to +14 %; single CreateTransaction calls
within noise, the writer's system CPU per call -2 to -33 %.

A checkpoint only moves committed pages from one file to the other: what a commit made
durable (its fsync of the WAL) stays durable whether or not one has run."""

from __future__ import annotations

import logging
import sqlite3
import threading

from sqlalchemy import Connection, Engine

from ledger_server.os_thread import name_this_thread
from ledger_server.store.engine import make_engine

log = logging.getLogger("ledger.store")
INTERVAL_SECONDS = 0.2
# ~40 MB of WAL with 4 KiB pages: how far the WAL may grow before the writer copies back
# what this thread has not (SQLite's wal_autocheckpoint, on the writer's connection).
BACKSTOP_PAGES = 10_000


class Checkpointer:
    """Checkpoints the SQLite database at `url` after commits (`committed`), in a thread."""

    def __init__(self, url: str) -> None:
        self._engine: Engine = make_engine(url, pool_size=1)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="checkpoint", daemon=True)
        self._thread.start()

    @staticmethod
    def take_over(conn: Connection) -> None:
        """Make `conn` (a writer's) leave routine checkpoints to the thread."""
        raw: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        raw.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")

    def committed(self) -> None:
        """A writer committed: checkpoint soon."""
        self._wake.set()

    def close(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)
        self._engine.dispose()

    def _run(self) -> None:
        name_this_thread()
        while True:
            self._wake.wait()
            if self._stopping.is_set():
                return
            self._wake.clear()
            self._checkpoint()
            # Each checkpoint costs two fsyncs, and copies a page once however many commits
            # wrote it: after every commit the thread took more CPU than the writer saved,
            # every 50 ms ~25 us per CreateTransaction, every 200 ms ~9 (measured).
            if self._stopping.wait(INTERVAL_SECONDS):
                return

    def _checkpoint(self) -> None:
        try:
            with self._engine.connect() as conn:
                raw: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
                raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception:  # the backstop keeps the WAL bounded meanwhile: log once, go on
            if not self._failing:
                log.warning("checkpoint failed; the writer's own checkpoints go on", exc_info=True)
            self._failing = True
            return
        if self._failing:
            log.info("checkpoints resumed")
        self._failing = False
