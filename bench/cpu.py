"""CPU time of the server, database and load processes over a measurement window, from
/proc/<pid>/stat (utime + stime), reported as a percentage of one core."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
# The process title of a Postgres client backend: "postgres: 15/main: <user> <db> <host>(<port>) <state>".
_CLIENT_BACKEND = re.compile(r"\S+\(\d+\)|\[local\]")


def stat_fields(entry: int | str) -> tuple[str, list[str]] | None:
    """(comm, the fields after comm) of one process (`entry` its pid) or one thread
    (`entry` "pid/task/tid"), or None once it is gone."""
    try:
        text = Path(f"/proc/{entry}/stat").read_text()
    except OSError:
        return None
    open_paren, close_paren = text.find("("), text.rfind(")")
    return text[open_paren + 1 : close_paren], text[close_paren + 2 :].split()


def user_system_seconds(fields: list[str]) -> tuple[float, float]:
    # fields[0] is field 3 (state) of proc(5): utime is field 14, stime field 15.
    return int(fields[11]) / TICKS_PER_SECOND, int(fields[12]) / TICKS_PER_SECOND


def _cpu_seconds(fields: list[str]) -> float:
    return sum(user_system_seconds(fields))


def process_cpu_seconds(pids: Iterable[int]) -> float:
    total = 0.0
    for pid in pids:
        stat = stat_fields(pid)
        if stat is not None:
            total += _cpu_seconds(stat[1])
    return total


def _serves_database(pid: str, database: str) -> bool:
    """False for client backends of other databases (other people's tests on the same
    Postgres); True for ours and for the shared processes (postmaster, WAL writer, ...)."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return not _CLIENT_BACKEND.search(title) or f" {database} " in title


def postgres_cpu_seconds(database: str) -> dict[int, float]:
    """pid -> CPU time of the processes named `postgres` that work for `database`, and under
    -pid of the postmaster the CPU time of its children that have exited (cutime + cstime):
    a backend that ends inside a window (a connection closed by the server's pool) still
    counts, whatever database it served."""
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = stat_fields(entry.name)
            if stat is None or stat[0] != "postgres":
                continue
            parent = stat_fields(stat[1][1])  # fields[1] is field 4, the parent's pid
            if parent is None or parent[0] != "postgres":  # the postmaster
                times[-int(entry.name)] = (int(stat[1][13]) + int(stat[1][14])) / TICKS_PER_SECOND
            if _serves_database(entry.name, database):
                times[int(entry.name)] = _cpu_seconds(stat[1])
    return times


def machine_busy_seconds() -> float:
    """CPU time all cores spent busy since boot (everything but idle and iowait), /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    jiffies = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(jiffies) - jiffies[3] - jiffies[4]) / TICKS_PER_SECOND


@dataclass(frozen=True)
class CpuSample:
    wall: float
    server: float
    database: dict[int, float]  # per pid: backends come and go
    load: float
    machine: float


@dataclass(frozen=True)
class CpuUsage:
    """Percent of one core over a window; the machine has os.cpu_count() cores in all."""

    server_pct: float
    database_pct: float | None
    load_pct: float
    # Everything else that ran on the machine meanwhile (this benchmark's parent, other
    # people's tests...): a large value means the figures of this window were disturbed.
    other_pct: float


def sample(server_pids: Iterable[int], load_pids: Iterable[int], database: str | None) -> CpuSample:
    """`database`: the Postgres database whose processes count as DB CPU; None for none."""
    return CpuSample(
        wall=time.monotonic(),
        server=process_cpu_seconds(server_pids),
        database=postgres_cpu_seconds(database) if database else {},
        load=process_cpu_seconds(load_pids),
        machine=machine_busy_seconds(),
    )


def usage(before: CpuSample, after: CpuSample, with_database: bool) -> CpuUsage:
    wall = max(after.wall - before.wall, 1e-9)

    def pct(seconds: float) -> float:
        return round(100.0 * seconds / wall, 1)

    # Live processes by their deltas (one that started in the window counts whole); one that
    # ended in it is in the postmaster's children total (-pid) with its whole life: take off
    # what it had used before the window.
    gone = sum(t for pid, t in before.database.items() if pid > 0 and pid not in after.database)
    database = max(
        sum(max(t - before.database.get(pid, 0.0), 0.0) for pid, t in after.database.items()) - gone, 0.0
    )
    server, load = after.server - before.server, after.load - before.load
    return CpuUsage(
        server_pct=pct(server),
        database_pct=pct(database) if with_database else None,
        load_pct=pct(load),
        other_pct=max(pct(after.machine - before.machine - server - database - load), 0.0) + 0.0,  # no -0.0
    )
