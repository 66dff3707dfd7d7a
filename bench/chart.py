"""latest.png: throughput and p99 latency against calls in flight, one line per scenario
and backend (colour: scenario; solid: SQLite, dashed: Postgres), with the raw-driver
ceilings as dotted horizontal lines. Needs matplotlib (the `bench` extra); without it the
chart is skipped and the report says so."""

from __future__ import annotations

from pathlib import Path

from bench.figures import Figure
from bench.targets import P99_TARGET_MS

SERIES_SECTIONS = ("ceilings", "create", "reads", "replicas")
COLOURS = {
    "health": "black",
    "create_spread": "tab:blue",
    "create_hot": "tab:red",
    "get_account": "tab:green",
    "list_transactions": "tab:purple",
    "list_changes": "tab:brown",
    "two_servers": "tab:orange",
}
LINES = {"sqlite": "-", "postgres": "--"}


def _series(figures: list[Figure]) -> dict[tuple[str, str, str], list[Figure]]:
    """(name, scenario, backend) -> its points in order of calls in flight."""
    series: dict[tuple[str, str, str], list[Figure]] = {}
    for f in figures:
        if f.ok and f.section in SERIES_SECTIONS and f.servers > 0:
            name = f"{f.label} ({f.backend}{', 2 servers' if f.servers == 2 else ''})"
            series.setdefault((name, f.scenario, f.backend), []).append(f)
    return {k: sorted(points, key=lambda f: f.in_flight) for k, points in series.items()}


def draw(figures: list[Figure], path: Path) -> str | None:
    """Write the chart; returns why it was not drawn, or None."""
    try:
        import matplotlib  # noqa: PLC0415 - optional: the chart is the one part that needs it

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install -e '.[bench]')"
    series = _series(figures)
    if not series:
        return "chart skipped: no measured series"
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6.5))
    for (name, scenario, backend), points in series.items():
        x = [f.in_flight for f in points]
        style = {"color": COLOURS.get(scenario, "grey"), "linestyle": LINES.get(backend, ":"), "marker": "o"}
        left.plot(x, [f.value for f in points], label=name, **style)
        right.plot(x, [f.p99_ms for f in points], label=name, **style)
    for f in figures:
        if f.ok and f.section == "ceilings" and f.servers == 0:
            left.axhline(f.value or 0, linestyle=":", linewidth=1, color="grey")
            left.annotate(f.label, (1, f.value or 0), fontsize=7, color="grey", va="bottom")
    right.axhline(P99_TARGET_MS, linestyle=":", linewidth=1, color="grey")
    right.annotate(
        f"target: p99 ≤ {P99_TARGET_MS:g} ms (SQLite, 8 in flight)",
        (1, P99_TARGET_MS),
        fontsize=7,
        color="grey",
        va="bottom",
    )
    levels = sorted({f.in_flight for points in series.values() for f in points})
    for ax, title, unit in ((left, "Throughput", "calls/s (log)"), (right, "p99 latency", "ms (log)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(levels, [str(level) for level in levels])
        ax.set_xlabel("calls in flight")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=7, loc="upper left")
    fig.suptitle(
        "Ledger benchmark (solid: SQLite, dashed: Postgres, dotted: raw-driver ceilings in postings/s)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
