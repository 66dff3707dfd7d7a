"""The lifecycle RPCs over a real socket with the generated stubs (what grpcurl and every
client language see), on SQLite and Postgres: translation both ways, replays, errors
with details, the client-streaming import, balances as of, VerifyLedger, and the
`expire` and `verify` commands."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from google.type import date_pb2
from grpc_status import rpc_status
from ledger.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    admin_service_pb2,
    admin_service_pb2_grpc,
    transaction_pb2,
    transaction_service_pb2_grpc,
)
from ledger.v1 import transaction_service_pb2 as pb
from ledger_client import LedgerClient, LedgerError
from sqlalchemy import Engine, text

from ledger_server.core.admin import Admin
from ledger_server.core.ledger import Ledger
from ledger_server.store.sql_store import SqlStore
from tests.support import serving

USD = "USD"


class Api:
    """The three services' stubs, authenticated as tenant acme's admin token."""

    def __init__(self, channel: grpc.Channel, token: str) -> None:
        self.auth = (("authorization", f"Bearer {token}"),)
        self.tx = transaction_service_pb2_grpc.TransactionServiceStub(channel)
        self.accounts = account_service_pb2_grpc.AccountServiceStub(channel)
        self.admin = admin_service_pb2_grpc.AdminServiceStub(channel)

    def __call__(self, rpc: Any, request: Any) -> Any:
        return rpc(request, metadata=self.auth, timeout=10)


@pytest.fixture
def api(client: LedgerClient, token: str) -> Api:
    return Api(client.channel, token)


def rid() -> str:
    return str(uuid.uuid4())


def funded(client: LedgerClient, amount: int) -> str:
    account = client.create_account(currency=USD).name
    client.credit(account, amount, USD)
    return account


def refusal(api: Api, rpc: Any, request: Any) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as info:
        api(rpc, request)
    status = rpc_status.from_call(info.value)
    assert status is not None
    for detail in status.details:
        error = error_details_pb2.ErrorInfo()
        if detail.Unpack(error):
            return info.value.code(), error.reason, dict(error.metadata)
    raise AssertionError("no ErrorInfo")


def test_hold_capture_and_void_over_grpc(api: Api, client: LedgerClient) -> None:
    account = funded(client, 1000)
    expires = Timestamp()
    expires.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    request = pb.CreateHoldRequest(
        hold=transaction_pb2.Transaction(
            account=account, amount=300, currency="usd", description="checkout 42", expire_time=expires
        ),
        request_id=rid(),
    )
    hold = api(api.tx.CreateHold, request).hold
    assert api(api.tx.CreateHold, request).hold == hold  # replayed, not a second hold
    assert hold.type == transaction_pb2.TRANSACTION_TYPE_HOLD
    assert hold.status == transaction_pb2.TRANSACTION_STATUS_PENDING
    assert hold.expire_time == expires
    balance = client.get_account(account).balance
    assert (balance.posted, balance.pending, balance.available) == (1000, 300, 700)
    captured = api(api.tx.CaptureHold, pb.CaptureHoldRequest(name=hold.name, amount=120, request_id=rid()))
    assert captured.hold.status == transaction_pb2.TRANSACTION_STATUS_CAPTURED
    assert captured.hold.captured_amount == 120
    assert captured.capture.related_transaction == hold.name
    assert captured.capture.description == "checkout 42"
    assert captured.capture.ending_balance == 880
    code, reason, meta = refusal(api, api.tx.VoidHold, pb.VoidHoldRequest(name=hold.name, request_id=rid()))
    assert (code, reason, meta["status"]) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "HOLD_NOT_PENDING",
        "captured",
    )
    other = api(
        api.tx.CreateHold,
        pb.CreateHoldRequest(hold=transaction_pb2.Transaction(account=account, amount=5, currency=USD)),
    ).hold
    voided = api(api.tx.VoidHold, pb.VoidHoldRequest(name=other.name)).hold
    assert voided.status == transaction_pb2.TRANSACTION_STATUS_VOIDED
    assert client.get_account(account).balance.available == 880


def test_hold_and_capture_refusals_name_their_fields(api: Api, client: LedgerClient) -> None:
    account = funded(client, 10)
    credit_hold = pb.CreateHoldRequest(
        hold=transaction_pb2.Transaction(
            account=account, amount=1, currency=USD, direction=transaction_pb2.DIRECTION_CREDIT
        )
    )
    assert refusal(api, api.tx.CreateHold, credit_hold)[:2] == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    capture = pb.CaptureHoldRequest(name="transactions/nope", amount=-1)
    assert refusal(api, api.tx.CaptureHold, capture)[:2] == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    missing = pb.CaptureHoldRequest(name=f"transactions/{uuid.uuid4()}")
    assert refusal(api, api.tx.CaptureHold, missing)[:2] == (
        grpc.StatusCode.NOT_FOUND,
        "TRANSACTION_NOT_FOUND",
    )
    past = Timestamp(seconds=1)
    expired = pb.CreateHoldRequest(
        hold=transaction_pb2.Transaction(account=account, amount=1, currency=USD, expire_time=past)
    )
    assert refusal(api, api.tx.CreateHold, expired)[1] == "INVALID_REQUEST"
    assert client.get_account(account).balance.pending == 0


def test_a_capture_takes_an_external_id_of_its_own(api: Api, client: LedgerClient) -> None:
    account = funded(client, 1000)
    first, second = client.create_hold(account, 300, USD), client.create_hold(account, 200, USD)
    captured = client.capture_hold(first.name, amount=100, external_id="ch_3Nx")
    assert (captured.capture.external_id, captured.hold.external_id) == ("ch_3Nx", "")
    assert client.get_transaction(captured.capture.name).external_id == "ch_3Nx"
    # Unique per tenant, as any transaction's: a second capture may not reuse it.
    again = pb.CaptureHoldRequest(name=second.name, external_id="ch_3Nx", request_id=rid())
    code, reason, metadata = refusal(api, api.tx.CaptureHold, again)
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "DUPLICATE_EXTERNAL_ID")
    assert metadata["existing_transaction"] == captured.capture.name
    too_long = pb.CaptureHoldRequest(name=second.name, external_id="x" * 129)
    assert refusal(api, api.tx.CaptureHold, too_long)[1] == "INVALID_REQUEST"
    assert client.get_transaction(second.name).status == transaction_pb2.TRANSACTION_STATUS_PENDING


def test_captures_and_refunds_take_a_posting_date_over_grpc(api: Api, client: LedgerClient) -> None:
    account = client.create_account(currency=USD).name
    client.credit(account, 1000, USD, posting_date=dt.date(2026, 3, 1))
    held = client.create_hold(account, 300, USD, posting_date=dt.date(2026, 3, 2))
    bad = pb.CaptureHoldRequest(name=held.name, posting_date=date_pb2.Date(year=2026, month=2, day=30))
    with pytest.raises(grpc.RpcError) as info:
        api(api.tx.CaptureHold, bad)
    status = rpc_status.from_call(info.value)
    assert status is not None
    request = error_details_pb2.BadRequest()
    assert any(d.Unpack(request) for d in status.details)
    assert [v.field for v in request.field_violations] == ["posting_date"]
    early = pb.CaptureHoldRequest(name=held.name, posting_date=date_pb2.Date(year=2026, month=3, day=1))
    assert refusal(api, api.tx.CaptureHold, early) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "POSTING_DATE_TOO_EARLY",
        {"transaction": held.name, "posting_date": "2026-03-01", "earliest": "2026-03-02"},
    )
    captured = client.capture_hold(held.name, posting_date=dt.date(2026, 3, 5)).capture
    assert (captured.posting_date.month, captured.posting_date.day) == (3, 5)
    refunded = client.refund(captured.name, amount=50, posting_date=dt.date(2026, 3, 9)).refund
    assert (refunded.posting_date.month, refunded.posting_date.day) == (3, 9)
    as_of = [client.get_balance_as_of(account, posting_date=dt.date(2026, 3, d)) for d in (4, 5, 9)]
    assert as_of == [1000, 700, 750]


def test_refund_over_grpc_links_and_replays(api: Api, client: LedgerClient) -> None:
    account = funded(client, 1000)
    spent = client.debit(account, 400, USD)
    request = pb.RefundTransactionRequest(
        name=spent.name, amount=100, description="returned item", metadata={"rma": "7"}, request_id=rid()
    )
    first = api(api.tx.RefundTransaction, request)
    assert api(api.tx.RefundTransaction, request) == first
    assert first.refund.type == transaction_pb2.TRANSACTION_TYPE_REFUND
    assert first.refund.related_transaction == spent.name
    assert (first.refund.direction, first.refund.amount) == (transaction_pb2.DIRECTION_CREDIT, 100)
    assert dict(first.refund.metadata) == {"rma": "7"}
    assert first.original.status == transaction_pb2.TRANSACTION_STATUS_PARTIALLY_REFUNDED
    assert first.original.refunded_amount == 100
    too_much = pb.RefundTransactionRequest(name=spent.name, amount=301)
    code, reason, meta = refusal(api, api.tx.RefundTransaction, too_much)
    assert (code, reason, meta["refundable"]) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "AMOUNT_EXCEEDS_REFUNDABLE",
        "300",
    )
    rest = api(api.tx.RefundTransaction, pb.RefundTransactionRequest(name=spent.name))
    assert rest.original.status == transaction_pb2.TRANSACTION_STATUS_REFUNDED
    assert client.get_account(account).balance.posted == 1000


def test_transfer_over_grpc(api: Api, client: LedgerClient) -> None:
    company, member = funded(client, 500), client.create_account(currency=USD).name
    request = pb.CreateTransferRequest(
        transfer=transaction_pb2.Transaction(
            account=company,
            counterparty_account=member,
            amount=200,
            currency=USD,
            description="monthly allowance",
        ),
        request_id=rid(),
    )
    moved = api(api.tx.CreateTransfer, request).transfer
    assert api(api.tx.CreateTransfer, request).transfer == moved
    assert moved.type == transaction_pb2.TRANSACTION_TYPE_TRANSFER
    assert (moved.account, moved.counterparty_account) == (company, member)
    assert (moved.ending_balance, moved.counterparty_ending_balance) == (300, 200)
    assert [t.name for t in client.iter_transactions(account=member)] == [moved.name]
    self_transfer = pb.CreateTransferRequest(
        transfer=transaction_pb2.Transaction(
            account=company, counterparty_account=company, amount=1, currency=USD
        )
    )
    assert refusal(api, api.tx.CreateTransfer, self_transfer)[1] == "INVALID_REQUEST"


def chunks(items: list[pb.CreateTransactionRequest], size: int) -> Iterator[pb.ImportTransactionsRequest]:
    for i in range(0, len(items), size):
        yield pb.ImportTransactionsRequest(requests=items[i : i + size])


def test_import_commits_in_chunks_and_resumes_by_request_id(api: Api, client: LedgerClient) -> None:
    account = client.create_account(currency=USD).name
    items = [
        pb.CreateTransactionRequest(
            transaction=transaction_pb2.Transaction(
                account=account,
                direction=transaction_pb2.DIRECTION_CREDIT,
                amount=i + 1,
                currency=USD,
                posting_date=date_pb2.Date(year=2020, month=1, day=1 + i % 28),
            ),
            request_id=rid(),
        )
        for i in range(25)
    ]
    items[7].transaction.currency = "EUR"  # refused on its own; the rest go in
    items[9].request_id = ""  # an import item needs a request_id
    first = api(api.tx.ImportTransactions, chunks(items[:15], 4))
    assert (first.posted_count, first.replayed_count, first.failed_count) == (13, 0, 2)
    assert first.results[7].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert first.results[9].HasField("error")
    # The whole import again, as after a broken stream: the first 15 replay.
    again = api(api.tx.ImportTransactions, chunks(items, 10))
    assert (again.posted_count, again.replayed_count, again.failed_count) == (10, 13, 2)
    assert again.results[3].transaction == first.results[3].transaction
    total = sum(i + 1 for i in range(25)) - 8 - 10
    assert client.get_account(account).balance.posted == total
    empty = refusal(api, api.tx.ImportTransactions, iter([pb.ImportTransactionsRequest()]))
    assert (empty[1], empty[2]["chunk_index"]) == ("INVALID_REQUEST", "0")


def test_balance_as_of_over_grpc(api: Api, client: LedgerClient) -> None:
    account = client.create_account(currency=USD).name
    client.credit(account, 100, USD, posting_date=dt.date(2024, 3, 1))
    client.debit(account, 30, USD, posting_date=dt.date(2024, 2, 1))  # backdated
    by_date = account_service_pb2.GetAccountBalanceRequest(
        name=account, as_of_posting_date=date_pb2.Date(year=2024, month=2, day=15)
    )
    assert api(api.accounts.GetAccountBalance, by_date).posted == -30
    now = Timestamp()
    now.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    by_time = account_service_pb2.GetAccountBalanceRequest(name=account, as_of_time=now)
    assert api(api.accounts.GetAccountBalance, by_time).posted == 70
    neither = account_service_pb2.GetAccountBalanceRequest(name=account)
    assert refusal(api, api.accounts.GetAccountBalance, neither)[1] == "INVALID_REQUEST"


def test_expiring_credit_shows_in_the_account_balance(api: Api, client: LedgerClient) -> None:
    account = client.create_account(currency=USD).name
    client.credit(account, 100, USD)
    expires = Timestamp()
    expires.FromDatetime(dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
    request = pb.CreateTransactionRequest(
        transaction=transaction_pb2.Transaction(
            account=account,
            direction=transaction_pb2.DIRECTION_CREDIT,
            amount=40,
            currency=USD,
            expire_time=expires,
        )
    )
    assert api(api.tx.CreateTransaction, request).transaction.expire_time == expires
    balance = client.get_account(account).balance
    assert (balance.posted, balance.expiring, balance.permanent) == (140, 40, 100)
    assert [(e.amount, e.expire_time) for e in balance.next_expirations] == [(40, expires)]


def test_verify_ledger_lists_the_violations_that_fit_in_its_reply(
    ledger: Ledger, store: SqlStore, client: LedgerClient, token: str, engine: Engine
) -> None:
    """40 accounts with broken balances, a reply limited to 2,000 bytes: it lists what fits and counts
    the rest (a reply above the limit would not be sent at all)."""
    broken = [funded(client, 10).split("/")[1] for _ in range(40)]
    with engine.begin() as conn:
        for account_id in broken:
            conn.execute(text("UPDATE accounts SET posted = posted + 1 WHERE id = :id"), {"id": account_id})
    with (
        serving(ledger, store, max_message_bytes=2_000) as small,
        grpc.insecure_channel(f"127.0.0.1:{small.port}") as channel,
    ):
        limited = Api(channel, token)
        report = limited(limited.admin.VerifyLedger, admin_service_pb2.VerifyLedgerRequest())
    api = Api(client.channel, token)
    full = api(api.admin.VerifyLedger, admin_service_pb2.VerifyLedgerRequest())
    assert full.violations_omitted == 0 and {v.resource for v in full.violations} == {
        f"accounts/{a}" for a in broken
    }
    listed = len(report.violations)
    assert 0 < listed < len(full.violations)
    assert listed + report.violations_omitted == len(full.violations)
    assert list(report.violations) == list(full.violations)[:listed]


def test_verify_ledger_needs_admin_and_reports_clean(
    api: Api, client: LedgerClient, admin: Admin, engine: Engine, database_url: str
) -> None:
    account = funded(client, 10)
    report = api(api.admin.VerifyLedger, admin_service_pb2.VerifyLedgerRequest())
    assert list(report.violations) == []
    assert report.transactions_checked == 1 and report.accounts_checked >= 2
    _, writer = admin.create_token("acme", "writer", ["transactions:write", "accounts:read"])
    limited = Api(client.channel, writer)
    assert (
        refusal(limited, limited.admin.VerifyLedger, admin_service_pb2.VerifyLedgerRequest())[1]
        == "MISSING_SCOPE"
    )
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE accounts SET posted = posted + 1 WHERE id = :id"), {"id": account.split("/")[1]}
        )
    broken = api(api.admin.VerifyLedger, admin_service_pb2.VerifyLedgerRequest())
    assert {(v.check, v.resource) for v in broken.violations} == {("account_balance", account)}
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "ledger_server.cli",
            "verify",
            "--tenant",
            "acme",
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 1, cli.stderr
    assert f"account_balance: {account}" in cli.stdout


def test_expire_command_writes_off_expired_credit(api: Api, client: LedgerClient, database_url: str) -> None:
    account = client.create_account(currency=USD).name
    client.credit(account, 10, USD)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    expires = Timestamp()
    expires.FromDatetime(soon)
    request = pb.CreateTransactionRequest(
        transaction=transaction_pb2.Transaction(
            account=account,
            direction=transaction_pb2.DIRECTION_CREDIT,
            amount=5,
            currency=USD,
            expire_time=expires,
        )
    )
    api(api.tx.CreateTransaction, request)
    time.sleep(max(0.0, (soon - dt.datetime.now(dt.UTC)).total_seconds()) + 0.05)  # until the lot expires
    run = subprocess.run(
        [sys.executable, "-m", "ledger_server.cli", "expire", "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "lots expired: 1" in run.stdout
    history = list(client.iter_transactions(account=account))
    assert history[0].type == transaction_pb2.TRANSACTION_TYPE_EXPIRY
    assert client.get_account(account).balance.posted == 10
    verify = subprocess.run(
        [sys.executable, "-m", "ledger_server.cli", "verify", "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout


def test_a_capture_and_a_refund_are_created_by_their_own_callers(
    api: Api, client: LedgerClient, admin: Admin
) -> None:
    account = funded(client, 100)
    hold = api(
        api.tx.CreateHold,
        pb.CreateHoldRequest(hold=transaction_pb2.Transaction(account=account, amount=40, currency=USD)),
    ).hold
    _, secret = admin.create_token("acme", "settlement-job", ["transactions:write"])
    settlement = Api(client.channel, secret)
    capture = settlement(settlement.tx.CaptureHold, pb.CaptureHoldRequest(name=hold.name)).capture
    assert capture.creator.token_name == "settlement-job"
    assert hold.creator.token_name != "settlement-job"
    refund = settlement(
        settlement.tx.RefundTransaction, pb.RefundTransactionRequest(name=capture.name)
    ).refund
    assert refund.creator.token_name == "settlement-job"


def refuses_unknown_filter(api: Api, client: LedgerClient, field: str, name: str) -> None:
    """A ListTransactions filter's unknown enum value: INVALID_REQUEST from the server (the
    number), ValueError from the client (the name) before anything is sent."""
    number: dict[str, Any] = {field: 99}
    unknown = pb.ListTransactionsRequest(**number)
    assert refusal(api, api.tx.ListTransactions, unknown)[:2] == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    named: dict[str, Any] = {field: name}
    with pytest.raises(ValueError, match=f"invalid {field}"):
        client.list_transactions(**named)


def test_transactions_list_by_type(api: Api, client: LedgerClient) -> None:
    account, other = funded(client, 1000), funded(client, 1000)
    held = client.create_hold(account, 300, USD)
    capture = client.capture_hold(held.name, amount=100).capture
    refund = client.refund(capture.name, amount=40).refund
    sent = client.transfer(account, other, 50, USD)
    received = client.transfer(other, account, 20, USD)

    def names(**filters: Any) -> list[str]:
        return [t.name for t in client.iter_transactions(**filters)]

    assert names(account=account, type="hold") == [held.name]
    assert names(account=account, type="transfer") == [received.name, sent.name]  # both ways
    assert names(account=account, type="capture") == [capture.name]
    assert names(type="TRANSACTION_TYPE_REFUND") == [refund.name]
    assert len(names(account=account, type="standard")) == 1  # the funding credit
    # Pages follow each other; a page token is bound to its type.
    first = client.list_transactions(account=account, type="transfer", page_size=1)
    assert [t.name for t in first.transactions] == [received.name]
    rest = client.list_transactions(
        account=account, type="transfer", page_size=1, page_token=first.next_page_token
    )
    assert [t.name for t in rest.transactions] == [sent.name]
    for wrong in ("hold", None):
        with pytest.raises(LedgerError) as info:
            client.list_transactions(account=account, type=wrong, page_token=first.next_page_token)
        assert info.value.reason == "INVALID_PAGE_TOKEN"
    refuses_unknown_filter(api, client, "type", "cheque")


def test_transactions_list_by_status_as_of_now(api: Api, client: LedgerClient, engine: Engine) -> None:
    account, other = funded(client, 1000), funded(client, 1000)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=300)
    lapsing = client.create_hold(account, 10, USD, expire_time=soon)
    later = client.create_hold(account, 20, USD, expire_time=soon + dt.timedelta(hours=1))
    forever = client.create_hold(account, 30, USD)
    voided = client.create_hold(account, 40, USD)
    client.void_hold(voided.name)
    captured = client.create_hold(account, 50, USD)
    capture = client.capture_hold(captured.name).capture
    client.refund(capture.name, amount=5)
    sent = client.transfer(account, other, 5, USD)
    received = client.transfer(other, account, 7, USD)  # the receiving account's history too
    time.sleep(max(0.0, (soon - dt.datetime.now(dt.UTC)).total_seconds()) + 0.05)
    with engine.connect() as conn:  # lapsed, and not yet released: only the view voids it
        stored = conn.execute(
            text("SELECT status FROM transactions WHERE id = :id"), {"id": lapsing.name.split("/")[1]}
        ).scalar_one()
    assert stored == "pending"

    def names(**filters: Any) -> list[str]:
        return [t.name for t in client.iter_transactions(account=account, **filters)]

    assert names(status="pending") == [forever.name, later.name]
    assert names(status="voided") == [voided.name, lapsing.name]
    assert names(status="captured") == [captured.name]
    assert names(status="partially_refunded") == [capture.name]
    posted = client.list_transactions(account=account, status="posted").transactions
    assert [t.name for t in posted][:2] == [received.name, sent.name]
    assert {t.status for t in posted} == {transaction_pb2.TRANSACTION_STATUS_POSTED}
    assert names(status="voided", type="hold") == [voided.name, lapsing.name]
    assert names(status="refunded") == []
    tenant_wide = [t.name for t in client.iter_transactions(status="pending")]
    assert tenant_wide == [forever.name, later.name]
    # A page token is bound to its status.
    first = client.list_transactions(account=account, status="voided", page_size=1)
    assert [t.name for t in first.transactions] == [voided.name]
    rest = client.list_transactions(
        account=account, status="voided", page_size=1, page_token=first.next_page_token
    )
    assert [t.name for t in rest.transactions] == [lapsing.name]
    with pytest.raises(LedgerError) as info:
        client.list_transactions(account=account, status="pending", page_token=first.next_page_token)
    assert info.value.reason == "INVALID_PAGE_TOKEN"
    refuses_unknown_filter(api, client, "status", "settled")


def test_a_transaction_is_found_by_its_external_id(api: Api, client: LedgerClient) -> None:
    account, other = funded(client, 1000), funded(client, 1000)
    charge = client.debit(account, 100, USD, external_id="ch_1")
    held = client.create_hold(account, 50, USD, external_id="ch_2")
    sent = client.transfer(other, account, 5, USD, external_id="tr_1")
    client.debit(other, 1, USD, external_id="ch_1x")  # a longer id with the same start

    def found(external_id: str, **filters: Any) -> list[str]:
        return [t.name for t in client.iter_transactions(external_id=external_id, **filters)]

    assert found("ch_1") == [charge.name]
    assert found("ch_2", status="pending") == [held.name]
    assert found("ch_2", status="voided") == []  # the other filters still apply
    assert found("tr_1", account=account) == [sent.name]  # received: the account's history too
    assert found("ch_1", account=other) == []
    assert found("nope") == []
    assert client.find_transaction("ch_1") == charge
    assert client.find_transaction("nope") is None
    with pytest.raises(ValueError, match="external_id"):
        client.find_transaction("")  # would list every transaction


def test_what_points_at_a_transaction_is_listed_by_it(api: Api, client: LedgerClient) -> None:
    account, other = funded(client, 1000), funded(client, 1000)
    payment = client.debit(account, 300, USD)
    first = client.refund(payment.name, amount=100).refund
    second = client.refund(payment.name, amount=50).refund
    held = client.create_hold(account, 40, USD)
    capture = client.capture_hold(held.name).capture
    client.refund(client.debit(other, 10, USD).name)  # another payment's refund

    def pointing_at(name: str, **filters: Any) -> list[str]:
        return [t.name for t in client.iter_transactions(related_transaction=name, **filters)]

    assert pointing_at(payment.name) == [second.name, first.name]
    assert pointing_at(payment.name, account=account) == [second.name, first.name]
    assert pointing_at(payment.name, account=other) == []
    assert pointing_at(held.name) == [capture.name]
    assert pointing_at(capture.name) == []
    page = client.list_transactions(related_transaction=payment.name, page_size=1)
    assert [t.name for t in page.transactions] == [second.name]
    with pytest.raises(LedgerError) as info:  # a page token is bound to what it lists
        client.list_transactions(related_transaction=held.name, page_token=page.next_page_token)
    assert info.value.reason == "INVALID_PAGE_TOKEN"
    bad = pb.ListTransactionsRequest(related_transaction="accounts/" + str(uuid.uuid4()))
    code, reason, _ = refusal(api, api.tx.ListTransactions, bad)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    too_long = pb.ListTransactionsRequest(external_id="x" * 129)
    assert refusal(api, api.tx.ListTransactions, too_long)[:2] == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
