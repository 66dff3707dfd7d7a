"""Where the open WatchTransactionChanges streams wait for the change feed to grow, and
the pages they share.

A stream reads the feed, and when it is caught up waits here on the event loop (holding
no thread) until a commit (`committed`, called from any thread: by this server's
group-commit writers after every commit, and on Postgres by the thread that hears other
processes announce theirs, store/commit_notices.py), until the poll interval passes (on
SQLite other processes' commits announce nothing), or until the server shuts down.
`committed` is on every commit's path: it counts, and schedules at most one wake-up on
the loop at a time, and only while a stream waits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from typing import Any, NamedTuple

from ledger_server.api.aio_bridge import wait_on_loop
from ledger_server.api.interceptor import ShuttingDown

# A caught-up stream reads the feed again at most this often: under a steady flow of
# commits each read then brings what was committed meanwhile, not one commit's changes,
# which cut what watches cost the writes (docs/performance.md).
MIN_READ_SECONDS = 0.02


class ChangeWaiters:
    def __init__(self, loop: asyncio.AbstractEventLoop, poll_seconds: float) -> None:
        self._loop = loop
        self._poll_seconds = poll_seconds
        self._woken: asyncio.Event | None = None  # made on the loop, by the first wait
        self._waiting = 0  # streams waiting now; changed on the loop only
        self._wake_scheduled = False
        self._closed = False
        # Bumped by every commit: a stream reads it before it reads the feed, and does
        # not wait if it moved since (the commit may have come after that read).
        self.commits = 0

    def committed(self) -> None:
        """A commit of this server's writes has happened (any thread)."""
        self.commits += 1  # two writers may bump it as one: it still moves
        if self._waiting and not self._wake_scheduled:
            self._wake_scheduled = True
            self._loop.call_soon_threadsafe(self._wake)

    def close(self) -> None:
        """The server is shutting down: every stream waiting, or about to, ends (any thread)."""
        self._closed = True
        self._loop.call_soon_threadsafe(self._wake)

    def wait(self, seen: int, read_at: float) -> None:
        """From a stream's behavior: return once a commit after `seen` (a value of
        `commits`) has happened or the poll interval has passed, and no sooner than
        MIN_READ_SECONDS after `read_at` (time.monotonic() of the stream's last read);
        raise ShuttingDown (the call's UNAVAILABLE) when the server is shutting down.
        Waits on the event loop."""
        wait_on_loop(self._wait(seen, read_at), self._loop)

    async def _wait(self, seen: int, read_at: float) -> None:
        # Counted as waiting before `commits` is compared: a commit either sees this
        # waiter (and wakes it) or has bumped `commits` before the comparison.
        self._waiting += 1
        try:
            if self._woken is None:
                self._woken = asyncio.Event()
            if self.commits == seen and not self._closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._woken.wait(), self._poll_seconds)
        finally:
            self._waiting -= 1
        if not self._closed and (early := read_at + MIN_READ_SECONDS - time.monotonic()) > 0:
            await asyncio.sleep(early)
        if self._closed:
            raise ShuttingDown

    def _wake(self) -> None:
        self._wake_scheduled = False  # first: a commit from now on schedules a wake of its own
        woken, self._woken = self._woken, asyncio.Event()
        if woken is not None:
            woken.set()  # wakes the streams waiting on it; later ones wait on the new event


class SharedPage(NamedTuple):
    response: Any  # the WatchTransactionChangesResponse, converted once
    seen: int  # ChangeWaiters.commits before it was read
    read_at: float  # time.monotonic() before it was read
    caught_up: bool  # nothing after it when it was read


class SharedPages:
    """The watches' recent pages that hold changes, by where they start (tenant, page
    token, page size): watches at the same place in the feed (those one commit woke
    together) send the page one of them read and converted, rather than each doing both.
    An older page is still right to send: the feed never places a change before a token
    it has handed out, so a page read from a token is a prefix of any later read from it;
    its `seen` makes the watch read again at once if commits came since. Used on the event
    loop only (watches run there), so without a lock."""

    SIZE = 256  # ~ the number of places in the feed watches are at, at once

    def __init__(self) -> None:
        self._pages: OrderedDict[tuple[str, str, int], SharedPage] = OrderedDict()

    def get(self, key: tuple[str, str, int]) -> SharedPage | None:
        page = self._pages.get(key)
        if page is not None:
            self._pages.move_to_end(key)
        return page

    def keep(self, key: tuple[str, str, int], page: SharedPage) -> None:
        self._pages[key] = page
        if len(self._pages) > self.SIZE:
            self._pages.popitem(last=False)
