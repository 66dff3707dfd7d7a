"""Property: any sequence of credits and debits leaves the ledger exactly where a simple
in-memory model says -- balances, ending balances, refusals -- with balanced entries.

The store runs with one counter-account shard here so that the model can predict
counter-account overflow too; sharding itself is exercised by the concurrency tests."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from ledger_server.core.errors import LedgerError
from ledger_server.core.ledger import Ledger
from ledger_server.core.model import (
    DEFAULT_TENANT,
    INT64_MAX,
    INT64_MIN,
    Account,
    Direction,
    NewAccount,
    NewTransaction,
    Transaction,
)
from ledger_server.store.sql_store import SqlStore
from tests.support import invariant_violations

_units = itertools.count()


@dataclass(frozen=True)
class Op:
    account: int
    direction: Direction
    amount: int


amounts = st.one_of(st.integers(1, 1000), st.integers(1, INT64_MAX), st.just(INT64_MAX))
ops = st.lists(
    st.builds(Op, st.integers(0, 2), st.sampled_from(Direction), amounts),
    min_size=1,
    max_size=25,
)
floors = st.lists(st.sampled_from([0, -1, -500, -(10**12)]), min_size=3, max_size=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops, floors=floors)
def test_random_postings_match_the_model(engine: Engine, ops: list[Op], floors: list[int]) -> None:
    store = SqlStore(engine, counter_shards=1)
    try:
        check_against_model(Ledger(store), engine, ops, floors)
    finally:
        store.close()


def check_against_model(ledger: Ledger, engine: Engine, ops: list[Op], floors: list[int]) -> None:
    unit = f"P{next(_units)}X"  # a fresh unit per example: its own counter-account
    accounts: list[Account] = []
    for floor in floors:
        made = ledger.create_account(DEFAULT_TENANT, NewAccount("model", unit, floor))
        assert isinstance(made, Account)
        accounts.append(made)
    balances = [0, 0, 0]
    counter = 0
    for op in ops:
        signed = op.amount if op.direction is Direction.CREDIT else -op.amount
        new, new_counter = balances[op.account] + signed, counter - signed
        if new < floors[op.account]:
            expected = "INSUFFICIENT_FUNDS"
        elif not (INT64_MIN <= new <= INT64_MAX and INT64_MIN <= new_counter <= INT64_MAX):
            expected = "BALANCE_OVERFLOW"
        else:
            expected = None
        cmd = NewTransaction(accounts[op.account].id, op.direction, op.amount, unit)
        try:
            txn = ledger.post_transaction(DEFAULT_TENANT, cmd)
        except LedgerError as err:
            assert err.reason == expected, (op, balances)
            continue
        assert expected is None, (op, balances)
        assert isinstance(txn, Transaction)
        assert txn.ending_balance == new
        balances[op.account], counter = new, new_counter
    for account, balance in zip(accounts, balances, strict=True):
        assert ledger.get_account(DEFAULT_TENANT, account.id).posted == balance
    assert invariant_violations(engine) == []
