"""The change feed (Ledger.list_transaction_changes) against a real store, SQLite and
Postgres: every creation and every later change of a transaction, an account's in commit
order, each with the transaction as that change left it, resumable from any change's
token or from the feed's end (start_at_end), and, on Postgres, never skipping a change
committed after a later-numbered one."""

from __future__ import annotations

import datetime as dt
import random
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from ledger.v1 import transaction_pb2, transaction_service_pb2
from ledger_client import LedgerClient
from sqlalchemy import Engine, text

from ledger_server.core.errors import LedgerError
from ledger_server.core.ledger import BatchItem, Idempotency, Ledger
from ledger_server.core.model import (
    DEFAULT_TENANT,
    Account,
    Direction,
    NewAccount,
    NewTransaction,
    Tenant,
    Transaction,
    TransactionChange,
    TransactionStatus,
)
from ledger_server.store.sql_store import SqlStore
from tests.support import START, Clock
from tests.test_lifecycle import capture, credit, debit, hold, open_account, refund, transfer

T = DEFAULT_TENANT
DAY = dt.timedelta(days=1)
Seen = tuple[str, bool, TransactionStatus, int, int]


def seen(change: TransactionChange) -> Seen:
    t = change.transaction
    return t.id, change.created, t.status, t.refunded_amount, t.captured_amount


def whole_feed(
    ledger: Ledger, tenant: str = T, token: str = "", page_size: int = 3
) -> tuple[list[Seen], str]:
    """Every change after `token`, page by page, and the token to continue after them."""
    out: list[Seen] = []
    while True:
        page, token, _ = ledger.list_transaction_changes(tenant, page_size, token)
        out += [seen(c) for c, _ in page]
        if not page:
            return out, token


def test_the_feed_has_each_creation_and_change_as_it_left_the_transaction(book: Ledger, clock: Clock) -> None:
    account = open_account(book)
    paid = credit(book, account, 1000)
    spent = debit(book, account, 300)
    held = hold(book, account, 200, expires=START + DAY)
    taken = capture(book, held, 50)
    back = refund(book, spent, 100)
    rest = refund(book, spent)
    lapsing = hold(book, account, 10, expires=START + DAY)
    clock.advance(2 * DAY)
    assert book.expire_due().holds_voided == 1
    P, V, PEND = TransactionStatus.POSTED, TransactionStatus.VOIDED, TransactionStatus.PENDING
    partly = TransactionStatus.PARTIALLY_REFUNDED
    assert whole_feed(book)[0] == [
        (paid.id, True, P, 0, 0),
        (spent.id, True, P, 0, 0),
        (held.id, True, PEND, 0, 0),
        (taken.capture.id, True, P, 0, 0),
        (held.id, False, TransactionStatus.CAPTURED, 0, 50),
        (back.refund.id, True, P, 0, 0),
        (spent.id, False, partly, 100, 0),
        (rest.refund.id, True, P, 0, 0),
        (spent.id, False, TransactionStatus.REFUNDED, 300, 0),
        (lapsing.id, True, PEND, 0, 0),
        (lapsing.id, False, V, 0, 0),  # voided by the expiry worker
    ]
    # Apart from the state it changes, a change carries the transaction as it is.
    changes = [c for c, _ in book.list_transaction_changes(T, 20, "")[0]]
    assert changes[1].transaction == spent
    assert changes[4].transaction == book.get_transaction(T, held.id)


def test_every_change_resumes_the_feed_after_itself(book: Ledger) -> None:
    account = open_account(book)
    for amount in range(1, 6):
        credit(book, account, amount)
    page, after_page, caught_up = book.list_transaction_changes(T, 10, "")
    assert [c.transaction.amount for c, _ in page] == [1, 2, 3, 4, 5]
    for i, (_, token) in enumerate(page):
        rest, _ = whole_feed(book, token=token, page_size=2)
        assert [s[0] for s in rest] == [c.transaction.id for c, _ in page[i + 1 :]]
    assert after_page == page[-1][1]
    assert caught_up  # five changes, a page of ten: nothing after it yet
    assert not book.list_transaction_changes(T, 2, "").caught_up
    # Caught up: an empty page, and a token that still continues from there.
    empty, same, _ = book.list_transaction_changes(T, 10, after_page)
    assert empty == [] and book.list_transaction_changes(T, 10, same)[0] == []
    late = credit(book, account, 6)
    assert [s[0] for s in whole_feed(book, token=same)[0]] == [late.id]
    # An empty feed hands out a token too, which sees what comes later.
    assert book.list_transaction_changes("t2", 5, "")[0] == []


def test_a_batch_enters_the_feed_in_item_order_and_a_refused_one_not_at_all(book: Ledger) -> None:
    account = open_account(book)
    items = [BatchItem(NewTransaction(account.id, Direction.CREDIT, n, "USD")) for n in (5, 6, 7)]
    posted = book.post_batch(T, items, atomic=True)
    too_much = NewTransaction(account.id, Direction.DEBIT, 10**6, "USD")
    with pytest.raises(LedgerError):
        book.post_batch(T, [items[0], BatchItem(too_much)], atomic=True)
    assert [s[0] for s in whole_feed(book)[0]] == [getattr(r, "id", None) for r in posted]


def test_a_replayed_request_adds_nothing_to_the_feed(book: Ledger) -> None:
    account = open_account(book)
    cmd = NewTransaction(account.id, Direction.CREDIT, 5, "USD")
    idem: Idempotency[Transaction] = Idempotency(str(uuid.uuid4()), b"fp", lambda t: t.id.encode())
    book.post_transaction(T, cmd, idem)
    book.post_transaction(T, cmd, idem)
    assert len(whole_feed(book)[0]) == 1


def test_each_tenant_reads_its_own_feed_with_its_own_tokens(book: Ledger, store: SqlStore) -> None:
    store.write("setup", lambda w: w.insert_tenant(Tenant("t2", "Two", START)))
    mine = credit(book, open_account(book), 5)
    other = book.create_account("t2", NewAccount("theirs", "USD"))
    assert isinstance(other, Account)
    theirs = book.post_transaction("t2", NewTransaction(other.id, Direction.CREDIT, 7, "USD"))
    assert [s[0] for s in whole_feed(book)[0]] == [mine.id]
    assert [s[0] for s in whole_feed(book, "t2")[0]] == [getattr(theirs, "id", None)]
    (_, token), *_ = book.list_transaction_changes(T, 1, "")[0]
    with pytest.raises(LedgerError) as refused:
        book.list_transaction_changes("t2", 1, token)
    assert refused.value.reason == "INVALID_PAGE_TOKEN"


@pytest.mark.parametrize(("page_size", "token"), [(-1, ""), (10, "not-a-token")])
def test_bad_paging_is_refused(book: Ledger, page_size: int, token: str) -> None:
    with pytest.raises(LedgerError) as refused:
        book.list_transaction_changes(T, page_size, token)
    assert refused.value.category.name == "INVALID_ARGUMENT"


@pytest.fixture
def open_writer(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        yield conn


# Postgres only: SQLite's writers take turns, so there seq order is commit order.
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgres_never_skips_a_change_committed_after_a_later_numbered_one(
    book: Ledger, engine: Engine, open_writer: psycopg.Connection[tuple[object, ...]]
) -> None:
    first = credit(book, open_account(book), 1)
    # Another writer numbers a change of that account and has not committed it yet
    # (its xid is older than the next posting's, its seq lower) when the ledger commits
    # a posting on another account.
    open_writer.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (first.account_id,))
    open_writer.execute(
        "UPDATE transactions SET refunded_amount = 1, status = 'refunded' WHERE id = %s", (first.id,)
    )
    late = credit(book, open_account(book), 2)
    page, token, _ = book.list_transaction_changes(T, 10, "")
    # The horizon stops before the open writer: the later posting waits with it.
    assert [c.transaction.id for c, _ in page] == [first.id]
    open_writer.commit()
    rest, _ = whole_feed(book, token=token)
    assert rest == [
        (first.id, False, TransactionStatus.REFUNDED, 1, 0),
        (late.id, True, TransactionStatus.POSTED, 0, 0),
    ]
    with engine.connect() as conn:
        xids = conn.execute(text("SELECT xid FROM transaction_changes ORDER BY seq")).scalars().all()
    # The open writer's change was numbered (seq, xid) before the later posting, which
    # committed first: a reader going by numbers alone would have passed it by.
    assert xids[0] < xids[1] < xids[2]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("changed", ["its own", "a transfer to it"])
def test_postgres_keeps_an_accounts_changes_in_commit_order(
    book: Ledger, engine: Engine, open_writer: psycopg.Connection[tuple[object, ...]], changed: str
) -> None:
    """A writer takes its transaction id, then the ledger commits a posting on an account,
    then that writer changes a transaction of the account (one of its own, or a transfer
    to it from another account: each statement's accounts are placed alike) and commits:
    its change comes after the posting, although its id is the older."""
    account, source = open_account(book), open_account(book)
    credit(book, source, 10)
    first = transfer(book, source, account, 5) if changed != "its own" else credit(book, account, 5)
    open_writer.execute("SELECT pg_current_xact_id()")
    second = credit(book, account, 6)
    open_writer.execute("SELECT 1 FROM accounts WHERE id IN (%s, %s) FOR UPDATE", (account.id, source.id))
    open_writer.execute(
        "UPDATE transactions SET status = 'refunded', refunded_amount = 5 WHERE id = %s", (first.id,)
    )
    open_writer.commit()
    assert whole_feed(book)[0][-3:] == [
        (first.id, True, TransactionStatus.POSTED, 0, 0),
        (second.id, True, TransactionStatus.POSTED, 0, 0),
        (first.id, False, TransactionStatus.REFUNDED, 5, 0),
    ]


def test_a_follower_reading_while_many_write_sees_every_change_once_in_account_order(
    client: LedgerClient, engine: Engine
) -> None:
    """Writers on a few accounts (credits, debits, transfers between them, holds and their
    captures; on Postgres through several group-commit writers, so their transactions
    commit out of the order they numbered them) while a follower reads the feed."""
    accounts = funded_accounts(client)
    writing = threading.Event()
    writing.set()
    followed: list[transaction_service_pb2.TransactionChange] = []

    def follow() -> None:
        token = ""
        while True:
            done = not writing.is_set()  # read once more after the writers stop
            page = client.list_transaction_changes(page_size=7, page_token=token)
            followed.extend(page.changes)
            token = page.next_page_token
            if done and not page.changes:
                return

    with ThreadPoolExecutor(7) as pool:
        follower = pool.submit(follow)
        write_concurrently(client, accounts, pool)
        writing.clear()
        follower.result(timeout=120)
    assert_followed_every_change_once(client, engine, accounts, followed)


def funded_accounts(client: LedgerClient) -> list[str]:
    accounts = [client.create_account(currency="USD").name for _ in range(4)]
    for name in accounts:
        client.credit(name, 10_000, "USD")
    return accounts


def write_concurrently(client: LedgerClient, accounts: list[str], pool: ThreadPoolExecutor) -> None:
    """Six writers, 25 random credits, debits, transfers and captured holds each."""

    def write(worker: int) -> None:
        rng = random.Random(worker)
        for _ in range(25):
            name, other = rng.sample(accounts, 2)
            op = rng.randrange(4)
            if op == 0:
                client.credit(name, rng.randint(1, 50), "USD")
            elif op == 1:
                client.debit(name, rng.randint(1, 50), "USD")
            elif op == 2:
                client.transfer(name, other, rng.randint(1, 50), "USD")
            else:
                client.capture_hold(client.create_hold(name, 20, "USD").name, amount=rng.randint(1, 20))

    list(pool.map(write, range(6)))


def changes_in_feed(engine: Engine) -> int:
    with engine.connect() as conn:
        count: int = conn.execute(text("SELECT COUNT(*) FROM transaction_changes")).scalar_one()
        return count


def assert_followed_every_change_once(
    client: LedgerClient,
    engine: Engine,
    accounts: list[str],
    followed: list[transaction_service_pb2.TransactionChange],
) -> None:
    """Every change of the feed followed once; each account's in commit order; the last
    change of each transaction is how it stands, the last creation on an account carries
    its balance."""
    assert changes_in_feed(engine) == len(followed)
    with engine.connect() as conn:
        in_entry_order = {
            name: conn.execute(
                text("SELECT transaction_id FROM entries WHERE account_id = :id ORDER BY seq"),
                {"id": name.split("/")[1]},
            )
            .scalars()
            .all()
            for name in accounts
        }
    created = [
        c.transaction for c in followed if c.type == transaction_service_pb2.TRANSACTION_CHANGE_TYPE_CREATED
    ]
    assert len({t.name for t in created}) == len(created)  # each creation once
    last: dict[str, transaction_pb2.Transaction] = {}
    for change in followed:
        last[change.transaction.name] = change.transaction
    for name, seen_last in last.items():  # the last change seen is the transaction as it is
        assert seen_last == client.get_transaction(name)
    for name, entry_order in in_entry_order.items():  # each account's postings in commit order
        ids = set(entry_order)
        feed_order = [t.name.split("/")[1] for t in created if t.name.split("/")[1] in ids]
        assert feed_order == list(dict.fromkeys(entry_order))
        # The last transaction created on it carries its posted balance.
        balances = [
            t.ending_balance if t.account == name else t.counterparty_ending_balance
            for t in created
            if name in (t.account, t.counterparty_account)
        ]
        assert balances[-1] == client.get_account(name).balance.posted


def test_start_at_end_skips_the_history_and_continues_with_what_comes_next(book: Ledger) -> None:
    from_empty = book.list_transaction_changes(T, 10, "", start_at_end=True)  # a feed with nothing yet
    account = open_account(book)
    paid = credit(book, account, 1)
    assert from_empty.changes == []
    assert whole_feed(book, token=from_empty.next_token)[0] == [
        (paid.id, True, TransactionStatus.POSTED, 0, 0)
    ]
    at_end = book.list_transaction_changes(T, 10, "", start_at_end=True)
    assert (at_end.changes, at_end.caught_up) == ([], True)
    spent = debit(book, account, 1)
    assert whole_feed(book, token=at_end.next_token)[0] == [(spent.id, True, TransactionStatus.POSTED, 0, 0)]


def test_start_at_end_with_a_page_token_is_refused(book: Ledger) -> None:
    credit(book, open_account(book), 1)
    _, token, _ = book.list_transaction_changes(T, 1, "")
    with pytest.raises(LedgerError) as refused:
        book.list_transaction_changes(T, 1, token, start_at_end=True)
    assert refused.value.category.name == "INVALID_ARGUMENT"
    assert [v.field for v in refused.value.violations] == ["page_token"]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgres_start_at_end_stops_before_a_writer_still_open(
    book: Ledger, open_writer: psycopg.Connection[tuple[object, ...]]
) -> None:
    account = open_account(book)
    open_writer.execute("SELECT pg_current_xact_id()")  # a writer begun, not yet committed
    later = credit(book, account, 1)  # committed, but placed after the open writer's id
    end = book.list_transaction_changes(T, 10, "", start_at_end=True)
    open_writer.rollback()
    # The end stops before the open writer: what comes after it is still to be read.
    assert whole_feed(book, token=end.next_token)[0] == [(later.id, True, TransactionStatus.POSTED, 0, 0)]
