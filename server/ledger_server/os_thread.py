"""Operating-system names for the server's threads: CPython 3.11 leaves every thread named
after the process (and a new thread inherits its creator's name), so `top -H`, `perf` and
/proc (bench/threads.py) could not tell the event loop from a group-commit writer or from
grpc's poller."""

from __future__ import annotations

import contextlib
import ctypes
import threading
from pathlib import Path
from typing import Any

_PR_SET_NAME = 15
_NAME_BYTES = 15  # the kernel's limit, without the terminating NUL

_prctl: Any
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the names stay Python's own
    _prctl = None


def name_this_thread() -> None:
    """Give the calling thread its Python name at the OS level (cut to 15 bytes)."""
    if _prctl is not None:
        _prctl(_PR_SET_NAME, threading.current_thread().name.encode()[:_NAME_BYTES], 0, 0, 0)


def name_all_threads() -> None:
    """The same for every live Python thread, those of libraries (grpc's poller) included."""
    for thread in threading.enumerate():
        with contextlib.suppress(OSError):  # not Linux, or the thread just ended
            Path(f"/proc/self/task/{thread.native_id}/comm").write_bytes(thread.name.encode()[:_NAME_BYTES])
