"""One measured point: throughput, latency percentiles, errors and CPU, merged from the
results of every load process."""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field

from bench.cpu import CpuUsage

INSUFFICIENT_FUNDS = "FAILED_PRECONDITION/INSUFFICIENT_FUNDS"


@dataclass
class LoadResult:
    """What one load process saw in the measurement window (calls started inside it)."""

    calls: int = 0  # successful calls
    postings: int = 0
    latencies_ns: bytes = b""  # array('q') of successful calls' latencies
    errors: dict[str, int] = field(default_factory=dict)  # outcome (CODE or CODE/REASON) -> count
    warmup_calls: int = 0
    failure: str | None = None  # the point could not run in this process, and why


@dataclass(frozen=True)
class Measurement:
    seconds: float
    calls: int
    postings: int
    calls_per_s: float
    postings_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    errors: dict[str, int]
    insufficient_funds: int
    cpu: CpuUsage | None
    failure: str | None


def percentile(sorted_values: list[int], fraction: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    rank = max(math.ceil(fraction * len(sorted_values)), 1)
    return sorted_values[min(rank, len(sorted_values)) - 1]


def merge(results: list[LoadResult], seconds: float, cpu: CpuUsage | None) -> Measurement:
    latencies: list[int] = []
    errors: dict[str, int] = {}
    for result in results:
        values = array("q")
        values.frombytes(result.latencies_ns)
        latencies.extend(values)
        for key, count in result.errors.items():
            errors[key] = errors.get(key, 0) + count
    latencies.sort()
    calls = sum(r.calls for r in results)
    postings = sum(r.postings for r in results)

    def ms(fraction: float) -> float | None:
        return round(percentile(latencies, fraction) / 1e6, 3) if latencies else None

    failures = sorted({r.failure for r in results if r.failure})
    return Measurement(
        seconds=seconds,
        calls=calls,
        postings=postings,
        calls_per_s=round(calls / seconds, 1),
        postings_per_s=round(postings / seconds, 1),
        p50_ms=ms(0.50),
        p99_ms=ms(0.99),
        p999_ms=ms(0.999),
        errors=errors,
        insufficient_funds=errors.get(INSUFFICIENT_FUNDS, 0),
        cpu=cpu,
        failure="; ".join(failures) if failures else None,
    )
