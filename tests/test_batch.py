"""BatchCreateTransactions: atomic and independent batches, item-level idempotency,
limits, and no deadlock between batches -- over the real server, SQLite and Postgres."""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from ledger.v1 import transaction_pb2, transaction_service_pb2, transaction_service_pb2_grpc
from ledger_client import (
    LedgerClient,
    LedgerError,
    capture_request,
    hold_request,
    refund_request,
    transaction_request,
)
from sqlalchemy import Engine, func, select

from ledger_server.core.ledger import Ledger
from ledger_server.store.schema import transactions
from ledger_server.store.sql_store import SqlStore
from tests.support import invariant_violations, serving, unit_calls


def posted_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(transactions)).scalar_one())


@pytest.fixture
def account(client: LedgerClient) -> str:
    name = client.create_account(currency="USD").name
    client.credit(name, 100, "USD")
    return name


def credit(account: str, amount: int, **kw: str) -> transaction_service_pb2.CreateTransactionRequest:
    return transaction_request(account=account, direction="credit", amount=amount, currency="USD", **kw)  # type: ignore[arg-type]


def debit(account: str, amount: int) -> transaction_service_pb2.CreateTransactionRequest:
    return transaction_request(account=account, direction="debit", amount=amount, currency="USD")


def test_atomic_batch_posts_every_item_in_order(client: LedgerClient, account: str, engine: Engine) -> None:
    results = client.batch_create_transactions([credit(account, 10), debit(account, 30), credit(account, 5)])
    assert [r.transaction.ending_balance for r in results] == [110, 80, 85]
    assert client.get_account(account).balance.posted == 85
    assert invariant_violations(engine) == []


def test_atomic_batch_with_a_refused_item_posts_nothing(
    client: LedgerClient, account: str, engine: Engine
) -> None:
    before = posted_count(engine)
    with pytest.raises(LedgerError) as info:
        client.batch_create_transactions([credit(account, 10), debit(account, 500), credit(account, 5)])
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.reason == "INSUFFICIENT_FUNDS"
    assert info.value.error_metadata["item_index"] == "1"
    assert info.value.error_metadata["available"] == "110"  # item 0 counted, then undone
    assert posted_count(engine) == before
    assert client.get_account(account).balance.posted == 100


def hold(account: str, amount: int) -> transaction_service_pb2.CreateTransactionRequest:
    return hold_request(account=account, amount=amount, currency="USD")


def test_batch_items_of_type_hold_place_holds_in_order_with_the_postings(
    client: LedgerClient, account: str, engine: Engine
) -> None:
    results = client.batch_create_transactions([hold(account, 60), debit(account, 30), credit(account, 5)])
    placed = results[0].transaction
    assert (placed.type, placed.status) == (
        transaction_pb2.TRANSACTION_TYPE_HOLD,
        transaction_pb2.TRANSACTION_STATUS_PENDING,
    )
    assert [r.transaction.ending_balance for r in results] == [100, 70, 75]
    balance = client.get_account(account).balance
    assert (balance.posted, balance.pending, balance.available) == (75, 60, 15)
    assert client.capture_hold(placed.name, amount=50).capture.ending_balance == 25
    assert invariant_violations(engine) == []


def test_a_hold_item_counts_against_the_items_after_it_and_is_undone_with_them(
    client: LedgerClient, account: str, engine: Engine
) -> None:
    before = posted_count(engine)
    with pytest.raises(LedgerError) as info:
        client.batch_create_transactions([hold(account, 80), debit(account, 30)])
    assert (info.value.reason, info.value.error_metadata["item_index"]) == ("INSUFFICIENT_FUNDS", "1")
    assert info.value.error_metadata["available"] == "20"  # the hold counted, then undone
    assert posted_count(engine) == before
    assert client.get_account(account).balance.pending == 0
    results = client.batch_create_transactions([hold(account, 80), hold(account, 30)], independent=True)
    assert results[0].transaction.status == transaction_pb2.TRANSACTION_STATUS_PENDING
    assert results[1].WhichOneof("result") == "error"
    assert client.get_account(account).balance.pending == 80


def test_transfers_are_not_batch_items_and_a_hold_is_a_debit(
    client: LedgerClient, account: str, token: str
) -> None:
    transfer = debit(account, 1)
    transfer.transaction.type = transaction_pb2.TRANSACTION_TYPE_TRANSFER
    credit_hold = hold(account, 1)
    credit_hold.transaction.direction = transaction_pb2.DIRECTION_CREDIT
    with pytest.raises(LedgerError) as info:
        client.batch_create_transactions([transfer, credit_hold])
    assert [(v.field, v.description.split(" ")[0]) for v in info.value.field_violations] == [
        ("requests[0].transaction.type", "TRANSACTION_TYPE_STANDARD"),
        ("requests[1].transaction.direction", "a"),
    ]
    lapsed = hold_request(
        account=account, amount=1, currency="USD", expire_time=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    )
    with pytest.raises(LedgerError) as info:
        client.batch_create_transactions([debit(account, 1), lapsed])
    assert [v.field for v in info.value.field_violations] == ["requests[1].transaction.expire_time"]
    # CreateTransaction takes the same type: a lone hold, idempotent by its request_id.
    lone = hold(account, 40)
    first = client.batch_create_transactions([lone])[0].transaction
    stub = transaction_service_pb2_grpc.TransactionServiceStub(client.channel)
    auth = (("authorization", f"Bearer {token}"),)
    again = stub.CreateTransaction(lone, metadata=auth, timeout=10).transaction
    assert again == first and client.get_account(account).balance.pending == 40


def test_atomic_batch_names_every_invalid_item(client: LedgerClient, account: str) -> None:
    bad = credit(account, 1)
    bad.transaction.amount = -1
    worse = credit(account, 1)
    worse.transaction.currency = "$"
    with pytest.raises(LedgerError) as info:
        client.batch_create_transactions([credit(account, 1), bad, worse])
    assert info.value.reason == "INVALID_REQUEST"
    assert {v.field for v in info.value.field_violations} == {
        "requests[1].transaction.amount",
        "requests[2].transaction.currency",
    }


def test_an_atomic_batch_with_thousands_of_violations_lists_what_the_trailers_hold(
    client: LedgerClient, account: str
) -> None:
    """1,500 violations (30 items, 50 over-long metadata values each) would make trailers
    far above the 8 KiB gRPC clients accept: the client would get RESOURCE_EXHAUSTED from
    its own transport instead of the refusal. The first violations come, with the count
    of the rest."""
    items = [credit(account, 1) for _ in range(30)]
    for item in items:
        item.transaction.metadata.update({f"key_{k}": "v" * 501 for k in range(50)})
    with pytest.raises(LedgerError) as info:
        client.batch_create_transactions(items)
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    listed = [v.field for v in info.value.field_violations]
    assert listed and listed[0].startswith("requests[0].transaction.metadata[")
    assert int(info.value.error_metadata["omitted_violations"]) == 1500 - len(listed)
    assert info.value.message.startswith(f"{1500 - len(listed)} more field violations not listed; ")


def test_independent_batch_answers_each_item(client: LedgerClient, account: str) -> None:
    results = client.batch_create_transactions(
        [credit(account, 10), debit(account, 500), debit(account, 60)], independent=True
    )
    assert results[0].transaction.ending_balance == 110
    status = results[1].error
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "requests[1]" in status.message
    assert results[2].transaction.ending_balance == 50
    assert client.get_account(account).balance.posted == 50
    info = error_details_pb2.ErrorInfo()
    assert any(detail.Unpack(info) for detail in status.details)
    assert (info.reason, info.metadata["item_index"]) == ("INSUFFICIENT_FUNDS", "1")


def test_a_retried_batch_replays_item_by_item(client: LedgerClient, account: str, engine: Engine) -> None:
    items = [credit(account, 10), credit(account, 20)]
    first = client.batch_create_transactions(items)
    before = posted_count(engine)
    again = client.batch_create_transactions(items)
    assert [r.SerializeToString() for r in again] == [r.SerializeToString() for r in first]
    assert posted_count(engine) == before
    # An item is the same request as a lone CreateTransaction with its request_id.
    lone = client.create_transaction(
        account=account, direction="credit", amount=10, currency="USD", request_id=items[0].request_id
    )
    assert lone == first[0].transaction


@pytest.mark.parametrize("size", [0, 1001])
def test_batch_size_is_bounded(client: LedgerClient, account: str, size: int) -> None:
    with pytest.raises(LedgerError) as info:
        client.batch_create_transactions([credit(account, 1) for _ in range(size)])
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in info.value.field_violations] == ["requests"]


def test_a_thousand_items_in_one_call(client: LedgerClient, account: str, engine: Engine) -> None:
    results = client.batch_create_transactions([credit(account, 1) for _ in range(1000)], independent=True)
    assert [r.transaction.ending_balance for r in results] == list(range(101, 1101))
    assert invariant_violations(engine) == []


def test_opposite_batches_at_once_do_not_deadlock(client: LedgerClient, engine: Engine) -> None:
    a, b = (client.create_account(currency="USD").name for _ in range(2))
    errors: list[BaseException] = []

    def run(first: str, second: str) -> Callable[[], None]:
        def go() -> None:
            try:
                for _ in range(10):
                    client.batch_create_transactions([credit(first, 1), credit(second, 1)])
            except BaseException as exc:  # collected for the assertion below
                errors.append(exc)

        return go

    threads = [threading.Thread(target=run(a, b)), threading.Thread(target=run(b, a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert client.get_account(a).balance.posted == client.get_account(b).balance.posted == 20
    assert invariant_violations(engine) == []


def test_concurrent_atomic_batches_over_shared_accounts(client: LedgerClient, engine: Engine) -> None:
    """Many atomic batches at once, each over the same accounts in its own random order:
    all succeed (lock waits and deadlocks are resolved inside the ledger, never INTERNAL)."""
    accounts = [client.create_account(currency="USD").name for _ in range(200)]
    errors: list[BaseException] = []

    def run(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(3):
                order = rng.sample(accounts, len(accounts))
                client.batch_create_transactions([credit(a, 1) for a in order])
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert {client.get_account(a).balance.posted for a in accounts} == {24}
    assert invariant_violations(engine) == []


@pytest.fixture
def small_replies(ledger: Ledger, store: SqlStore, token: str) -> Iterator[LedgerClient]:
    """A client of a server whose messages are limited to 20,000 bytes: ~100 results."""
    with (
        serving(ledger, store, max_message_bytes=20_000) as srv,
        LedgerClient(f"127.0.0.1:{srv.port}", token=token, timeout=20.0) as c,
    ):
        yield c


def test_an_import_whose_results_outgrow_the_reply_says_how_far_it_got(
    small_replies: LedgerClient, engine: Engine
) -> None:
    """Without the check, the client got a bare RESOURCE_EXHAUSTED (the server could not
    send its reply) and no word of the items already committed."""
    client = small_replies
    account = client.create_account(currency="USD").name
    items = [credit(account, 1) for _ in range(300)]
    chunks = [
        transaction_service_pb2.ImportTransactionsRequest(requests=items[i : i + 50])
        for i in range(0, 300, 50)
    ]
    with pytest.raises(LedgerError) as info:
        client._call_stream(client._transactions.ImportTransactions, chunks, timeout=20)
    err = info.value
    assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "IMPORT_TOO_LARGE")
    in_reply, committed = (
        int(err.error_metadata["items_in_reply"]),
        int(err.error_metadata["processed_items"]),
    )
    assert 0 < in_reply < committed < 300 and committed % 50 == 0
    assert err.error_metadata["chunk_index"] == str(committed // 50 - 1)
    assert client.get_account(account).balance.posted == committed
    # The client library splits an import into calls whose replies fit: the committed
    # items replay, the rest are posted, every result comes back in order.
    imported = client.import_transactions(items, chunk_size=50, reply_bytes=12_000)
    assert (imported.posted_count, imported.replayed_count, imported.failed_count) == (
        300 - committed,
        committed,
        0,
    )
    assert [r.transaction.ending_balance for r in imported.results] == list(range(1, 301))
    assert invariant_violations(engine) == []


@pytest.mark.parametrize(("count", "independent"), [(100, False), (10, True)])
def test_a_batch_whose_reply_could_outgrow_the_message_limit_is_refused_first(
    small_replies: LedgerClient, engine: Engine, count: int, independent: bool
) -> None:
    """100 results take ~20 KB, above this server's 20,000-byte limit: posted, they would
    reach the client as a bare RESOURCE_EXHAUSTED. Independent items may each answer an
    error of up to ~3.6 KB, so 10 of them could already pass it."""
    account = small_replies.create_account(currency="USD").name
    before = posted_count(engine)
    with pytest.raises(LedgerError) as info:
        small_replies.batch_create_transactions(
            [credit(account, 1) for _ in range(count)], independent=independent
        )
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    [violation] = info.value.field_violations
    assert violation.field == "requests" and "message limit" in violation.description
    assert posted_count(engine) == before
    fits = small_replies.batch_create_transactions(
        [credit(account, 1) for _ in range(5)], independent=independent
    )
    assert len(fits) == 5


def test_batch_items_capture_holds_and_refund_transactions(
    client: LedgerClient, account: str, engine: Engine
) -> None:
    """Settling many holds and payments at once (seed 003's array of paid and refunded
    items): captures and refunds are batch items, given by what they settle."""
    first = client.create_hold(account, 60, "USD", metadata={"gateway_id": "g-1"}, description="checkout")
    second = client.create_hold(account, 20, "USD")
    spent = client.debit(account, 10, "USD")
    items = [
        capture_request(first.name, amount=50),
        capture_request(second.name),  # all of it
        refund_request(spent.name, amount=4, metadata={"reason": "late"}),
        credit(account, 5),
    ]
    results = [r.transaction for r in client.batch_create_transactions(items)]
    assert [(t.type, t.direction, t.amount, t.related_transaction, t.ending_balance) for t in results] == [
        (transaction_pb2.TRANSACTION_TYPE_CAPTURE, transaction_pb2.DIRECTION_DEBIT, 50, first.name, 40),
        (transaction_pb2.TRANSACTION_TYPE_CAPTURE, transaction_pb2.DIRECTION_DEBIT, 20, second.name, 20),
        (transaction_pb2.TRANSACTION_TYPE_REFUND, transaction_pb2.DIRECTION_CREDIT, 4, spent.name, 24),
        (transaction_pb2.TRANSACTION_TYPE_STANDARD, transaction_pb2.DIRECTION_CREDIT, 5, "", 29),
    ]
    assert {(t.account, t.currency) for t in results} == {(account, "USD")}
    assert dict(results[0].metadata) == {"gateway_id": "g-1"} and results[0].description == "checkout"
    assert dict(results[2].metadata) == {"reason": "late"}
    balance = client.get_account(account).balance
    assert (balance.posted, balance.pending, balance.available) == (29, 0, 29)
    settled = [client.get_transaction(t.name) for t in (first, second, spent)]
    assert [(t.status, t.captured_amount, t.refunded_amount) for t in settled] == [
        (transaction_pb2.TRANSACTION_STATUS_CAPTURED, 50, 0),
        (transaction_pb2.TRANSACTION_STATUS_CAPTURED, 20, 0),
        (transaction_pb2.TRANSACTION_STATUS_PARTIALLY_REFUNDED, 0, 4),
    ]
    assert invariant_violations(engine) == []
    before = posted_count(engine)
    again = client.batch_create_transactions(items, independent=True)  # each item replays
    assert [r.transaction for r in again] == results and posted_count(engine) == before


@pytest.mark.parametrize(
    ("settle", "refused"),
    [
        ("capture twice", ("HOLD_NOT_PENDING", 1)),
        ("refund past the amount", ("AMOUNT_EXCEEDS_REFUNDABLE", 1)),
        ("capture a debit", ("NOT_A_HOLD", 0)),
        ("refund a hold", ("NOT_REFUNDABLE", 0)),
    ],
)
def test_an_atomic_batch_with_a_refused_settlement_changes_nothing(
    client: LedgerClient, account: str, engine: Engine, settle: str, refused: tuple[str, int]
) -> None:
    reason, index = refused
    held = client.create_hold(account, 30, "USD")
    spent = client.debit(account, 10, "USD")
    items = {
        "capture twice": [capture_request(held.name, amount=10), capture_request(held.name, amount=10)],
        "refund past the amount": [
            refund_request(spent.name, amount=6),
            refund_request(spent.name, amount=6),
        ],
        "capture a debit": [capture_request(spent.name)],
        "refund a hold": [refund_request(held.name)],
    }[settle]
    before = posted_count(engine)
    with pytest.raises(LedgerError) as info:
        client.batch_create_transactions([credit(account, 1), *items])
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, reason)
    assert info.value.error_metadata["item_index"] == str(index + 1)
    assert posted_count(engine) == before
    assert client.get_transaction(held.name).status == transaction_pb2.TRANSACTION_STATUS_PENDING
    assert client.get_transaction(spent.name).refunded_amount == 0
    balance = client.get_account(account).balance
    assert (balance.posted, balance.pending) == (90, 30)


def test_settlement_items_must_agree_with_what_they_settle(client: LedgerClient, account: str) -> None:
    other = client.create_account(currency="USD").name
    held = client.create_hold(account, 30, "USD")
    spent = client.debit(account, 10, "USD")
    mine = capture_request(held.name)
    mine.transaction.account, mine.transaction.currency = account, "usd"  # may be given, if right
    wrong_account = capture_request(held.name)
    wrong_account.transaction.account = other
    wrong_currency = refund_request(spent.name)
    wrong_currency.transaction.currency = "EUR"
    wrong_direction = refund_request(spent.name)
    wrong_direction.transaction.direction = transaction_pb2.DIRECTION_DEBIT  # a debit's refund credits
    with pytest.raises(LedgerError) as info:
        client.batch_create_transactions([mine, wrong_account, wrong_currency, wrong_direction])
    assert (info.value.code, info.value.error_metadata["item_index"]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "1",
    )
    assert [v.field for v in info.value.field_violations] == [
        "requests[1].transaction.account",
        "requests[2].transaction.currency",
        "requests[3].transaction.direction",
    ]
    assert held.name.split("/")[1] in info.value.field_violations[0].description

    with_metadata = capture_request(held.name)
    with_metadata.transaction.metadata["gateway_id"] = "g"  # a capture carries its hold's
    with_kind = refund_request(spent.name)
    with_kind.transaction.kind = transaction_pb2.TRANSACTION_KIND_PROMOTION
    unnamed = capture_request(held.name)
    unnamed.transaction.related_transaction = ""
    negative = refund_request(spent.name)
    negative.transaction.amount = -1
    with pytest.raises(LedgerError) as info:
        client.batch_create_transactions([with_metadata, with_kind, unnamed, negative])
    assert [v.field for v in info.value.field_violations] == [
        "requests[0].transaction.metadata",
        "requests[1].transaction.kind",
        "requests[2].transaction.related_transaction",
        "requests[3].transaction.amount",
    ]

    missing = capture_request("transactions/0190a0f0-0000-7000-8000-000000000000")
    results = client.batch_create_transactions(
        [missing, wrong_currency, wrong_direction, mine], independent=True
    )
    errors = [(r.error.code, r.error.message.split(":")[0]) for r in results[:3]]
    assert errors == [
        (grpc.StatusCode.NOT_FOUND.value[0], "requests[0]"),
        (grpc.StatusCode.INVALID_ARGUMENT.value[0], "requests[1]"),
        (grpc.StatusCode.INVALID_ARGUMENT.value[0], "requests[2]"),
    ]
    assert results[3].transaction.amount == 30
    assert client.get_transaction(held.name).status == transaction_pb2.TRANSACTION_STATUS_CAPTURED


def test_create_transaction_captures_and_refunds_too(client: LedgerClient, account: str, token: str) -> None:
    """An item is the same request as a lone CreateTransaction with its request_id."""
    held = client.create_hold(account, 30, "USD")
    stub = transaction_service_pb2_grpc.TransactionServiceStub(client.channel)
    auth = (("authorization", f"Bearer {token}"),)
    capture = capture_request(held.name, amount=25)
    captured = stub.CreateTransaction(capture, metadata=auth, timeout=10).transaction
    assert (captured.type, captured.amount, captured.ending_balance) == (
        transaction_pb2.TRANSACTION_TYPE_CAPTURE,
        25,
        75,
    )
    assert client.batch_create_transactions([capture])[0].transaction == captured  # replayed
    refund = refund_request(captured.name)
    refunded = stub.CreateTransaction(refund, metadata=auth, timeout=10).transaction
    assert (refunded.type, refunded.amount, refunded.ending_balance) == (
        transaction_pb2.TRANSACTION_TYPE_REFUND,
        25,
        100,
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.CreateTransaction(
            capture_request("transactions/0190a0f0-0000-7000-8000-000000000000"), metadata=auth, timeout=10
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_batch_of_captures_counts_what_their_holds_lend_them_against_the_reply_limit(
    small_replies: LedgerClient, engine: Engine
) -> None:
    """A capture carries its hold's metadata and description, which its item does not:
    without counting them, two captures of holds with ~11 KB of metadata each posted and
    then could not be answered under this server's 20,000-byte limit."""
    client = small_replies
    account = client.create_account(currency="USD").name
    client.credit(account, 100, "USD")
    metadata = {f"key-{i}": "v" * 320 for i in range(32)}
    holds = [client.create_hold(account, 10, "USD", metadata=metadata).name for _ in range(2)]
    before = posted_count(engine)
    with pytest.raises(LedgerError) as info:
        client.batch_create_transactions([capture_request(h) for h in holds])
    assert [v.field for v in info.value.field_violations] == ["requests"]
    assert posted_count(engine) == before
    [one] = client.batch_create_transactions([capture_request(holds[0])])
    assert len(one.transaction.metadata) == 32


def test_concurrent_batches_capture_and_refund_each_once(client: LedgerClient, engine: Engine) -> None:
    """Batches racing to settle the same holds and payments, each in its own order and
    with its own request ids: every hold is captured once and every payment refunded once
    (a second refund of 15 would pass its 20), whichever batch gets there first; the other
    batches' items are refused, never applied twice."""
    accounts = [client.create_account(currency="USD").name for _ in range(4)]
    for a in accounts:
        client.credit(a, 1000, "USD")
    holds = [client.create_hold(accounts[i % 4], 10, "USD").name for i in range(12)]
    payments = [client.debit(accounts[i % 4], 20, "USD").name for i in range(8)]
    results: list[transaction_service_pb2.BatchItemResult] = []

    def run(seed: int) -> None:
        items = [capture_request(h) for h in holds] + [refund_request(p, amount=15) for p in payments]
        results.extend(
            client.batch_create_transactions(random.Random(seed).sample(items, 20), independent=True)
        )

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 6 * 20
    settled = [r.transaction.related_transaction for r in results if r.HasField("transaction")]
    assert sorted(settled) == sorted(holds + payments)
    refused = [r.error for r in results if r.HasField("error")]
    assert {e.code for e in refused} == {grpc.StatusCode.FAILED_PRECONDITION.value[0]}
    assert [client.get_account(a).balance.posted for a in accounts] == [1000 - 30 - 40 + 30] * 4
    assert invariant_violations(engine) == []


def test_a_batch_reads_what_its_settlements_name_once(
    client: LedgerClient, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read for the reply's bound, the holds and payments are not read again to complete
    the items: one lookup each, then one each inside the write unit."""
    holds = [client.create_hold(account, 10, "USD").name for _ in range(3)]
    payment = client.debit(account, 5, "USD").name
    lookups = unit_calls(monkeypatch, "get_transaction")
    client.batch_create_transactions([*map(capture_request, holds), refund_request(payment)])
    assert len(lookups) == 2 * 4
