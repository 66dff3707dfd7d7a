"""Operating-system names for the server's threads: CPython 3.11 leaves every thread named
after the process (and a new thread inherits its creator's name), so `top -H`, `perf` and
/proc (bench/threads.py) could not tell the event loop from a group-commit writer or from
grpc's poller."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

_NAME_BYTES = 15  # the kernel's limit, without the terminating NUL


def name_this_thread() -> None:
    """Give the calling thread its Python name at the OS level (cut to 15 bytes)."""
    _name(threading.current_thread())


def name_all_threads() -> None:
    """The same for every live Python thread, those of libraries (grpc's poller) included."""
    for thread in threading.enumerate():
        _name(thread)


def _name(thread: threading.Thread) -> None:
    with contextlib.suppress(OSError):  # not Linux, or the thread just ended
        Path(f"/proc/self/task/{thread.native_id}/comm").write_bytes(thread.name.encode()[:_NAME_BYTES])
