"""Concurrent writers through the real server: per-account serialization holds, a
request_id applies once, an external_id is taken once -- on SQLite and Postgres."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ledger_client import LedgerClient, LedgerError
from sqlalchemy import Engine, text

from tests.support import invariant_violations

R = TypeVar("R")


def race(n: int, call: Callable[[], R]) -> list[R | LedgerError]:
    """Run `call` n times at once (released together by a barrier)."""
    barrier = threading.Barrier(n)

    def one() -> R | LedgerError:
        barrier.wait(timeout=30)
        try:
            return call()
        except LedgerError as err:
            return err

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda _: one(), range(n)))


def test_fifty_debits_of_one_against_thirty(client: LedgerClient, engine: Engine) -> None:
    account = client.create_account(currency="USD")
    client.credit(account.name, 30, "USD")
    results = race(50, lambda: client.debit(account.name, 1, "USD"))
    outcomes = Counter(r.reason if isinstance(r, LedgerError) else "OK" for r in results)
    assert outcomes == {"OK": 30, "INSUFFICIENT_FUNDS": 20}
    assert client.get_account(account.name).balance.posted == 0
    ending = sorted(r.ending_balance for r in results if not isinstance(r, LedgerError))
    assert ending == list(range(30))  # each debit saw its own, serialized balance
    with engine.connect() as conn:
        lowest = conn.execute(
            text("SELECT MIN(running_balance) FROM entries WHERE account_id = :id"),
            {"id": account.name.split("/")[1]},
        ).scalar_one()
    assert lowest == 0
    assert invariant_violations(engine) == []


def test_many_accounts_in_parallel_keep_every_invariant(client: LedgerClient, engine: Engine) -> None:
    accounts = [client.create_account(currency="USD").name for _ in range(8)]
    counter = iter(range(10_000))
    lock = threading.Lock()

    def work() -> int:
        with lock:
            i = next(counter)
        name = accounts[i % len(accounts)]
        client.credit(name, 10, "USD")
        return client.debit(name, 3, "USD").ending_balance

    results = race(40, work)
    assert not [r for r in results if isinstance(r, LedgerError)]
    assert sum(client.get_account(a).balance.posted for a in accounts) == 40 * 7
    assert invariant_violations(engine) == []


def test_same_request_id_at_once_applies_once(client: LedgerClient) -> None:
    account = client.create_account(currency="USD")
    request_id = str(uuid.uuid4())
    results = race(12, lambda: client.credit(account.name, 7, "USD", request_id=request_id))
    assert not [r for r in results if isinstance(r, LedgerError)]
    assert len({r.SerializeToString() for r in results if not isinstance(r, LedgerError)}) == 1
    assert client.get_account(account.name).balance.posted == 7


def test_same_external_id_at_once_is_taken_once(client: LedgerClient) -> None:
    account = client.create_account(currency="USD")
    results = race(12, lambda: client.credit(account.name, 7, "USD", external_id="order-77"))
    outcomes = Counter(r.reason if isinstance(r, LedgerError) else "OK" for r in results)
    assert outcomes == {"OK": 1, "DUPLICATE_EXTERNAL_ID": 11}
    assert client.get_account(account.name).balance.posted == 7


def test_a_freeze_racing_credits_stops_every_later_one(client: LedgerClient, engine: Engine) -> None:
    """Credits racing a FreezeAccount through the server (20 threads, 5 credits each in
    turn): each credit is applied or refused ACCOUNT_NOT_ACTIVE, every one sent after the
    freeze answered is refused, and the balance is exactly the credits acknowledged."""
    account = client.create_account(currency="USD")
    frozen = threading.Event()
    Outcome = tuple[bool, object]  # (sent after the freeze answered, reply or error)

    def credits() -> list[Outcome]:
        outcomes: list[Outcome] = []
        for _ in range(5):
            sent_after_freeze = frozen.is_set()
            try:
                outcomes.append((sent_after_freeze, client.credit(account.name, 1, "USD")))
            except LedgerError as err:
                outcomes.append((sent_after_freeze, err))
        return outcomes

    def freeze() -> list[Outcome]:
        try:
            return [(False, client.freeze_account(account.name, reason="race"))]
        finally:
            frozen.set()

    calls: list[Callable[[], list[Outcome]]] = [credits] * 20
    calls[5] = freeze
    barrier = threading.Barrier(len(calls))

    def one(call: Callable[[], list[Outcome]]) -> list[Outcome]:
        barrier.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        results = list(pool.map(one, calls))
    assert results.pop(5)[0][1].status == 2  # type: ignore[attr-defined]
    outcomes = [o for thread in results for o in thread]
    refused = [r for _, r in outcomes if isinstance(r, LedgerError)]
    assert {r.reason for r in refused} <= {"ACCOUNT_NOT_ACTIVE"}
    assert all(isinstance(r, LedgerError) for after, r in outcomes if after)
    assert client.get_account(account.name).balance.posted == len(outcomes) - len(refused)
    assert invariant_violations(engine) == []
