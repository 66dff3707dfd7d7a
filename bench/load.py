"""The load generator: a few 'spawn' processes, each running grpc.aio coroutines that keep
one call in flight apiece, recording per-call latencies (monotonic ns).

The parent hands every process the same absolute schedule (CLOCK_MONOTONIC is shared by
all processes): calls start at start_ns, calls started before measure_from_ns are warm-up
and are not counted, no call starts after measure_until_ns."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import time
import traceback
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

import grpc
import uvloop

from bench import cpu
from bench.measurement import LoadResult, Measurement, merge
from bench.ops import Op, Workload, make_op, outcome_of

CONNECT_TIMEOUT = 10.0
READY_TIMEOUT = 60.0
START_DELAY = 0.3  # seconds the processes get to receive a point and connect before it starts


@dataclass(frozen=True)
class LoadSpec:
    workload: Workload
    addresses: tuple[str, ...]
    in_flight: int
    start_ns: int
    measure_from_ns: int
    measure_until_ns: int
    seed: int


async def _keep_calling(op: Op, spec: LoadSpec, result: LoadResult, latencies: array[int]) -> None:
    while (started := time.monotonic_ns()) < spec.measure_until_ns:
        measured = started >= spec.measure_from_ns
        try:
            postings = await op()
        except grpc.aio.AioRpcError as error:
            if measured:
                outcome = outcome_of(error)
                result.errors[outcome] = result.errors.get(outcome, 0) + 1
            continue
        if measured:
            latencies.append(time.monotonic_ns() - started)
            result.calls += 1
            result.postings += postings
        else:
            result.warmup_calls += 1


async def run_point(spec: LoadSpec) -> LoadResult:
    result = LoadResult()
    if spec.in_flight == 0:
        return result
    latencies: array[int] = array("q")
    channels = [grpc.aio.insecure_channel(address) for address in spec.addresses]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT)
        ops = [
            make_op(spec.workload, channels[i % len(channels)], random.Random(spec.seed * 10_000 + i))
            for i in range(spec.in_flight)
        ]
        await asyncio.sleep(max(spec.start_ns - time.monotonic_ns(), 0) / 1e9)
        await asyncio.gather(*(_keep_calling(op, spec, result, latencies) for op in ops))
    finally:
        for channel in channels:
            await channel.close()
    result.latencies_ns = latencies.tobytes()
    return result


def worker_main(conn: Connection) -> None:
    """A load process: run each LoadSpec it is sent, answer its LoadResult; None ends it."""
    # One loop for the process's life (grpc.aio stays on it); uvloop's, as the server's:
    # a lighter load generator leaves more of the two cores to the server and the database.
    loop = uvloop.new_event_loop()
    conn.send("ready")  # imports are done: the parent measures nothing while processes start
    try:
        while (spec := conn.recv()) is not None:
            try:
                result = loop.run_until_complete(run_point(spec))
            except Exception:
                result = LoadResult(failure=traceback.format_exc(limit=3))
            conn.send(result)
    finally:
        loop.close()


def split(total: int, parts: int) -> list[int]:
    """`total` calls in flight spread over `parts` processes as evenly as possible."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class LoadPool:
    """The load processes, started once per run (spawn: no state inherited from the parent)."""

    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        for i in range(processes):
            parent_end, child_end = context.Pipe()
            proc = context.Process(target=worker_main, args=(child_end,), name=f"bench-load-{i}", daemon=True)
            proc.start()
            child_end.close()
            self._conns.append(parent_end)
            self._procs.append(proc)
        self._seed = 0
        for conn in self._conns:
            try:
                ready = conn.poll(READY_TIMEOUT) and conn.recv() == "ready"
            except EOFError:  # the process died while starting
                ready = False
            if not ready:
                self.close()
                raise RuntimeError(f"a load process did not start within {READY_TIMEOUT}s")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def measure(
        self,
        *,
        workload: Workload,
        addresses: tuple[str, ...],
        in_flight: int,
        warmup: float,
        seconds: float,
        server_pids: list[int],
        database: str | None,
        window: Callable[[], None] | None = None,
    ) -> Measurement:
        """One point: `in_flight` calls kept in flight over all processes for warm-up + seconds.
        `database`: the Postgres database whose processes count as DB CPU (None: SQLite).
        `window` is called where the measured window starts and again where it ends."""
        start = time.monotonic_ns() + int(START_DELAY * 1e9)
        measure_from = start + int(warmup * 1e9)
        measure_until = measure_from + int(seconds * 1e9)
        for conn, share in zip(self._conns, split(in_flight, len(self._conns)), strict=True):
            self._seed += 1
            conn.send(LoadSpec(workload, addresses, share, start, measure_from, measure_until, self._seed))
        _sleep_until(measure_from)
        before = cpu.sample(server_pids, self.pids, database)
        if window is not None:
            window()
        _sleep_until(measure_until)
        after = cpu.sample(server_pids, self.pids, database)
        if window is not None:
            window()
        results = [self._receive(conn, timeout=seconds + warmup + 60) for conn in self._conns]
        return merge(results, seconds, cpu.usage(before, after, with_database=database is not None))

    @staticmethod
    def _receive(conn: Connection, timeout: float) -> LoadResult:
        if not conn.poll(timeout):
            # Its late answer would be taken for the next point's: no further point can run.
            raise RuntimeError(f"a load process gave no result within {timeout:.0f}s")
        result: LoadResult = conn.recv()
        return result

    def close(self) -> None:
        """End the load processes this pool started (by their own handles), politely first."""
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self._procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def _sleep_until(deadline_ns: int) -> None:
    time.sleep(max(deadline_ns - time.monotonic_ns(), 0) / 1e9)
