"""The issue's targets, each computed from figures of the same run and stated as PASS,
FAIL or n/a (with the reason). Nothing here asserts: the report shows the verdicts."""

from __future__ import annotations

from dataclasses import dataclass

from bench.figures import HEALTH, RAW_PSYCOPG, RAW_SQLITE, Figure, key

P99_TARGET_MS = 5.0


@dataclass(frozen=True)
class TargetResult:
    name: str
    rule: str
    measured: str
    status: str  # "PASS", "FAIL" or "n/a: <why>"


def _why_missing(figures: dict[str, Figure], *keys: str) -> str:
    for k in keys:
        f = figures.get(k)
        if f is None:
            return f"n/a: {k} not measured in this run"
        if not f.ok:
            return f"n/a: {k} {f.status}"
    return "n/a"


def _ratio_target(
    figures: dict[str, Figure], name: str, rule: str, *, num: str, den: str, threshold: float
) -> TargetResult:
    a, b = figures.get(num), figures.get(den)
    if a is None or b is None or not a.ok or not b.ok or not b.value:
        return TargetResult(name, rule, "-", _why_missing(figures, num, den))
    assert a.value is not None
    ratio = a.value / b.value
    measured = f"{ratio:.2f} ({a.value:,.0f} / {b.value:,.0f} {b.unit})"
    return TargetResult(name, rule, measured, "PASS" if ratio >= threshold else "FAIL")


def evaluate(figure_list: list[Figure]) -> list[TargetResult]:
    figures = {f.key: f for f in figure_list}
    health_backend = next((f.backend for f in figure_list if f.scenario == HEALTH), "sqlite")
    results = [
        _ratio_target(
            figures,
            "SQLite CreateTransaction ≥ 60% of the health-check ceiling at 64 in flight",
            "calls/s of create_spread (sqlite, 64) / Health/Check calls/s (64) ≥ 0.60",
            num=key("create_spread", "sqlite", 64),
            den=key(HEALTH, health_backend, 64),
            threshold=0.60,
        ),
        _batch_target(figures),
        _ratio_target(
            figures,
            "Postgres CreateTransaction at 8 in flight ≥ raw psycopg one-posting ceiling",
            "calls/s of create_spread (postgres, 8) / raw psycopg postings/s "
            "(1 posting/commit, 8 connections) ≥ 1",
            num=key("create_spread", "postgres", 8),
            den=key(RAW_PSYCOPG, "postgres", 8, servers=0),
            threshold=1.0,
        ),
        _p99_target(figures, health_backend),
    ]
    results.extend(_hot_target(figure_list, backend) for backend in ("sqlite", "postgres"))
    return results


def _batch_target(figures: dict[str, Figure]) -> TargetResult:
    name = "SQLite batch create ≥ 50% of raw-sqlite3 batched postings/s"
    rule = (
        "best postings/s of batch_create (sqlite, 100 or 1000/call) / raw sqlite3 1000 postings/commit ≥ 0.50"
    )
    batches = [f for f in figures.values() if f.section == "batch" and f.backend == "sqlite"]
    measured = [f for f in batches if f.ok]
    ceiling_key = key(f"{RAW_SQLITE}_1000", "sqlite", 1, servers=0)
    if not measured:
        reason = batches[0].status if batches else "batch_create not in this run"
        return TargetResult(name, rule, "-", f"n/a: {reason}")
    best = max(measured, key=lambda f: f.value or 0.0)
    return _ratio_target(figures, name, rule, num=best.key, den=ceiling_key, threshold=0.50)


def _p99_target(figures: dict[str, Figure], health_backend: str) -> TargetResult:
    """Beside the p99, the health check's own p99 at 8 in flight: a latency has a ceiling
    too, what the same server and load generator take for a call that does nothing."""
    name = "SQLite CreateTransaction p99 ≤ 5 ms at 8 in flight"
    rule = "p99 latency of create_spread (sqlite, 8) ≤ 5 ms"
    f = figures.get(key("create_spread", "sqlite", 8))
    if f is None or not f.ok or f.p99_ms is None:
        return TargetResult(name, rule, "-", _why_missing(figures, key("create_spread", "sqlite", 8)))
    measured = f"{f.p99_ms:.2f} ms"
    health = figures.get(key(HEALTH, health_backend, 8))
    if health is not None and health.ok and health.p99_ms is not None:
        measured += f" (Health/Check at 8 in flight: {health.p99_ms:.2f} ms)"
    return TargetResult(name, rule, measured, "PASS" if f.p99_ms <= P99_TARGET_MS else "FAIL")


def _hot_target(figure_list: list[Figure], backend: str) -> TargetResult:
    name = f"{'SQLite' if backend == 'sqlite' else 'Postgres'} hot accounts ≥ 50% of spread throughput"
    rule = f"calls/s create_hot / create_spread ({backend}), worst over the in-flight levels ≥ 0.50"
    figures = {f.key: f for f in figure_list}
    pairs = []
    for hot in figure_list:
        if hot.scenario == "create_hot" and hot.backend == backend:
            spread = figures.get(key("create_spread", backend, hot.in_flight))
            if hot.ok and spread is not None and spread.ok and spread.value:
                assert hot.value is not None
                pairs.append((hot.value / spread.value, hot.in_flight))
    if not pairs:
        return TargetResult(
            name,
            rule,
            "-",
            _why_missing(figures, key("create_hot", backend, 8), key("create_spread", backend, 8)),
        )
    worst, level = min(pairs)
    listed = ", ".join(f"{r:.2f}@{n}" for r, n in sorted(pairs, key=lambda p: p[1]))
    return TargetResult(
        name, rule, f"{worst:.2f} at {level} in flight ({listed})", "PASS" if worst >= 0.5 else "FAIL"
    )
