"""The results: latest.json (everything), latest.md (tables, each figure as a ratio to its
ceiling, and the targets) and latest.png (bench/chart.py)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.figures import SECTIONS, Figure
from bench.targets import TargetResult

COLUMNS = (
    "figure",
    "backend",
    "servers",
    "in flight",
    "throughput",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "server CPU",
    "DB CPU",
    "load CPU",
    "other CPU",
    "errors",
    "ceiling",
    "ratio",
    "also",
)


def write_json(path: Path, meta: dict[str, Any], figures: list[Figure], targets: list[TargetResult]) -> None:
    document = {
        "meta": meta,
        "figures": [asdict(f) for f in figures],
        "targets": [asdict(t) for t in targets],
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _errors(f: Figure) -> str:
    if not f.errors:
        return "0"
    return ", ".join(f"{k} {v}" for k, v in sorted(f.errors.items()))


def _ceiling_name(ceiling: Figure | None) -> str:
    if ceiling is None:
        return "-"
    # Raw-driver ceilings name their own concurrency; the health check's is its calls in flight.
    return ceiling.label if ceiling.servers == 0 else f"{ceiling.label} x{ceiling.in_flight}"


def _row(f: Figure, by_key: dict[str, Figure], window: float) -> list[str]:
    """`window`: the configured seconds per point; a longer one was a point measured again
    because its calls outlasted it (bench/run.py)."""
    ceiling = by_key.get(f.ceiling) if f.ceiling else None
    notes = [f"{c.ratio:.2f} x {c.label}" for c in f.comparisons if c.ratio is not None]
    if f.seconds and f.seconds > window:
        notes.append(f"measured over {f.seconds:g} s")
    also = "; ".join(notes)
    throughput = f"{_num(f.value)} {f.unit}" if f.ok else f.status
    return [
        f.label,
        f.backend,
        str(f.servers) if f.servers else "-",
        str(f.in_flight),
        throughput,
        _num(f.p50_ms, 2),
        _num(f.p99_ms, 2),
        _num(f.p999_ms, 2),
        _pct(f.server_cpu_pct),
        _pct(f.database_cpu_pct),
        _pct(f.load_cpu_pct),
        _pct(f.other_cpu_pct),
        _errors(f) if f.ok else "-",
        _ceiling_name(ceiling),
        f"{f.ratio:.2f}" if f.ratio is not None else "-",
        also or "-",
    ]


def _table(rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return lines


def markdown(
    meta: dict[str, Any], figures: list[Figure], targets: list[TargetResult], chart: str | None
) -> str:
    by_key = {f.key: f for f in figures}
    lines = [
        "# Ledger benchmark: latest run",
        "",
        f"Run {meta['started_at']}, {meta['duration_s']:.0f} s; {meta['machine']['cpus']} CPU cores "
        f"shared by the server, the database and {meta['config']['load_processes']} load processes "
        "(loopback only). "
        f"{meta['config']['seconds_per_point']} s measured per point after "
        f"{meta['config']['warmup_seconds']} s of warm-up. CPU is % of one core; "
        "`other CPU` is whatever else ran on the machine in the window, kernel I/O work included "
        "(low on a quiet machine). "
        "`ratio` = throughput / its ceiling's throughput, both from this run. "
        "How to read it: bench/README.md.",
        "",
        "## Targets",
        "",
        "| target | measured | result |",
        "|---|---|---|",
    ]
    lines += [f"| {t.name} | {t.measured} | {t.status} |" for t in targets]
    for section, title in SECTIONS.items():
        rows = [_row(f, by_key, meta["config"]["seconds_per_point"]) for f in figures if f.section == section]
        if rows:
            lines += ["", f"## {title}", "", *_table(rows)]
    notes = meta.get("notes", [])
    if notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in notes]]
    if chart:
        lines += ["", f"![throughput and p99 against calls in flight]({chart})"]
    return "\n".join(lines) + "\n"


def target_lines(targets: list[TargetResult]) -> list[str]:
    return [f"{t.status.split(':')[0]:>4}  {t.name}: {t.measured}" for t in targets]
