"""The core's rules against a real store, on SQLite and Postgres."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import uuid
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine, func, select

from ledger_server.core.admin import Admin
from ledger_server.core.book import ISSUANCE, Book
from ledger_server.core.errors import LedgerError
from ledger_server.core.ledger import BatchItem, Idempotency, Ledger, Replay
from ledger_server.core.model import (
    DEFAULT_TENANT,
    INT64_MAX,
    Account,
    Direction,
    NewAccount,
    NewTransaction,
    Transaction,
    TransactionFilter,
    TransactionKind,
    TransactionType,
    evolve,
)
from ledger_server.core.ports import WriteUnit
from ledger_server.store.hot_sql import BULK_MIN_ROWS
from ledger_server.store.schema import accounts, entries, transactions
from ledger_server.store.sql_store import SqlStore
from tests.support import invariant_violations, unit_calls

T = DEFAULT_TENANT


def open_account(ledger: Ledger, currency: str = "USD", floor: int = 0, ref: str = "cust") -> Account:
    account = ledger.create_account(T, NewAccount(ref, currency, floor))
    assert isinstance(account, Account)
    return account


def post(ledger: Ledger, account: Account, direction: Direction, amount: int, **kw: object) -> Transaction:
    txn = ledger.post_transaction(T, NewTransaction(account.id, direction, amount, account.currency, **kw))  # type: ignore[arg-type]
    assert isinstance(txn, Transaction)
    return txn


def refusal(fn: object, *args: object, **kw: object) -> LedgerError:
    with pytest.raises(LedgerError) as info:
        fn(*args, **kw)  # type: ignore[operator]
    return info.value


def count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_credit_and_debit_move_balance_and_write_balanced_entries(ledger: Ledger, engine: Engine) -> None:
    account = open_account(ledger, "usd")
    assert account.currency == "USD"
    credit = post(ledger, account, Direction.CREDIT, 1000, description="grant")
    debit = post(ledger, account, Direction.DEBIT, 250)
    assert (credit.ending_balance, debit.ending_balance) == (1000, 750)
    assert ledger.get_account(T, account.id).posted == 750
    assert credit.posting_date == dt.datetime.now(dt.UTC).date()
    assert credit.kind is TransactionKind.ADJUSTMENT
    assert count(engine, entries) == 4
    assert invariant_violations(engine) == []


def test_new_ids_are_time_ordered_uuids(ledger: Ledger, engine: Engine) -> None:
    """UUIDv7: rows inserted in turn go to the right-hand edge of each index on their id
    (ledger_server/core/ids.py), the counter accounts' ids too."""
    first, second = open_account(ledger), open_account(ledger)
    posted = [post(ledger, first, Direction.CREDIT, n) for n in (1, 2, 3)]
    ids = [first.id, second.id] + [t.id for t in posted]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert ids == sorted(ids)
    with engine.connect() as conn:
        counters = conn.execute(select(accounts.c.id).where(accounts.c.kind != "customer")).scalars().all()
    assert counters and all(uuid.UUID(i).version == 7 for i in counters)


def test_evolve_copies_a_frozen_record_with_changes(ledger: Ledger) -> None:
    """evolve is dataclasses.replace without __init__: an equal copy but for the changes,
    still frozen, the original untouched; a field it does not have is refused."""
    txn = post(ledger, open_account(ledger), Direction.CREDIT, 5)
    copy = evolve(txn, ending_balance=7, description="changed")
    assert copy == dataclasses.replace(txn, ending_balance=7, description="changed")
    assert type(copy) is Transaction and (txn.ending_balance, txn.description) == (5, "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.amount = 1  # type: ignore[misc]
    with pytest.raises(AssertionError, match="no such fields"):
        evolve(txn, ending_balanse=7)


def test_debit_below_floor_is_refused_and_changes_nothing(ledger: Ledger, engine: Engine) -> None:
    account = open_account(ledger)
    post(ledger, account, Direction.CREDIT, 100)
    err = refusal(post, ledger, account, Direction.DEBIT, 101)
    assert err.reason == "INSUFFICIENT_FUNDS"
    assert err.metadata["available"] == "100"
    assert err.metadata["amount"] == "101"
    assert ledger.get_account(T, account.id).posted == 100
    assert count(engine, transactions) == 1


def test_negative_floor_is_a_credit_line(ledger: Ledger) -> None:
    account = open_account(ledger, floor=-500)
    assert post(ledger, account, Direction.DEBIT, 500).ending_balance == -500
    assert refusal(post, ledger, account, Direction.DEBIT, 1).reason == "INSUFFICIENT_FUNDS"


def test_positive_floor_is_refused(ledger: Ledger) -> None:
    err = refusal(ledger.create_account, T, NewAccount("x", "USD", 1))
    assert [v.field for v in err.violations] == ["account.balance_floor"]


def test_every_bad_field_is_named_at_once(ledger: Ledger, engine: Engine) -> None:
    cmd = NewTransaction("", None, 0, "$$", description="x" * 1001, external_id="e" * 129, metadata={"": "v"})
    err = refusal(ledger.post_transaction, T, cmd)
    assert err.reason == "INVALID_REQUEST"
    assert {v.field for v in err.violations} == {
        "transaction.account",
        "transaction.direction",
        "transaction.amount",
        "transaction.currency",
        "transaction.description",
        "transaction.external_id",
        "transaction.metadata['']",
    }
    assert count(engine, transactions) == 0


def test_metadata_is_bounded(ledger: Ledger) -> None:
    account = open_account(ledger)
    too_many = {f"k{i}": "v" for i in range(51)}
    assert refusal(post, ledger, account, Direction.CREDIT, 1, metadata=too_many).reason == "INVALID_REQUEST"
    long_value = {"k": "v" * 501}
    assert (
        refusal(post, ledger, account, Direction.CREDIT, 1, metadata=long_value).reason == "INVALID_REQUEST"
    )
    ok = post(ledger, account, Direction.CREDIT, 1, metadata={"order_id": "4", "gateway_id": "stripe_1"})
    assert ledger.get_transaction(T, ok.id).metadata == {"order_id": "4", "gateway_id": "stripe_1"}


def test_currency_must_match_account(ledger: Ledger) -> None:
    account = open_account(ledger, "EUR")
    err = refusal(ledger.post_transaction, T, NewTransaction(account.id, Direction.CREDIT, 5, "usd"))
    assert err.reason == "CURRENCY_MISMATCH"
    assert err.violations[0].field == "transaction.currency"


def test_custom_units_are_accepted(ledger: Ledger) -> None:
    account = open_account(ledger, "credits")
    assert account.currency == "CREDITS"
    assert post(ledger, account, Direction.CREDIT, 3).ending_balance == 3


def test_unknown_account_is_not_found(ledger: Ledger) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    err = refusal(ledger.post_transaction, T, NewTransaction(missing, Direction.CREDIT, 5, "USD"))
    assert err.reason == "ACCOUNT_NOT_FOUND"
    assert refusal(ledger.get_account, T, missing).reason == "ACCOUNT_NOT_FOUND"
    assert refusal(ledger.get_transaction, T, missing).reason == "TRANSACTION_NOT_FOUND"


def test_other_tenants_ids_and_counter_accounts_are_not_found(
    ledger: Ledger, admin: Admin, engine: Engine
) -> None:
    """The store looks rows up by id alone and checks tenant and kind itself."""
    admin.create_tenant("globex", "Globex")
    account = open_account(ledger)
    txn = post(ledger, account, Direction.CREDIT, 5)
    with engine.connect() as conn:
        counter = conn.execute(select(accounts.c.id).where(accounts.c.kind == "system")).scalars().first()
    assert counter is not None
    for tenant, account_id in (("globex", account.id), (T, counter)):
        assert refusal(ledger.get_account, tenant, account_id).reason == "ACCOUNT_NOT_FOUND"
        credit = NewTransaction(account_id, Direction.CREDIT, 5, "USD")
        assert refusal(ledger.post_transaction, tenant, credit).reason == "ACCOUNT_NOT_FOUND"
    assert refusal(ledger.get_transaction, "globex", txn.id).reason == "TRANSACTION_NOT_FOUND"
    assert ledger.get_account(T, account.id).posted == 5


@pytest.mark.parametrize(
    "filters",
    [{}, {"type": TransactionType.TRANSFER}],
    ids=["history", "filtered"],
)
def test_another_tenants_account_history_lists_nothing(
    ledger: Ledger, admin: Admin, filters: dict[str, object]
) -> None:
    """An account's history is read by the account alone (hot_sql's account_history and
    the filtered pages, migration 0010): another tenant asking for it gets an empty page,
    through each way of reading it (its own rows, and the transfers it received)."""
    admin.create_tenant("globex", "Globex")
    payer, payee = open_account(ledger, ref="payer"), open_account(ledger, ref="payee")
    post(ledger, payer, Direction.CREDIT, 10)
    ledger.transfer(T, NewTransaction(payer.id, Direction.DEBIT, 4, "USD", counterparty_id=payee.id))
    for account in (payer, payee):
        flt = TransactionFilter(account_id=account.id, **filters)  # type: ignore[arg-type]
        assert ledger.list_transactions(T, flt, 10, "")[0], "the tenant's own page is not empty"
        assert ledger.list_transactions("globex", flt, 10, "") == ([], "")


def test_an_atomic_batch_refuses_an_item_naming_no_account_of_the_tenant(
    ledger: Ledger, admin: Admin, store: SqlStore, engine: Engine
) -> None:
    """The batch locks its accounts in one statement (lock_customer_accounts), which
    leaves out ids that are missing, another tenant's or a counter-account's: the item
    naming one is refused, by its index, and nothing of the batch is posted."""
    admin.create_tenant("globex", "Globex")
    ours, other = open_account(ledger), open_account(ledger, ref="other")
    theirs = ledger.create_account("globex", NewAccount("cust", "USD", 0))
    assert isinstance(theirs, Account)
    post(ledger, ours, Direction.CREDIT, 5)
    with engine.connect() as conn:
        counter = conn.execute(select(accounts.c.id).where(accounts.c.kind == "system")).scalars().first()
    assert counter is not None
    missing = str(uuid.uuid4())
    ids = [other.id, theirs.id, counter, missing, ours.id]
    locked = store.write(ours.id, lambda w: w.lock_customer_accounts(T, ids))
    assert sorted(locked) == sorted([ours.id, other.id])
    assert locked[ours.id] == store.write(ours.id, lambda w: w.lock_customer_account(T, ours.id))
    for stranger in (theirs.id, counter, missing):
        named = (ours.id, stranger, other.id)
        items = [BatchItem(NewTransaction(a, Direction.CREDIT, 1, "USD")) for a in named]
        err = refusal(ledger.post_batch, T, items, atomic=True)
        assert (err.reason, err.metadata["item_index"]) == ("ACCOUNT_NOT_FOUND", "1")
    assert count(engine, transactions) == 1


def test_a_counter_shard_locked_in_a_unit_is_not_a_customer_account(ledger: Ledger, store: SqlStore) -> None:
    """A Book holds the counter shard it has locked beside its customer accounts; an item
    naming that shard (in a batch, after an item that took it) must still be refused, not
    posted to the shard. Before, customer() handed out any account the unit held."""
    account = open_account(ledger)
    post(ledger, account, Direction.CREDIT, 5)  # the currency's counter shards exist

    def unit(w: WriteUnit) -> str:
        book = Book(w, T, dt.datetime.now(dt.UTC))
        book.customer(account.id)
        shard = book.counter("USD", ISSUANCE)
        with pytest.raises(LedgerError) as info:
            book.customer(shard.id)
        book.customers([shard.id])
        with pytest.raises(LedgerError):
            book.customer(shard.id)
        return info.value.reason

    assert store.write(account.id, unit) == "ACCOUNT_NOT_FOUND"


def test_an_atomic_batch_locks_all_its_accounts_in_one_statement(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts_ = [open_account(ledger, ref=f"cust-{i}") for i in range(5)]
    post(ledger, accounts_[0], Direction.CREDIT, 5)  # the currency's counter shards exist
    one_by_one = unit_calls(monkeypatch, "lock_customer_account")
    items = [
        BatchItem(NewTransaction(a.id, Direction.CREDIT, 10 + i, "USD")) for i, a in enumerate(accounts_)
    ]
    results = ledger.post_batch(T, items * 2, atomic=True)
    assert one_by_one == []
    balances = [r.ending_balance for r in results if isinstance(r, Transaction)]
    assert balances == [15, 11, 12, 13, 14, 25, 22, 24, 26, 28]


def test_external_id_is_unique_and_names_the_original(ledger: Ledger) -> None:
    account = open_account(ledger)
    first = post(ledger, account, Direction.CREDIT, 5, external_id="order-4")
    err = refusal(post, ledger, account, Direction.CREDIT, 7, external_id="order-4")
    assert err.reason == "DUPLICATE_EXTERNAL_ID"
    assert err.metadata["existing_transaction"] == f"transactions/{first.id}"
    assert ledger.get_account(T, account.id).posted == 5


def test_balance_overflow_is_refused_not_wrapped(ledger: Ledger, engine: Engine) -> None:
    account = open_account(ledger)
    post(ledger, account, Direction.CREDIT, INT64_MAX)
    err = refusal(post, ledger, account, Direction.CREDIT, 1)
    assert err.reason == "BALANCE_OVERFLOW"
    assert ledger.get_account(T, account.id).posted == INT64_MAX
    assert invariant_violations(engine) == []


def test_counter_account_overflow_is_refused(ledger: Ledger) -> None:
    # Counter-account shards go negative by every credit: they must not wrap either.
    ledger_shards = 16
    accounts = [open_account(ledger, ref=f"c{i}") for i in range(ledger_shards + 2)]
    refusals = 0
    for account in accounts:
        try:
            post(ledger, account, Direction.CREDIT, INT64_MAX)
        except LedgerError as err:
            assert err.reason == "BALANCE_OVERFLOW"
            refusals += 1
    assert refusals >= 2  # more grants of INT64_MAX than shards: some shard would overflow


def test_request_id_replays_the_stored_response(ledger: Ledger, engine: Engine) -> None:
    account = open_account(ledger)
    rendered: list[bytes] = []

    def render(txn: Transaction) -> bytes:
        rendered.append(txn.id.encode())
        return txn.id.encode()

    fingerprint = hashlib.sha256(b"credit 5").digest()
    idem = Idempotency("8c3b6a8e-2d8f-4a8e-9a1c-2f5c0e4c7b11", fingerprint, render)
    cmd = NewTransaction(account.id, Direction.CREDIT, 5, "USD")
    first = ledger.post_transaction(T, cmd, idem)
    again = ledger.post_transaction(T, cmd, idem)
    assert isinstance(first, Transaction)
    assert again == Replay(first.id.encode())
    assert ledger.get_account(T, account.id).posted == 5
    other = Idempotency(idem.request_id, hashlib.sha256(b"credit 6").digest(), render)
    assert refusal(ledger.post_transaction, T, cmd, other).reason == "REQUEST_ID_REUSED"
    assert count(engine, transactions) == 1


def test_an_atomic_batch_replays_request_ids_stored_before_and_within_it(
    ledger: Ledger, engine: Engine
) -> None:
    """The batch looks its request ids up at once; an id stored earlier replays, an id
    repeated within the batch replays its first item, and one reused for another request
    refuses the whole batch."""
    account = open_account(ledger)
    credit = NewTransaction(account.id, Direction.CREDIT, 5, "USD")

    def idem(request_id: str, request: bytes = b"credit 5") -> Idempotency[Transaction]:
        return Idempotency(request_id, hashlib.sha256(request).digest(), lambda t: t.id.encode())

    earlier = ledger.post_transaction(T, credit, idem("earlier"))
    assert isinstance(earlier, Transaction)
    items = [BatchItem(credit, idem(rid)) for rid in ("earlier", "new", "new", "other")]
    results = ledger.post_batch(T, items, atomic=True)
    assert results[0] == Replay(earlier.id.encode())
    assert isinstance(results[1], Transaction) and isinstance(results[3], Transaction)
    assert results[2] == Replay(results[1].id.encode())
    assert count(engine, transactions) == 3  # earlier, new, other
    reused = [BatchItem(credit, idem("fresh")), BatchItem(credit, idem("new", b"credit 6"))]
    assert refusal(ledger.post_batch, T, reused, atomic=True).reason == "REQUEST_ID_REUSED"
    assert count(engine, transactions) == 3


def test_an_atomic_batch_over_many_accounts_writes_every_row_and_balance(
    ledger: Ledger, engine: Engine
) -> None:
    """Enough rows and accounts for each write to go as one bulk statement on Postgres
    (hot_sql.BULK_MIN_ROWS): every field, balance and stored response as item by item."""
    accounts_ = [open_account(ledger, ref=f"cust-{i}") for i in range(BULK_MIN_ROWS + 4)]

    def idem(request_id: str) -> Idempotency[Transaction]:
        return Idempotency(request_id, hashlib.sha256(request_id.encode()).digest(), lambda t: t.id.encode())

    commands = [
        NewTransaction(
            a.id,
            direction,
            amount,
            "USD",
            description=f"item {i}",
            external_id=f"ext-{i}" if i % 2 else "",
            metadata={"i": str(i)} if i % 3 else {},
        )
        for i, (a, direction, amount) in enumerate(
            [(a, Direction.CREDIT, 100 + n) for n, a in enumerate(accounts_)]
            + [(a, Direction.DEBIT, 30) for a in accounts_]
        )
    ]
    request_ids = [str(uuid.UUID(int=i)) for i in range(len(commands))]
    items = [BatchItem(cmd, idem(rid)) for cmd, rid in zip(commands, request_ids, strict=True)]
    results = ledger.post_batch(T, items, atomic=True)
    assert all(isinstance(r, Transaction) for r in results)
    for cmd, txn in zip(commands, results, strict=True):
        assert isinstance(txn, Transaction)
        assert ledger.get_transaction(T, txn.id) == txn
        assert (txn.account_id, txn.amount, txn.external_id, txn.metadata) == (
            cmd.account_id,
            cmd.amount,
            cmd.external_id,
            cmd.metadata,
        )
    assert [ledger.get_account(T, a.id).posted for a in accounts_] == [70 + n for n in range(len(accounts_))]
    assert invariant_violations(engine) == []
    replayed = ledger.post_batch(T, items, atomic=True)
    assert replayed == [Replay(r.id.encode()) for r in results if isinstance(r, Transaction)]


def test_an_external_id_repeated_within_a_batch_is_refused(ledger: Ledger, engine: Engine) -> None:
    """The batch's own rows are still buffered when the repeat is checked (sql_unit
    looks at them in memory): atomic refuses the batch, independent only the repeat."""
    account = open_account(ledger)
    items = [
        BatchItem(NewTransaction(account.id, Direction.CREDIT, n, "USD", external_id=ext))
        for n, ext in ((1, "order-1"), (2, "order-2"), (3, "order-1"))
    ]
    err = refusal(ledger.post_batch, T, items, atomic=True)
    assert (err.reason, err.metadata["item_index"]) == ("DUPLICATE_EXTERNAL_ID", "2")
    assert count(engine, transactions) == 0
    first, second, repeat = ledger.post_batch(T, items, atomic=False)
    assert isinstance(first, Transaction) and isinstance(second, Transaction)
    assert isinstance(repeat, LedgerError) and repeat.reason == "DUPLICATE_EXTERNAL_ID"
    assert repeat.metadata["existing_transaction"] == f"transactions/{first.id}"
    assert count(engine, transactions) == 2


def test_a_buffered_balance_is_written_before_its_account_is_locked_again(
    ledger: Ledger, store: SqlStore
) -> None:
    """set_balances is buffered until the unit's end (sql_unit._DEFERRED); locking an
    account sends it first, so a lock never reads a balance the unit has changed."""
    account = open_account(ledger)
    now = dt.datetime.now(dt.UTC)
    changed = SimpleNamespace(id=account.id, posted=7, pending=2, expiring=0, last_posting_date=None)

    def unit(w: WriteUnit) -> tuple[int, int] | None:
        w.set_balances([changed], now)
        locked = w.lock_customer_account(T, account.id)
        return None if locked is None else (locked.posted, locked.pending)

    assert store.write(account.id, unit) == (7, 2)


def test_a_posting_locks_its_account_and_a_counter_shard_in_one_statement(
    ledger: Ledger, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the currency's shards exist (the first posting makes them), a posting takes
    its shard with its account (lock_customer_and_counter): a round trip fewer."""
    account = open_account(ledger)
    post(ledger, account, Direction.CREDIT, 50)
    separately = unit_calls(monkeypatch, "lock_counter_account")
    debit = post(ledger, account, Direction.DEBIT, 20)
    assert separately == []
    assert debit.ending_balance == 30 and ledger.get_account(T, account.id).posted == 30
    assert invariant_violations(engine) == []


def test_refused_request_does_not_consume_its_request_id(ledger: Ledger) -> None:
    account = open_account(ledger)
    idem: Idempotency[Transaction] = Idempotency(
        "0b7f8a34-58a1-4f9e-8f36-6f3a8f6c2d10", b"f" * 32, lambda t: t.id.encode()
    )
    debit = NewTransaction(account.id, Direction.DEBIT, 5, "USD")
    assert refusal(ledger.post_transaction, T, debit, idem).reason == "INSUFFICIENT_FUNDS"
    post(ledger, account, Direction.CREDIT, 5)
    assert isinstance(ledger.post_transaction(T, debit, idem), Transaction)


def test_history_pages_newest_first_and_stays_stable_under_inserts(ledger: Ledger) -> None:
    account = open_account(ledger)
    posted = [post(ledger, account, Direction.CREDIT, i + 1) for i in range(7)]
    flt = TransactionFilter(account_id=account.id)
    page1, token = ledger.list_transactions(T, flt, 3, "")
    assert [t.amount for t in page1] == [7, 6, 5]
    post(ledger, account, Direction.CREDIT, 100)  # arrives between pages
    page2, token = ledger.list_transactions(T, flt, 3, token)
    page3, last = ledger.list_transactions(T, flt, 3, token)
    assert [t.amount for t in page2 + page3] == [4, 3, 2, 1]
    assert last == ""
    assert {t.id for t in page1 + page2 + page3} == {t.id for t in posted}


def test_history_filters_by_date_and_direction(ledger: Ledger) -> None:
    account = open_account(ledger)
    other = open_account(ledger, ref="other")
    post(ledger, account, Direction.CREDIT, 10, posting_date=dt.date(2025, 1, 1))
    post(ledger, account, Direction.DEBIT, 3, posting_date=dt.date(2025, 1, 2))
    post(ledger, account, Direction.CREDIT, 20, posting_date=dt.date(2025, 1, 3))
    post(ledger, other, Direction.CREDIT, 99, posting_date=dt.date(2025, 1, 2))

    def amounts(**kw: object) -> list[int]:
        items, _ = ledger.list_transactions(T, TransactionFilter(**kw), 0, "")  # type: ignore[arg-type]
        return [t.amount for t in items]

    assert amounts(account_id=account.id) == [20, 3, 10]
    assert amounts(account_id=account.id, direction=Direction.CREDIT) == [20, 10]
    assert amounts(date_from=dt.date(2025, 1, 2), date_to=dt.date(2025, 1, 2)) == [99, 3]
    assert amounts(account_id=account.id, date_from=dt.date(2025, 1, 3)) == [20]


def test_page_tokens_are_tamper_checked_and_bound_to_their_filters(ledger: Ledger) -> None:
    account = open_account(ledger)
    for i in range(3):
        post(ledger, account, Direction.CREDIT, i + 1)
    _, token = ledger.list_transactions(T, TransactionFilter(account_id=account.id), 1, "")
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    for bad in (forged, "garbage", token + "x"):
        assert refusal(ledger.list_transactions, T, TransactionFilter(account.id), 1, bad).reason == (
            "INVALID_PAGE_TOKEN"
        )
    other_filter = TransactionFilter(account_id=account.id, direction=Direction.DEBIT)
    assert refusal(ledger.list_transactions, T, other_filter, 1, token).reason == "INVALID_PAGE_TOKEN"


def test_page_size_bounds(ledger: Ledger) -> None:
    account = open_account(ledger)
    assert refusal(ledger.list_transactions, T, TransactionFilter(), -1, "").reason == "INVALID_REQUEST"
    assert refusal(ledger.list_accounts, T, "", -5, "").reason == "INVALID_REQUEST"
    for i in range(3):
        post(ledger, account, Direction.CREDIT, i + 1)
    items, token = ledger.list_transactions(T, TransactionFilter(), 5000, "")  # lowered to the max
    assert len(items) == 3 and token == ""


def test_accounts_list_oldest_first_and_filter_by_external_ref(ledger: Ledger) -> None:
    made = [open_account(ledger, ref=f"ref-{i % 2}") for i in range(5)]
    page, token = ledger.list_accounts(T, "", 2, "")
    rest, end = ledger.list_accounts(T, "", 10, token)
    assert [a.id for a in page + rest] == [a.id for a in made]
    assert end == ""
    only, _ = ledger.list_accounts(T, "ref-1", 10, "")
    assert [a.id for a in only] == [made[1].id, made[3].id]


def test_only_ascii_currency_codes_are_accepted(ledger: Ledger) -> None:
    err = refusal(ledger.create_account, T, NewAccount("x", "\u0131sd"))  # dotless i upper-cases to "ISD"
    assert [v.field for v in err.violations] == ["account.currency"]


def test_external_ref_filter_is_validated(ledger: Ledger) -> None:
    assert refusal(ledger.list_accounts, T, "\x00", 0, "").reason == "INVALID_REQUEST"
