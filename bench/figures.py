"""The rows of the report: one Figure per measured point, each tied to the ceiling it is
compared with (the trivial RPC at the same calls in flight, or a raw-driver ceiling)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.measurement import Measurement

SECTIONS = {
    "ceilings": "Ceilings (same run)",
    "create": "CreateTransaction (one posting per call)",
    "batch": "Batch create",
    "reads": "Reads",
    "replicas": "Postgres: one and two server processes",
}
HEALTH = "health"
RAW_SQLITE = "raw_sqlite"  # + _<postings per commit>
RAW_PSYCOPG = "raw_psycopg"  # in_flight = connections


def key(scenario: str, backend: str, in_flight: int, servers: int = 1, batch: int = 1) -> str:
    return f"{scenario}{'' if batch == 1 else f'_{batch}'}/{backend}/{servers}/{in_flight}"


@dataclass(frozen=True)
class Comparison:
    label: str
    against: str  # key of the other figure
    ratio: float | None


@dataclass
class Figure:
    key: str
    section: str
    scenario: str
    label: str
    backend: str
    servers: int  # ledger-server processes; 0 for raw-driver ceilings
    in_flight: int  # calls in flight (connections, for raw psycopg)
    unit: str  # "calls/s" or "postings/s"
    batch_size: int = 1  # postings per call (batch create)
    status: str = "ok"  # "ok", "skipped: …", "failed: …"
    value: float | None = None
    calls: int = 0
    postings: int = 0
    seconds: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    server_cpu_pct: float | None = None
    database_cpu_pct: float | None = None
    load_cpu_pct: float | None = None
    other_cpu_pct: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    insufficient_funds: int = 0
    ceiling: str | None = None  # key of the ceiling figure
    ratio: float | None = None  # value / ceiling's value
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.value is not None

    def record(self, m: Measurement) -> Figure:
        self.value = m.postings_per_s if self.unit == "postings/s" else m.calls_per_s
        self.calls, self.postings, self.seconds = m.calls, m.postings, m.seconds
        self.p50_ms, self.p99_ms, self.p999_ms = m.p50_ms, m.p99_ms, m.p999_ms
        self.errors, self.insufficient_funds = m.errors, m.insufficient_funds
        if m.cpu is not None:
            self.server_cpu_pct = m.cpu.server_pct
            self.database_cpu_pct = m.cpu.database_pct
            self.load_cpu_pct = m.cpu.load_pct
            self.other_cpu_pct = round(m.cpu.other_pct, 1)
        if m.failure and m.calls == 0:
            self.status = f"failed: {m.failure.strip()}"
            self.value = None
        elif m.calls == 0:
            errors = ", ".join(f"{k} {v}" for k, v in sorted(m.errors.items())) or "no call completed"
            self.status = f"failed: no successful call ({errors})"
            self.value = None
        return self


def _ratio(a: Figure | None, b: Figure | None) -> float | None:
    if a is None or b is None or not a.ok or not b.ok or not b.value:
        return None
    assert a.value is not None
    return round(a.value / b.value, 3)


def attach_ceilings(figures: list[Figure]) -> None:
    """Give every figure its ceiling (and a few side comparisons), all from this run."""
    by_key = {f.key: f for f in figures}
    health = {f.in_flight: f for f in figures if f.scenario == HEALTH}

    def raw(scenario: str, backend: str, in_flight: int) -> str:
        return key(scenario, backend, in_flight, servers=0)

    for f in figures:
        comparisons: list[tuple[str, str]] = []
        if f.section in ("create", "reads", "replicas") and f.in_flight in health:
            f.ceiling = health[f.in_flight].key
        if f.section == "batch":
            # SQLite: the raw batched ceiling. Postgres has no raw batched ceiling (yet): the
            # best raw one-posting-per-commit figure stands in.
            if f.backend == "sqlite":
                f.ceiling = raw(f"{RAW_SQLITE}_1000", "sqlite", 1)
            else:
                f.ceiling = raw(RAW_PSYCOPG, "postgres", 8)
        if f.scenario in ("create_spread", "create_hot", "two_servers"):
            if f.backend == "sqlite":
                comparisons.append(("raw sqlite3 1/commit", raw(f"{RAW_SQLITE}_1", "sqlite", 1)))
            else:
                comparisons.append(("raw psycopg x1", raw(RAW_PSYCOPG, "postgres", 1)))
                comparisons.append(("raw psycopg x8", raw(RAW_PSYCOPG, "postgres", 8)))
        if f.scenario == "create_hot":
            comparisons.append(("spread", key("create_spread", f.backend, f.in_flight)))
        if f.scenario == "two_servers":
            comparisons.append(("1 server", key("create_spread", f.backend, f.in_flight)))
        f.ratio = _ratio(f, by_key.get(f.ceiling)) if f.ceiling else None
        f.comparisons = [
            Comparison(label, other, _ratio(f, by_key.get(other)))
            for label, other in comparisons
            if other in by_key
        ]
