"""Postgres: commits announced from one process to the others on the same database.

A server wakes its open watches (WatchTransactionChanges) after its own commits; the
commits of other processes (replicas, `ledger-server expire`) it would see only at its
next poll of the feed. Here each process announces its commits with NOTIFY on one channel,
and a process that listens (a server) hears the others' announcements with LISTEN.

Announcing is off the write path: a writer only sets an event after its commit, and a
thread of this module sends one NOTIFY for whatever commits came since its last one, at
most every SPACING_SECONDS, in an autocommit transaction of its own. A NOTIFY inside the
writers' transactions would have serialized their commits across every process: a
notifying transaction holds a cluster-wide lock from its pre-commit until its commit is
flushed. The announcement follows the commit, so whoever hears it can read what was
committed. And a process announces nothing while no other process listens (it looks at
most every CHECK_SECONDS): a server alone on its database pays for none of this.

An announcement is a hint, not a record: one lost (the database restarting, say) only
leaves a watch to its poll, and a listener that reconnects wakes its watches once for
whatever it may have missed."""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import uuid
from collections.abc import Callable

import psycopg

from ledger_server.os_thread import name_this_thread

log = logging.getLogger("ledger.store")
CHANNEL = "ledger_commits"
# One NOTIFY per process at most this often, whatever the commits: every 10 ms, the
# announcing and the hearing took ~5 % of a busy Postgres server's CPU; every 50 ms ~1.3 %
# (bench.threads, docs/performance.md).
SPACING_SECONDS = 0.05
# How long a look for other processes' listeners holds: a process that starts listening
# may miss others' announcements for that long (its watches poll meanwhile).
CHECK_SECONDS = 1.0
RETRY_SECONDS = 1.0  # after a failed connection or NOTIFY, before the next try
# The connections' application_name (pg_stat_activity shows them by it).
LISTENER_NAME = "ledger commit listener"
ANNOUNCER_NAME = "ledger commit announcer"


def _connect(conninfo: str, application_name: str) -> psycopg.Connection:
    conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=5, application_name=application_name)
    # What an announcement commits needs no durability: a hint lost in a crash costs a poll.
    conn.execute("SET synchronous_commit = off")
    return conn


class Announcer:
    """Announces this process's commits (`committed`, from any thread) on CHANNEL, with
    `origin` (this process's) as the payload so that its own listener can ignore them,
    while a process other than this one listens: `own_listener()` is the backend pid of
    this process's listening connection, if any."""

    def __init__(self, conninfo: str, origin: str, own_listener: Callable[[], int | None]) -> None:
        self._conninfo = conninfo
        self._origin = origin
        self._own_listener = own_listener
        self._conn: psycopg.Connection | None = None
        self._others_listen = False
        self._looked_at = -CHECK_SECONDS  # time.monotonic() of the last look for listeners
        self.announced = self.spared = 0  # NOTIFYs sent, and left unsent for want of listeners
        self._unannounced = False
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="announce", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        self._unannounced = True
        self._wake.set()

    def close(self, timeout: float = 10.0) -> None:
        """Announces what is unannounced (one last try), then ends."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        name_this_thread()
        while True:
            self._wake.wait()
            self._wake.clear()
            stopping, pause = self._stopping.is_set(), SPACING_SECONDS
            if self._unannounced:
                self._unannounced = False  # first: a commit from now on is announced again
                if not self._announce():
                    self._unannounced, pause = True, RETRY_SECONDS
                    self._wake.set()  # the retry, after the pause
            if stopping:
                break
            self._stopping.wait(pause)
        if self._conn is not None:
            self._conn.close()

    def _announce(self) -> bool:
        try:
            if self._conn is None:
                self._conn = _connect(self._conninfo, ANNOUNCER_NAME)
            if not self._anyone_else_listens(self._conn):
                self.spared += 1
                return True
            self._conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self._origin))
            self.announced += 1
            return True
        except psycopg.Error as exc:
            log.warning("could not announce commits to other processes (their watches poll): %s", exc)
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            return False

    def _anyone_else_listens(self, conn: psycopg.Connection) -> bool:
        if time.monotonic() - self._looked_at >= CHECK_SECONDS:
            row = conn.execute(
                "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = %s AND pid IS DISTINCT FROM %s)",
                (LISTENER_NAME, self._own_listener()),
            ).fetchone()
            self._others_listen, self._looked_at = bool(row and row[0]), time.monotonic()
        return self._others_listen


class Listener:
    """Calls `heard()` (in its own thread) when a process other than `origin`'s announces
    commits, and once each time it starts listening (for what it may have missed)."""

    def __init__(self, conninfo: str, origin: str, heard: Callable[[], None]) -> None:
        self._conninfo = conninfo
        self._origin = origin
        self._heard = heard
        self._stop_read, self._stop_write = os.pipe()  # close() wakes the poll() with it
        self._stopping = False
        self.backend_pid: int | None = None  # the listening connection's, while it listens
        self._thread = threading.Thread(target=self._run, name="listen", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        self._stopping = True
        os.write(self._stop_write, b"x")
        self._thread.join(timeout)
        os.close(self._stop_read)
        os.close(self._stop_write)

    def _run(self) -> None:
        name_this_thread()
        failing = False
        while not self._stopping:
            try:
                with _connect(self._conninfo, LISTENER_NAME) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.backend_pid = conn.info.backend_pid
                    if failing:
                        log.info("listening to other processes' commits again")
                    failing = False
                    self._heard()
                    self._listen(conn)
            except Exception as exc:  # psycopg's errors above all: listen again after a pause
                self.backend_pid = None
                if not failing:
                    log.warning("not listening to other processes' commits (watches poll meanwhile): %s", exc)
                failing = True
                self._wait(RETRY_SECONDS)

    def _listen(self, conn: psycopg.Connection) -> None:
        while self._wait(None, conn.fileno()):
            # Whatever arrived: the socket is readable, so this does not block.
            if {notice.payload for notice in conn.notifies(timeout=0)} - {self._origin}:
                self._heard()

    def _wait(self, timeout: float | None, fileno: int | None = None) -> bool:
        """Until `fileno` is readable or closed (True), or close() or `timeout` (False).
        poll(), not select(): a busy server may hold file descriptors past select's 1024."""
        poller = select.poll()
        for fd in (self._stop_read, fileno):
            if fd is not None:
                poller.register(fd, select.POLLIN)
        events = poller.poll(None if timeout is None else timeout * 1000)
        return not self._stopping and any(fd == fileno for fd, _ in events)


def new_origin() -> str:
    """A name for this process's announcements, unique to it."""
    return uuid.uuid4().hex
