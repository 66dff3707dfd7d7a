"""The benchmark's verdicts (bench/targets.py), computed from figures made up here: each
target's ratio against its ceiling from the same run, and what it says when a figure is
missing; and when a point is measured again over a longer window. No server runs."""

from __future__ import annotations

from bench.figures import HEALTH, RAW_PSYCOPG, RAW_SQLITE, Figure, key
from bench.measurement import Measurement
from bench.report import markdown
from bench.run import too_short
from bench.targets import TargetResult, evaluate


def figure(
    scenario: str,
    backend: str,
    in_flight: int,
    value: float,
    *,
    p99_ms: float | None = None,
    section: str = "create",
    batch_size: int = 1,
) -> Figure:
    servers = 0 if scenario.startswith("raw") else 1
    return Figure(
        key=key(scenario, backend, in_flight, servers=servers, batch=batch_size),
        section=section,
        scenario=scenario,
        label=scenario,
        backend=backend,
        servers=servers,
        in_flight=in_flight,
        unit="postings/s" if servers == 0 else "calls/s",
        batch_size=batch_size,
        value=value,
        p99_ms=p99_ms,
    )


def run_of(create_p99: float = 4.0) -> list[Figure]:
    return [
        figure(HEALTH, "sqlite", 8, 2_000, p99_ms=3.5),
        figure(HEALTH, "sqlite", 64, 3_000),
        figure("create_spread", "sqlite", 8, 900, p99_ms=create_p99),
        figure("create_spread", "sqlite", 64, 1_800),
        figure("create_hot", "sqlite", 8, 400),
        figure("create_spread", "postgres", 8, 1_000),
        figure("create_hot", "postgres", 8, 600),
        figure(RAW_PSYCOPG, "postgres", 8, 2_000),
        figure(f"{RAW_SQLITE}_1000", "sqlite", 1, 50_000),
        figure("batch_create", "sqlite", 1, 20_000, section="batch", batch_size=1000),
        figure("batch_create", "sqlite", 8, 26_000, section="batch", batch_size=1000),
    ]


def target(results: list[TargetResult], fragment: str) -> TargetResult:
    """The one target whose name contains `fragment`."""
    (found,) = [r for r in results if fragment in r.name]
    return found


def test_each_target_is_its_ratio_to_a_ceiling_of_the_same_run() -> None:
    results = evaluate(run_of())
    create = target(results, "60% of the health-check ceiling")
    assert (create.measured, create.status) == ("0.60 (1,800 / 3,000 calls/s)", "PASS")
    # The best batch figure against the raw batched ceiling.
    batch = target(results, "batch create")
    assert (batch.measured, batch.status) == ("0.52 (26,000 / 50,000 postings/s)", "PASS")
    postgres = target(results, "raw psycopg")
    assert (postgres.measured, postgres.status) == ("0.50 (1,000 / 2,000 postings/s)", "FAIL")
    # Hot accounts: the worst in-flight level decides.
    assert target(results, "SQLite hot").status == "FAIL"  # 0.44
    assert target(results, "Postgres hot").measured.startswith("0.60 at 8 in flight")


def test_the_p99_target_shows_the_health_checks_p99_beside_it() -> None:
    met = target(evaluate(run_of(create_p99=4.0)), "p99")
    assert (met.measured, met.status) == ("4.00 ms (Health/Check at 8 in flight: 3.50 ms)", "PASS")
    assert target(evaluate(run_of(create_p99=5.01)), "p99").status == "FAIL"


def test_a_target_without_its_figures_says_which_is_missing() -> None:
    run = [f for f in run_of() if f.scenario != HEALTH]
    result = evaluate(run)[0]
    assert result.status == f"n/a: {key(HEALTH, 'sqlite', 64)} not measured in this run"
    assert result.measured == "-"


def measurement(
    calls: int, *, errors: dict[str, int] | None = None, failure: str | None = None
) -> Measurement:
    return Measurement(3.0, calls, calls, calls / 3, calls / 3, 1.0, 2.0, 2.0, errors or {}, 0, None, failure)


def test_a_point_whose_calls_outlast_its_window_is_measured_again() -> None:
    """Eight batches of 1000 in flight on a slow machine: no call started in the window."""
    assert too_short(measurement(0), in_flight=8)
    assert too_short(measurement(7), in_flight=8)
    assert not too_short(measurement(8), in_flight=8)
    # A point that failed is reported as it is, not stretched.
    assert not too_short(measurement(0, errors={"UNAVAILABLE": 3}), in_flight=8)
    assert not too_short(measurement(0, failure="boom"), in_flight=8)


def test_a_stretched_point_says_over_how_long_it_was_measured() -> None:
    batch = figure("batch_create", "postgres", 8, 1_500, section="batch", batch_size=1000)
    batch.seconds = 12.0
    config = {"seconds_per_point": 3.0, "warmup_seconds": 1.0, "load_processes": 2}
    meta = {"started_at": "now", "duration_s": 1.0, "machine": {"cpus": 2}, "config": config}
    assert "measured over 12 s" in markdown(meta, [batch], [], None)
    batch.seconds = 3.0
    assert "measured over" not in markdown(meta, [batch], [], None)
