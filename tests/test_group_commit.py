"""Group commit: units that share a transaction stay atomic one by one, and none is
acknowledged unless the shared commit succeeded."""

from __future__ import annotations

import asyncio
import datetime as dt
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from ledger_server.api.aio_bridge import shared_loop
from ledger_server.call_greenlet import run_in_greenlet
from ledger_server.core.admin import Admin
from ledger_server.core.book import ISSUANCE
from ledger_server.core.errors import Category, LedgerError, StoreUnavailable
from ledger_server.core.ledger import Ledger
from ledger_server.core.model import Account, Direction, NewAccount, NewTransaction, Tenant
from ledger_server.store.engine import make_engine
from ledger_server.store.group_commit import LOOP_CHUNK
from ledger_server.store.sql_store import SqlStore
from ledger_server.store.sql_unit import SqlUnit

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(params=["threads", "loop"])
def callers(request: pytest.FixtureRequest) -> str:
    """Who submits a batch's units: threads, or calls on the event loop (whose units run on
    the loop on SQLite, group_commit.py)."""
    return str(request.param)


def in_one_batch(store: SqlStore, works: list[Callable[[SqlUnit], Any]], callers: str) -> list[Future[Any]]:
    """Submit `works` while the writer is held busy, so that they share one batch."""
    hold, holding = threading.Event(), threading.Event()

    def blocker(_: SqlUnit) -> None:
        holding.set()
        hold.wait(30)

    pool = ThreadPoolExecutor(len(works) + 1)
    first = pool.submit(store.write, "key", blocker)
    holding.wait(30)
    if callers == "loop":
        futures = [
            asyncio.run_coroutine_threadsafe(run_in_greenlet(store.write, "key", work), shared_loop())
            for work in works
        ]
    else:
        futures = [pool.submit(store.write, "key", work) for work in works]
    deadline = time.monotonic() + 30
    while store.queued_writes() < len(works):  # every submission waits in the writer's queue
        assert time.monotonic() < deadline
        time.sleep(0.01)
    hold.set()
    first.result(30)
    pool.shutdown(wait=True)
    return futures


def write_alone(store: SqlStore, work: Callable[[SqlUnit], Any], callers: str) -> Any:
    """One write, from a thread or from a call on the event loop."""
    if callers == "loop":
        return asyncio.run_coroutine_threadsafe(
            run_in_greenlet(store.write, "key", work), shared_loop()
        ).result(30)
    return store.write("key", work)


def tenant(tenant_id: str) -> Callable[[SqlUnit], str]:
    def work(unit: SqlUnit) -> str:
        unit.insert_tenant(Tenant(tenant_id, tenant_id, NOW))
        return tenant_id

    return work


def refused(unit: SqlUnit) -> None:
    unit.insert_tenant(Tenant("refused", "refused", NOW))  # written, then undone with its savepoint
    raise LedgerError(Category.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS", "no")


def tenants(store: SqlStore) -> set[str]:
    with store.reading() as r:
        return {t.id for t in r.list_tenants()}


def test_a_refused_unit_leaves_its_batch_mates_committed(store: SqlStore, callers: str) -> None:
    futures = in_one_batch(store, [tenant("t1"), refused, tenant("t2")], callers)
    assert [futures[0].result(), futures[2].result()] == ["t1", "t2"]
    with pytest.raises(LedgerError):
        futures[1].result()
    assert tenants(store) >= {"t1", "t2"}
    assert "refused" not in tenants(store)


def test_a_batchs_only_unit_runs_without_a_savepoint(
    store: SqlStore, callers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its failure rolls the whole transaction back instead (_Writer._alone): two round
    trips fewer on Postgres. Batch mates still get one savepoint each there."""
    savepoints: list[float | None] = []
    real = SqlUnit.savepoint

    def counted(unit: SqlUnit, deadline: float | None = None) -> None:
        savepoints.append(deadline)
        real(unit, deadline)

    monkeypatch.setattr(SqlUnit, "savepoint", counted)
    assert write_alone(store, tenant("alone"), callers) == "alone"
    assert savepoints == []
    assert [f.result(30) for f in in_one_batch(store, [tenant("t1"), tenant("t2")], callers)] == ["t1", "t2"]
    assert len(savepoints) == (2 if store.engine.dialect.name == "postgresql" else 0)


@pytest.mark.parametrize("failure", [refused, "bug"])
def test_a_refused_lone_unit_changes_nothing_and_the_next_batch_commits(
    store: SqlStore, callers: str, failure: object
) -> None:
    def broken(unit: SqlUnit) -> None:
        unit.insert_tenant(Tenant("broken", "broken", NOW))
        raise RuntimeError("bug")

    work = broken if failure == "bug" else refused
    with pytest.raises(RuntimeError if failure == "bug" else LedgerError):
        write_alone(store, work, callers)
    assert write_alone(store, tenant("next"), callers) == "next"
    assert "next" in tenants(store)
    assert not {"refused", "broken"} & tenants(store)


def test_commit_listeners_hear_of_each_commit_and_of_no_refused_lone_unit(store: SqlStore) -> None:
    heard: list[str] = []
    # Told by the committing writer (on Postgres also by the thread that hears other
    # processes' commits: test_commit_notices.py).
    remove = store.on_commit(lambda: heard.append(threading.current_thread().name))

    def by_writers() -> list[str]:
        return [name for name in heard if name.startswith("writer-")]

    store.write("key", tenant("t1"))
    with pytest.raises(LedgerError):
        store.write("key", refused)  # alone in its batch: rolled back, nothing committed
    assert len(by_writers()) == 1
    remove()
    store.write("key", tenant("t2"))
    assert len(by_writers()) == 1


def test_a_failing_commit_listener_leaves_the_writer_committing(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("listener bug")

    store.on_commit(broken)

    def bounded_write(name: str) -> str:  # a writer killed by the listener would never answer
        done: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: done.put(store.write("key", tenant(name))), daemon=True).start()
        return done.get(timeout=30)

    assert [bounded_write("t1"), bounded_write("t2")] == ["t1", "t2"]
    assert {"t1", "t2"} <= tenants(store)
    failures = [r for r in caplog.records if r.message == "a commit listener failed"]
    assert [str(r.threadName).startswith("writer-") for r in failures].count(True) == 2


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[SqlStore]:
    store = SqlStore(make_engine(pg_url))
    yield store
    store.close()


def test_a_counter_shard_locked_by_a_rolled_back_unit_is_not_relocked_by_id(pg_store: SqlStore) -> None:
    """Rolling back to a savepoint releases the shard's row lock; the next unit of the
    transaction then takes any free shard rather than queue for that one by id."""
    admin = Admin(pg_store)
    admin.create_tenant("shards", "Shards")
    ledger = Ledger(pg_store)
    account = ledger.create_account("shards", NewAccount("c", "USD", 0))
    assert isinstance(account, Account)
    ledger.post_transaction(
        "shards", NewTransaction(account.id, Direction.CREDIT, 5, "USD")
    )  # makes the shards
    with pg_store.writing() as unit:
        unit.savepoint()
        _, shard = unit.lock_customer_and_counter("shards", account.id, "USD", ISSUANCE)
        assert shard is not None
        unit.rollback_to_savepoint()
        with psycopg.connect(
            pg_store.engine.url.render_as_string(hide_password=False).replace("+psycopg", "")
        ) as other:
            other.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (shard.id,))
            unit.savepoint(time.monotonic() + 2)  # re-locking by id would wait 2 s, then fail
            again = unit.lock_counter_account("shards", "USD", ISSUANCE, NOW)
            assert again.id != shard.id


def test_a_lost_connection_fails_the_whole_batch_and_the_next_recovers(
    pg_store: SqlStore, callers: str
) -> None:
    store = pg_store

    def lose_connection(unit: SqlUnit) -> None:
        unit._conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))

    a1, a2, a3 = (f"{name}-{callers}" for name in ("a1", "a2", "a3"))  # one database for both
    futures = in_one_batch(store, [tenant(a1), lose_connection, tenant(a2)], callers)
    for future in futures:  # a1 ran fine, but its commit never happened: not acknowledged
        with pytest.raises(StoreUnavailable):
            future.result()
    assert not {a1, a2} & tenants(store)
    assert store.write("key", tenant(a3)) == a3
    assert a3 in tenants(store)


def response_saver(request_id: str, fail: bool = False) -> Callable[[SqlUnit], str]:
    """A unit that stores a response (buffered until the unit ends), then maybe refuses."""

    def work(unit: SqlUnit) -> str:
        unit.save_response("t1", request_id, b"fingerprint", b"response", NOW)
        assert unit.find_response("t1", request_id) is not None  # its own buffered row
        if fail:
            raise LedgerError(Category.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS", "no")
        return request_id

    return work


def test_a_refused_units_buffered_inserts_are_dropped_with_it(store: SqlStore, callers: str) -> None:
    futures = in_one_batch(
        store,
        [
            tenant("t1"),
            response_saver("kept-1"),
            response_saver("dropped", fail=True),
            response_saver("kept-2"),
        ],
        callers,
    )
    with pytest.raises(LedgerError):
        futures[2].result()
    assert [futures[1].result(), futures[3].result()] == ["kept-1", "kept-2"]
    with store.reading() as r:
        assert r.find_response("t1", "kept-1") == r.find_response("t1", "kept-2") is not None
        assert r.find_response("t1", "dropped") is None


def counted(tenant_id: str, runs: dict[str, int]) -> Callable[[SqlUnit], str]:
    def work(unit: SqlUnit) -> str:
        runs[tenant_id] = runs.get(tenant_id, 0) + 1
        return tenant(tenant_id)(unit)

    return work


def refused_unchanged(unit: SqlUnit) -> None:
    unit.save_response("t1", "buffered", b"fingerprint", b"response", NOW)  # buffered, not yet written
    raise LedgerError(Category.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS", "no")


def test_a_refusal_before_any_change_costs_its_batch_nothing(store: SqlStore, callers: str) -> None:
    runs: dict[str, int] = {}
    futures = in_one_batch(store, [counted("t1", runs), refused_unchanged, counted("t2", runs)], callers)
    assert [futures[0].result(), futures[2].result()] == ["t1", "t2"]
    with pytest.raises(LedgerError):
        futures[1].result()
    assert runs == {"t1": 1, "t2": 1}  # no batch redone
    with store.reading() as r:
        assert r.find_response("t1", "buffered") is None


def test_a_refusal_after_a_change_is_undone_and_its_batch_mates_committed_once(
    store: SqlStore, callers: str
) -> None:
    runs: dict[str, int] = {}
    futures = in_one_batch(store, [counted("t1", runs), refused, counted("t2", runs)], callers)
    assert [futures[0].result(), futures[2].result()] == ["t1", "t2"]
    with pytest.raises(LedgerError):
        futures[1].result()
    assert "refused" not in tenants(store)
    # SQLite runs units without savepoints first, then redoes such a batch with them.
    assert runs == ({"t1": 2, "t2": 1} if store.engine.dialect.name == "sqlite" else {"t1": 1, "t2": 1})


def test_an_unexpected_failure_fails_its_unit_alone(store: SqlStore, callers: str) -> None:
    def broken(unit: SqlUnit) -> None:
        raise RuntimeError("bug")

    futures = in_one_batch(store, [tenant("t1"), broken, tenant("t2")], callers)
    assert [futures[0].result(), futures[2].result()] == ["t1", "t2"]
    with pytest.raises(RuntimeError):
        futures[1].result()


@pytest.mark.parametrize("last", [False, True])
def test_a_transaction_ended_mid_batch_acknowledges_nothing(
    store: SqlStore, last: bool, callers: str
) -> None:
    """As SQLite does by itself on some I/O errors: no unit of the batch may be
    acknowledged, since what came before is gone."""

    def ends_transaction(unit: SqlUnit) -> None:
        unit._execute("ROLLBACK")

    works = [tenant("e1"), tenant("e2"), ends_transaction]
    futures = in_one_batch(store, works if last else [works[0], works[2], works[1]], callers)
    for future in futures:
        with pytest.raises(StoreUnavailable):
            future.result()
    assert "e1" not in tenants(store)
    assert store.write("key", tenant("e3")) == "e3"


def test_units_of_calls_on_the_loop_run_on_it_on_sqlite_only(store: SqlStore, callers: str) -> None:
    """On SQLite the loop's calls' units run on the loop (no GIL fight with the writer);
    Postgres units, which wait on the network, and those of threads stay in the writer."""

    def thread_name(unit: SqlUnit) -> str:
        return threading.current_thread().name

    futures = in_one_batch(store, [thread_name, thread_name], callers)
    on_loop = callers == "loop" and store.engine.dialect.name == "sqlite"
    names = {f.result() for f in futures}
    assert names == {"grpc-aio-loop"} if on_loop else {n.partition("-")[0] for n in names} == {"writer"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_loop_serves_other_work_between_chunks_of_a_big_batch(store: SqlStore) -> None:
    """A batch's units run on the loop LOOP_CHUNK at a time: between two chunks the loop
    runs whatever else is ready (here a coroutine that ticks), so a big batch delays other
    calls by a chunk, not by the whole batch."""
    events: list[str] = []
    stop = threading.Event()

    async def ticker() -> None:
        while not stop.is_set():
            events.append("tick")
            await asyncio.sleep(0)

    def unit(_: SqlUnit) -> None:
        events.append("unit")

    ticking = asyncio.run_coroutine_threadsafe(ticker(), shared_loop())
    try:
        futures = in_one_batch(store, [unit] * 65, "loop")  # one batch (at most 256)
        for future in futures:
            future.result(30)
    finally:
        stop.set()
        ticking.result(30)
    units = [i for i, event in enumerate(events) if event == "unit"]
    assert len(units) == 65
    between = events[units[0] : units[-1]]
    chunks = -(-65 // LOOP_CHUNK)
    assert chunks >= 3  # the premise: a batch bigger than two chunks
    assert between.count("tick") >= chunks - 1  # one at least after each chunk but the last
