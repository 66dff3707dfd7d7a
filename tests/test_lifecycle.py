"""The credit lifecycle in the core, against a real store (SQLite and Postgres): holds,
captures and voids, refunds, transfers, expiring credit lots, balances as of a time or
a posting date, the expiry worker, and VerifyLedger."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable

import psycopg
import pytest
from sqlalchemy import Engine, text

from ledger_server.core.audit import verify
from ledger_server.core.errors import LedgerError
from ledger_server.core.ledger import Idempotency, Ledger, Replay
from ledger_server.core.model import (
    DEFAULT_TENANT,
    Account,
    Direction,
    NewAccount,
    NewTransaction,
    Transaction,
    TransactionFilter,
    TransactionStatus,
    TransactionType,
)
from ledger_server.core.operations import Capture, Refund
from ledger_server.store.sql_store import SqlStore
from tests.support import START, Clock, holding_account_lock, invariant_violations, unit_calls

T = DEFAULT_TENANT
DAY = dt.timedelta(days=1)


def open_account(ledger: Ledger, currency: str = "USD", floor: int = 0) -> Account:
    account = ledger.create_account(T, NewAccount("customer", currency, floor))
    assert isinstance(account, Account)
    return account


def credit(
    ledger: Ledger,
    account: Account,
    amount: int,
    expires: dt.datetime | None = None,
    posting_date: dt.date | None = None,
) -> Transaction:
    cmd = NewTransaction(
        account.id, Direction.CREDIT, amount, account.currency, posting_date=posting_date, expires_at=expires
    )
    txn = ledger.post_transaction(T, cmd)
    assert isinstance(txn, Transaction)
    return txn


def debit(ledger: Ledger, account: Account, amount: int, posting_date: dt.date | None = None) -> Transaction:
    cmd = NewTransaction(account.id, Direction.DEBIT, amount, account.currency, posting_date=posting_date)
    txn = ledger.post_transaction(T, cmd)
    assert isinstance(txn, Transaction)
    return txn


def hold(
    ledger: Ledger,
    account: Account,
    amount: int,
    expires: dt.datetime | None = None,
    posting_date: dt.date | None = None,
) -> Transaction:
    cmd = NewTransaction(
        account.id, None, amount, account.currency, posting_date=posting_date, expires_at=expires
    )
    txn = ledger.create_hold(T, cmd)
    assert isinstance(txn, Transaction)
    return txn


def dated(posting_date: dt.date | None) -> NewTransaction:
    """A capture's or refund's details: only its posting date."""
    return NewTransaction("", None, 0, "", posting_date=posting_date)


def capture(
    ledger: Ledger, held: Transaction, amount: int = 0, posting_date: dt.date | None = None
) -> Capture:
    result = ledger.capture_hold(T, held.id, amount=amount, cmd=dated(posting_date))
    assert isinstance(result, Capture)
    return result


def refund(
    ledger: Ledger, original: Transaction, amount: int = 0, posting_date: dt.date | None = None
) -> Refund:
    result = ledger.refund(T, original.id, amount=amount, cmd=dated(posting_date))
    assert isinstance(result, Refund)
    return result


def transfer(ledger: Ledger, source: Account, destination: Account, amount: int) -> Transaction:
    cmd = NewTransaction(source.id, None, amount, source.currency, counterparty_id=destination.id)
    txn = ledger.transfer(T, cmd)
    assert isinstance(txn, Transaction)
    return txn


def refusal(fn: Callable[..., object], *args: object, **kw: object) -> LedgerError:
    with pytest.raises(LedgerError) as info:
        fn(*args, **kw)
    return info.value


def balances(ledger: Ledger, account: Account) -> tuple[int, int, int]:
    a = ledger.get_account(T, account.id)
    return a.posted, a.pending, a.available


def clean(ledger: Ledger, engine: Engine) -> None:
    """VerifyLedger and the SQL invariants both find nothing wrong."""
    assert ledger.verify(T).violations == []
    assert invariant_violations(engine) == []


# -- holds ----------------------------------------------------------------------------


def test_hold_lowers_available_not_posted_and_capture_releases_the_rest(book: Ledger, engine: Engine) -> None:
    account = open_account(book)
    credit(book, account, 1000)
    held = hold(book, account, 400)
    assert (held.type, held.status, held.ending_balance) == (
        TransactionType.HOLD,
        TransactionStatus.PENDING,
        1000,
    )
    assert balances(book, account) == (1000, 400, 600)
    refused = refusal(debit, book, account, 601)
    assert refused.reason == "INSUFFICIENT_FUNDS"
    captured = capture(book, held, 150)
    assert captured.hold.status is TransactionStatus.CAPTURED
    assert captured.hold.captured_amount == 150
    assert captured.capture.type is TransactionType.CAPTURE
    assert captured.capture.related_id == held.id
    assert (captured.capture.direction, captured.capture.amount) == (Direction.DEBIT, 150)
    assert captured.capture.ending_balance == 850
    assert balances(book, account) == (850, 0, 850)
    assert book.get_transaction(T, held.id).status is TransactionStatus.CAPTURED
    clean(book, engine)


def test_capture_and_void_refusals(book: Ledger, engine: Engine) -> None:
    account = open_account(book)
    plain = credit(book, account, 1000)
    held = hold(book, account, 300)
    assert refusal(capture, book, held, 301).reason == "AMOUNT_EXCEEDS_HOLD"
    assert refusal(capture, book, plain).reason == "NOT_A_HOLD"
    voided = book.void_hold(T, held.id)
    assert isinstance(voided, Transaction) and voided.status is TransactionStatus.VOIDED
    after_void = refusal(capture, book, held)
    assert (after_void.reason, after_void.metadata["status"]) == ("HOLD_NOT_PENDING", "voided")
    assert refusal(book.void_hold, T, held.id).reason == "HOLD_NOT_PENDING"
    second = hold(book, account, 200)
    capture(book, second)
    assert refusal(book.void_hold, T, second.id).metadata["status"] == "captured"
    assert refusal(capture, book, second).reason == "HOLD_NOT_PENDING"
    assert balances(book, account) == (800, 0, 800)
    assert refusal(hold, book, account, 801).reason == "INSUFFICIENT_FUNDS"
    clean(book, engine)


def test_an_expired_hold_never_blocks_or_captures_even_before_the_worker(
    book: Ledger, clock: Clock, engine: Engine
) -> None:
    account = open_account(book)
    credit(book, account, 500)
    held = hold(book, account, 500, expires=START + DAY)
    assert refusal(debit, book, account, 1).reason == "INSUFFICIENT_FUNDS"
    clock.advance(DAY)
    assert book.get_transaction(T, held.id).status is TransactionStatus.VOIDED  # as read, before any sweep
    assert balances(book, account) == (500, 0, 500)
    assert refusal(capture, book, held).reason == "HOLD_NOT_PENDING"
    debit(book, account, 500)  # the write releases the lapsed hold first
    assert balances(book, account) == (0, 0, 0)
    clean(book, engine)


def test_the_expiry_worker_releases_lapsed_holds(book: Ledger, clock: Clock, engine: Engine) -> None:
    account = open_account(book)
    credit(book, account, 500)
    hold(book, account, 200, expires=START + DAY)
    kept = hold(book, account, 100)
    clock.advance(2 * DAY)
    report = book.expire_due()
    assert (report.accounts, report.holds_voided, report.lots_expired) == (1, 1, 0)
    assert book.expire_due().accounts == 0  # nothing left to do
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT pending FROM accounts WHERE id = '{account.id}'")).scalar() == 100
    assert book.get_transaction(T, kept.id).status is TransactionStatus.PENDING
    clean(book, engine)


# -- refunds --------------------------------------------------------------------------


def test_partial_then_full_refunds_of_a_debit(book: Ledger, engine: Engine) -> None:
    account = open_account(book)
    credit(book, account, 1000)
    spent = debit(book, account, 600)
    first = refund(book, spent, 200)
    assert first.refund.type is TransactionType.REFUND
    assert (first.refund.direction, first.refund.amount, first.refund.related_id) == (
        Direction.CREDIT,
        200,
        spent.id,
    )
    assert (first.original.status, first.original.refunded_amount) == (
        TransactionStatus.PARTIALLY_REFUNDED,
        200,
    )
    over = refusal(refund, book, spent, 401)
    assert (over.reason, over.metadata["refundable"]) == ("AMOUNT_EXCEEDS_REFUNDABLE", "400")
    rest = refund(book, spent)  # 0: all that is left
    assert rest.refund.amount == 400
    assert (rest.original.status, rest.original.refunded_amount) == (TransactionStatus.REFUNDED, 600)
    assert refusal(refund, book, spent, 1).reason == "AMOUNT_EXCEEDS_REFUNDABLE"
    assert refusal(refund, book, rest.refund).reason == "NOT_REFUNDABLE"  # no refund of a refund
    assert balances(book, account) == (1000, 0, 1000)
    assert book.get_transaction(T, spent.id).refunded_amount == 600
    clean(book, engine)


def test_refunding_a_credit_takes_it_back_and_respects_the_floor(book: Ledger, engine: Engine) -> None:
    account = open_account(book)
    granted = credit(book, account, 300)
    debit(book, account, 250)
    assert refusal(refund, book, granted).reason == "INSUFFICIENT_FUNDS"
    back = refund(book, granted, 50)
    assert back.refund.direction is Direction.DEBIT
    assert balances(book, account) == (0, 0, 0)
    clean(book, engine)


def test_captures_are_refundable_holds_and_transfers_are_not(book: Ledger, engine: Engine) -> None:
    account, other = open_account(book), open_account(book)
    credit(book, account, 1000)
    held = hold(book, account, 300)
    assert refusal(refund, book, held).reason == "NOT_REFUNDABLE"
    captured = capture(book, held)
    assert refund(book, captured.capture).original.status is TransactionStatus.REFUNDED
    moved = transfer(book, account, other, 100)
    assert refusal(refund, book, moved).reason == "NOT_REFUNDABLE"
    clean(book, engine)


# -- transfers ------------------------------------------------------------------------


def test_transfer_moves_credit_and_reports_both_ending_balances(book: Ledger, engine: Engine) -> None:
    company, member = open_account(book), open_account(book)
    credit(book, company, 1000)
    credit(book, member, 5)
    moved = transfer(book, company, member, 400)
    assert moved.type is TransactionType.TRANSFER
    assert (moved.account_id, moved.counterparty_id) == (company.id, member.id)
    assert (moved.ending_balance, moved.counterparty_ending_balance) == (600, 405)
    assert balances(book, company)[0] == 600 and balances(book, member)[0] == 405
    history, _ = book.list_transactions(T, TransactionFilter(account_id=member.id), 10, "")
    assert moved.id in {t.id for t in history}  # in the history of both accounts
    assert refusal(transfer, book, company, member, 601).reason == "INSUFFICIENT_FUNDS"
    assert refusal(transfer, book, company, company, 1).reason == "INVALID_REQUEST"
    euro = open_account(book, "EUR")
    assert refusal(transfer, book, company, euro, 1).reason == "CURRENCY_MISMATCH"
    clean(book, engine)


def test_a_transfer_locks_both_accounts_in_one_statement(
    book: Ledger, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    company, member = open_account(book), open_account(book)
    credit(book, company, 100)
    one_by_one = unit_calls(monkeypatch, "lock_customer_account")
    assert transfer(book, company, member, 40).counterparty_ending_balance == 40
    assert one_by_one == []
    nowhere = NewTransaction(company.id, None, 1, "USD", counterparty_id=str(uuid.uuid4()))
    assert refusal(book.transfer, T, nowhere).reason == "ACCOUNT_NOT_FOUND"
    assert balances(book, company)[0] == 60
    clean(book, engine)


def test_opposite_transfers_at_once_do_not_deadlock(book: Ledger, engine: Engine) -> None:
    a, b = open_account(book), open_account(book)
    credit(book, a, 10_000)
    credit(book, b, 10_000)
    errors: list[BaseException] = []

    def move(source: Account, destination: Account) -> None:
        try:
            for _ in range(25):
                transfer(book, source, destination, 7)
        except BaseException as exc:  # collected: a failure in a thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=move, args=pair) for pair in [(a, b), (b, a)] * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "transfers hung"
    assert errors == []
    assert balances(book, a)[0] == balances(book, b)[0] == 10_000  # 75 each way
    clean(book, engine)


# -- expiring credit ------------------------------------------------------------------


def test_debits_consume_soonest_expiring_lots_first_then_permanent(book: Ledger, engine: Engine) -> None:
    account = open_account(book)
    credit(book, account, 100)  # permanent
    soon = credit(book, account, 70, expires=START + 10 * DAY)
    late = credit(book, account, 50, expires=START + 30 * DAY)
    middle = credit(book, account, 1, expires=START + 20 * DAY)  # newest, but not the latest expiry
    a = book.get_account(T, account.id)
    assert (a.posted, a.expiring, a.permanent) == (221, 121, 100)
    assert [(e.amount, e.expires_at) for e in a.next_expirations] == [
        (70, START + 10 * DAY),
        (1, START + 20 * DAY),
        (50, START + 30 * DAY),
    ]
    debit(book, account, 101)  # 70 from the soon lot, 1 from the middle one, 30 from the late one
    a = book.get_account(T, account.id)
    assert (a.posted, a.expiring, a.permanent) == (120, 20, 100)
    assert [(e.amount, e.expires_at) for e in a.next_expirations] == [(20, START + 30 * DAY)]
    debit(book, account, 50)  # 20 from the late lot, 30 permanent
    a = book.get_account(T, account.id)
    assert (a.posted, a.expiring, a.permanent) == (70, 0, 70)
    assert [t.expires_at for t in (soon, middle, late)] == [START + d * DAY for d in (10, 20, 30)]
    clean(book, engine)


def test_expired_credit_can_never_be_spent_even_before_the_worker(
    book: Ledger, clock: Clock, engine: Engine
) -> None:
    account = open_account(book)
    credit(book, account, 40)
    lot = credit(book, account, 60, expires=START + DAY)
    clock.advance(DAY)
    a = book.get_account(T, account.id)  # read before any sweep: expired credit left out
    assert (a.posted, a.expiring, a.available) == (40, 0, 40)
    assert refusal(debit, book, account, 41).reason == "INSUFFICIENT_FUNDS"
    debit(book, account, 40)
    history, _ = book.list_transactions(T, TransactionFilter(account_id=account.id), 10, "")
    expiry = next(t for t in history if t.type is TransactionType.EXPIRY)
    assert (expiry.amount, expiry.direction, expiry.related_id) == (60, Direction.DEBIT, lot.id)
    assert balances(book, account) == (0, 0, 0)
    clean(book, engine)


def test_the_expiry_worker_writes_off_expired_lots_to_the_expiry_account(
    book: Ledger, clock: Clock, engine: Engine
) -> None:
    accounts = [open_account(book) for _ in range(3)]
    for i, account in enumerate(accounts):
        credit(book, account, 10 * (i + 1), expires=START + DAY)
        credit(book, account, 5)
    debit(book, accounts[0], 4)
    clock.advance(DAY)
    report = book.expire_due(limit=2)  # several rounds
    assert (report.accounts, report.lots_expired) == (3, 3)
    assert [book.get_account(T, a.id).posted for a in accounts] == [5 + 10 - 4 - 6, 5, 5]
    with engine.connect() as conn:
        written_off = conn.execute(
            text("SELECT SUM(posted) FROM accounts WHERE purpose = 'expiry'")
        ).scalar_one()
    assert written_off == 6 + 20 + 30
    clean(book, engine)


def test_refunding_a_debit_gives_credit_back_to_the_lots_it_consumed(
    book: Ledger, clock: Clock, engine: Engine
) -> None:
    account = open_account(book)
    credit(book, account, 100)
    credit(book, account, 50, expires=START + 10 * DAY)
    credit(book, account, 50, expires=START + 20 * DAY)
    spent = debit(book, account, 130)  # 50 + 50 from lots, 30 permanent
    assert book.get_account(T, account.id).expiring == 0
    refund(book, spent, 40)  # permanent part first (30), then the latest-expiring lot (10)
    a = book.get_account(T, account.id)
    assert (a.posted, a.expiring, a.permanent) == (110, 10, 100)
    assert [(e.amount, e.expires_at) for e in a.next_expirations] == [(10, START + 20 * DAY)]
    clock.advance(15 * DAY)  # the first lot has expired: what comes back to it expires at once
    refund(book, spent)
    a = book.get_account(T, account.id)
    assert (a.posted, a.expiring, a.permanent) == (150, 50, 100)
    history, _ = book.list_transactions(T, TransactionFilter(account_id=account.id), 20, "")
    assert [t.amount for t in history if t.type is TransactionType.EXPIRY] == [50]
    clean(book, engine)


def test_transfers_keep_expiring_credit_expiring(book: Ledger, clock: Clock, engine: Engine) -> None:
    company, member = open_account(book), open_account(book)
    credit(book, company, 100)
    credit(book, company, 30, expires=START + 5 * DAY)
    moved = transfer(book, company, member, 50)  # 30 expiring + 20 permanent
    m = book.get_account(T, member.id)
    assert (m.posted, m.expiring, m.permanent) == (50, 30, 20)
    clock.advance(5 * DAY)
    book.expire_due()
    history, _ = book.list_transactions(T, TransactionFilter(account_id=member.id), 10, "")
    expiry = next(t for t in history if t.type is TransactionType.EXPIRY)
    assert (expiry.amount, expiry.related_id) == (30, moved.id)
    assert book.get_account(T, member.id).posted == 20
    clean(book, engine)


def test_expire_time_rules(book: Ledger) -> None:
    account = open_account(book)
    past = refusal(credit, book, account, 1, expires=START - DAY)
    assert past.violations[0].field == "transaction.expire_time"
    cmd = NewTransaction(account.id, Direction.DEBIT, 1, "USD", expires_at=START + DAY)
    assert refusal(book.post_transaction, T, cmd).violations[0].field == "transaction.expire_time"


# -- balances as of -------------------------------------------------------------------


def test_balance_as_of_a_time_and_a_posting_date_including_backfills(
    book: Ledger, clock: Clock, engine: Engine
) -> None:
    account = open_account(book)
    d1, d2, d3 = dt.date(2026, 5, 1), dt.date(2026, 5, 10), dt.date(2026, 5, 20)
    credit(book, account, 100, posting_date=d2)
    clock.advance(dt.timedelta(hours=1))
    middle = clock.now
    credit(book, account, 50, posting_date=d3)
    clock.advance(dt.timedelta(hours=1))
    debit(book, account, 30, posting_date=d1)  # a backfill: dated before everything else
    at = book.balance_as_of
    assert at(T, account.id, START - DAY, None) == 0
    assert at(T, account.id, START, None) == 100
    assert at(T, account.id, middle, None) == 150
    assert at(T, account.id, clock.now, None) == 120
    assert at(T, account.id, None, d1 - dt.timedelta(days=1)) == 0
    assert at(T, account.id, None, d1) == -30
    assert at(T, account.id, None, d2) == 70
    assert at(T, account.id, None, d3) == 120
    assert at(T, account.id, None, d3 + DAY) == 120
    assert refusal(at, T, account.id, None, None).reason == "INVALID_REQUEST"
    assert refusal(at, T, "00000000-0000-4000-8000-000000000000", START, None).reason == "ACCOUNT_NOT_FOUND"
    clean(book, engine)


def test_captures_and_refunds_are_dated_as_asked_never_before_what_they_follow(
    book: Ledger, engine: Engine
) -> None:
    account = open_account(book)
    d1, d2, d3 = dt.date(2026, 5, 1), dt.date(2026, 5, 10), dt.date(2026, 5, 20)
    credit(book, account, 1000, posting_date=d1)
    held = hold(book, account, 300, posting_date=d2)
    early = refusal(book.capture_hold, T, held.id, amount=0, cmd=dated(d1))
    assert (early.reason, early.metadata["posting_date"], early.metadata["earliest"]) == (
        "POSTING_DATE_TOO_EARLY",
        "2026-05-01",
        "2026-05-10",
    )
    assert balances(book, account) == (1000, 300, 700)  # the refusal changed nothing
    captured = capture(book, held, posting_date=d3)
    assert captured.capture.posting_date == d3
    assert capture(book, hold(book, account, 1, posting_date=d2), posting_date=d2).capture.posting_date == d2
    assert refusal(book.refund, T, captured.capture.id, amount=0, cmd=dated(d2)).reason == (
        "POSTING_DATE_TOO_EARLY"
    )
    assert refund(book, captured.capture, 100, posting_date=d3).refund.posting_date == d3
    assert refund(book, captured.capture).refund.posting_date == START.date()  # today by default
    at = book.balance_as_of
    assert [at(T, account.id, None, d) for d in (d1, d2, d3, START.date())] == [1000, 999, 799, 999]
    clean(book, engine)


# -- idempotency ----------------------------------------------------------------------


def test_lifecycle_mutations_replay_by_request_id(book: Ledger) -> None:
    account, other = open_account(book), open_account(book)
    credit(book, account, 1000)

    def idem(request_id: str, fingerprint: bytes = b"a") -> Idempotency[Transaction]:
        return Idempotency(request_id, fingerprint, lambda t: t.id.encode())

    rid = "7c6b8c1e-8a8e-4a55-9a55-0a4d6d5b7e10"
    cmd = NewTransaction(account.id, None, 10, "USD", counterparty_id=other.id)
    first = book.transfer(T, cmd, idem(rid))
    again = book.transfer(T, cmd, idem(rid))
    assert isinstance(first, Transaction) and again == Replay(first.id.encode())
    assert refusal(book.transfer, T, cmd, idem(rid, b"other")).reason == "REQUEST_ID_REUSED"
    assert balances(book, account)[0] == 990


# -- VerifyLedger ---------------------------------------------------------------------


CORRUPTIONS = {
    "account_balance": "UPDATE accounts SET posted = posted + 1 WHERE id = :account",
    "entries_balance": "UPDATE entries SET amount = amount + 1 WHERE account_id = :account AND seq = "
    "(SELECT MIN(seq) FROM entries WHERE account_id = :account)",
    "running_balance": "UPDATE entries SET running_balance = running_balance + 5 WHERE account_id = :account "
    "AND seq = (SELECT MIN(seq) FROM entries WHERE account_id = :account)",
    "pending_holds": "UPDATE accounts SET pending = pending + 3 WHERE id = :account",
    "lot_remainders": "UPDATE lots SET remaining = remaining - 1 WHERE account_id = :account",
    "balance_floor": "UPDATE accounts SET balance_floor = 10000 WHERE id = :account",
}


@pytest.mark.parametrize("check", sorted(CORRUPTIONS))
def test_verify_ledger_finds_a_deliberately_corrupted_row(
    book: Ledger, store: SqlStore, engine: Engine, check: str
) -> None:
    account = open_account(book)
    credit(book, account, 100, expires=START + DAY)
    credit(book, account, 50)
    debit(book, account, 20)
    hold(book, account, 10)
    assert verify(store, T).violations == []
    with engine.begin() as conn:
        conn.execute(text(CORRUPTIONS[check]), {"account": account.id})
    report = verify(store, T)
    assert check in {v.check for v in report.violations}, report.violations
    assert any(account.id in v.resource or v.resource.startswith("transactions/") for v in report.violations)
    assert report.accounts_checked >= 2 and report.transactions_checked == 4


def test_one_account_that_cannot_expire_does_not_stop_the_others(
    book: Ledger, clock: Clock, engine: Engine
) -> None:
    broken, fine = open_account(book), open_account(book)
    credit(book, broken, 10, expires=START + DAY)
    credit(book, fine, 10, expires=START + DAY)
    with engine.begin() as conn:  # corrupt: writing off 10 more would overflow int64
        conn.execute(
            text("UPDATE accounts SET posted = -9223372036854775800 WHERE id = :id"), {"id": broken.id}
        )
    clock.advance(DAY)
    report = book.expire_due(limit=1)
    assert (report.accounts, report.lots_expired, report.failed) == (1, 1, 1)
    assert book.get_account(T, fine.id).posted == 0
    assert "account_balance" in {v.check for v in book.verify(T).violations}


def test_counter_shard_entries_stay_in_time_order_across_replicas(engine: Engine) -> None:
    """Two replicas whose clocks are a second apart (or one whose unit read the clock and
    then waited a second on a row lock -- what the bank test's faults provoke) post to the
    same counter-account shard. A shard's entries must stay in the same order by time
    and by seq, as a customer account's do, or VerifyLedger's running-balance chain (and
    every "as of" query ordered by time) sees a healthy ledger as broken."""
    store = SqlStore(engine, counter_shards=1)  # one shard: both postings use it
    try:
        ahead = Ledger(store, Clock(START + dt.timedelta(seconds=1)))
        behind = Ledger(store, Clock(START))
        first, second = open_account(ahead), open_account(behind)
        credit(ahead, first, 100)
        credit(behind, second, 50)
        assert verify(store, T).violations == []
    finally:
        store.close()


def test_a_retry_racing_its_first_attempt_replays_instead_of_refusing(
    engine: Engine, database_url: str
) -> None:
    """A client's first attempt waits on a row lock (its replica is slow or paused); the
    client times out and retries the same request_id on another replica, which checks
    the request_id (not seen yet) and queues on the same lock. Whichever goes second
    must replay the first's response -- not refuse the request because the first
    already changed the state (here: "hold is captured"). Found by the bank test."""
    replicas = [SqlStore(engine), SqlStore(engine)]  # two servers: two writers, two connections
    try:
        ledgers = [Ledger(store) for store in replicas]
        account = open_account(ledgers[0])
        credit(ledgers[0], account, 100)
        held = hold(ledgers[0], account, 60)
        request_id = "4f0e6f4e-3a51-4d8e-9d1e-6c2b7a8e9f01"
        results: list[object] = []

        def capture_via(ledger: Ledger) -> None:
            idem = Idempotency[Capture](request_id, b"capture", lambda c: c.capture.id.encode())
            try:
                results.append(
                    ledger.capture_hold(T, held.id, amount=0, cmd=NewTransaction("", None, 0, ""), idem=idem)
                )
            except LedgerError as err:
                results.append(err)

        with holding_account_lock(database_url, account.id):
            attempts = [threading.Thread(target=capture_via, args=(ledger,)) for ledger in ledgers]
            for attempt in attempts:
                attempt.start()
            wait_for_lock_waiters(database_url, 2)
        for attempt in attempts:
            attempt.join(30)
        assert not [r for r in results if isinstance(r, LedgerError)], results
        assert sorted(type(r).__name__ for r in results) == ["Capture", "Replay"]
        assert verify(replicas[0], T).violations == []
    finally:
        for store in replicas:
            store.close()


def wait_for_lock_waiters(database_url: str, count: int, timeout: float = 10) -> None:
    """Until `count` sessions wait on a lock (Postgres); SQLite's writers wait in BEGIN
    IMMEDIATE before reading anything, so a moment is enough there."""
    if database_url.startswith("sqlite"):
        time.sleep(0.5)
        return
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as pg:
        while time.monotonic() < deadline:
            row = pg.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if row is not None and row[0] >= count:
                return
            time.sleep(0.05)
    raise AssertionError(f"fewer than {count} sessions waited on the lock within {timeout}s")
