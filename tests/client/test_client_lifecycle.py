"""The client's hold, refund, transfer, import, balance-as-of and verify methods against a
scripted in-process server: what they send, that a retry after UNAVAILABLE resends the
same request (the same request_id; for an import the whole stream), and what they return."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from ledger.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    admin_service_pb2,
    admin_service_pb2_grpc,
    transaction_pb2,
    transaction_service_pb2,
    transaction_service_pb2_grpc,
)
from ledger_client import LedgerClient, LedgerError, date_from_proto, datetime_from_proto, transaction_request

from tests.blocking_view import ClientFactory

ACCOUNT = "accounts/0b7c8a52-3d43-4d2e-9a57-5a0f0c1d3b11"
OTHER = "accounts/0b7c8a52-3d43-4d2e-9a57-5a0f0c1d3b12"
HOLD = "transactions/7d1f3a2e-1111-4c4c-8d8d-000000000001"
pb = transaction_service_pb2


@dataclass
class Script:
    """Fail the first `fail_first` calls with UNAVAILABLE; record every request seen."""

    fail_first: int = 0
    seen: list[tuple[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.seen.append((method, request))
            number = len(self.seen)
        if number <= self.fail_first:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"scripted failure {number}")

    def requests(self, method: str) -> list[Any]:
        return [r for m, r in self.seen if m == method]


def named(txn: transaction_pb2.Transaction, request_id: str) -> transaction_pb2.Transaction:
    out = transaction_pb2.Transaction()
    out.CopyFrom(txn)
    out.name = f"transactions/{uuid.uuid5(uuid.NAMESPACE_URL, request_id)}"
    return out


class Transactions(transaction_service_pb2_grpc.TransactionServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def CreateHold(
        self, request: pb.CreateHoldRequest, context: grpc.ServicerContext
    ) -> pb.CreateHoldResponse:
        self.script.handle("CreateHold", request, context)
        hold = named(request.hold, request.request_id)
        hold.status = transaction_pb2.TRANSACTION_STATUS_PENDING
        return pb.CreateHoldResponse(hold=hold)

    def CaptureHold(
        self, request: pb.CaptureHoldRequest, context: grpc.ServicerContext
    ) -> pb.CaptureHoldResponse:
        self.script.handle("CaptureHold", request, context)
        return pb.CaptureHoldResponse(
            hold=transaction_pb2.Transaction(name=request.name, captured_amount=request.amount or 9),
            capture=transaction_pb2.Transaction(related_transaction=request.name, amount=request.amount or 9),
        )

    def VoidHold(self, request: pb.VoidHoldRequest, context: grpc.ServicerContext) -> pb.VoidHoldResponse:
        self.script.handle("VoidHold", request, context)
        return pb.VoidHoldResponse(
            hold=transaction_pb2.Transaction(
                name=request.name, status=transaction_pb2.TRANSACTION_STATUS_VOIDED
            )
        )

    def RefundTransaction(
        self, request: pb.RefundTransactionRequest, context: grpc.ServicerContext
    ) -> pb.RefundTransactionResponse:
        self.script.handle("RefundTransaction", request, context)
        return pb.RefundTransactionResponse(
            refund=transaction_pb2.Transaction(related_transaction=request.name, amount=request.amount),
            original=transaction_pb2.Transaction(name=request.name, refunded_amount=request.amount),
        )

    def CreateTransfer(
        self, request: pb.CreateTransferRequest, context: grpc.ServicerContext
    ) -> pb.CreateTransferResponse:
        self.script.handle("CreateTransfer", request, context)
        return pb.CreateTransferResponse(transfer=named(request.transfer, request.request_id))

    def ImportTransactions(
        self, request_iterator: Iterator[pb.ImportTransactionsRequest], context: grpc.ServicerContext
    ) -> pb.ImportTransactionsResponse:
        chunks = list(request_iterator)
        self.script.handle("ImportTransactions", chunks, context)
        items = [item for chunk in chunks for item in chunk.requests]
        return pb.ImportTransactionsResponse(
            results=[pb.BatchItemResult(transaction=named(i.transaction, i.request_id)) for i in items],
            posted_count=len(items),
        )


class Accounts(account_service_pb2_grpc.AccountServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def GetAccountBalance(
        self, request: account_service_pb2.GetAccountBalanceRequest, context: grpc.ServicerContext
    ) -> account_service_pb2.GetAccountBalanceResponse:
        self.script.handle("GetAccountBalance", request, context)
        return account_service_pb2.GetAccountBalanceResponse(posted=1234)


class Admin(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def VerifyLedger(
        self, request: admin_service_pb2.VerifyLedgerRequest, context: grpc.ServicerContext
    ) -> admin_service_pb2.VerifyLedgerResponse:
        self.script.handle("VerifyLedger", request, context)
        return admin_service_pb2.VerifyLedgerResponse(accounts_checked=3, transactions_checked=7)


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def client(script: Script, make_client: ClientFactory) -> Iterator[LedgerClient]:
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    transaction_service_pb2_grpc.add_TransactionServiceServicer_to_server(Transactions(script), server)  # type: ignore[abstract]
    account_service_pb2_grpc.add_AccountServiceServicer_to_server(Accounts(script), server)  # type: ignore[abstract]
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(Admin(script), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with make_client(
            f"127.0.0.1:{port}", token="t0k", timeout=5.0, initial_backoff=0.001, max_backoff=0.01
        ) as c:
            yield c
    finally:
        server.stop(grace=None).wait(timeout=5)


def only(script: Script, method: str) -> list[Any]:
    assert {m for m, _ in script.seen} == {method}
    return script.requests(method)


def test_create_hold_sends_a_debit_and_retries_with_the_same_request_id(
    client: LedgerClient, script: Script
) -> None:
    script.fail_first = 2
    expires = dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC)
    hold = client.create_hold(
        ACCOUNT, 500, "EUR", description="d", external_id="rec-3", metadata={"g": "pi"}, expire_time=expires
    )
    first, *retries = only(script, "CreateHold")
    assert len(retries) == 2 and all(r == first for r in retries)
    uuid.UUID(first.request_id)
    sent = first.hold
    assert (sent.account, sent.direction, sent.amount, sent.currency) == (
        ACCOUNT,
        transaction_pb2.DIRECTION_DEBIT,
        500,
        "EUR",
    )
    assert (sent.description, sent.external_id, dict(sent.metadata)) == ("d", "rec-3", {"g": "pi"})
    assert datetime_from_proto(sent.expire_time) == expires
    assert hold.status == transaction_pb2.TRANSACTION_STATUS_PENDING


def test_capture_and_void(client: LedgerClient, script: Script) -> None:
    script.fail_first = 1
    request_id = str(uuid.uuid4())
    captured = client.capture_hold(HOLD, amount=3, description="part", request_id=request_id)
    assert (captured.hold.captured_amount, captured.capture.related_transaction) == (3, HOLD)
    sent = script.requests("CaptureHold")
    assert [r.request_id for r in sent] == [request_id, request_id]
    assert (sent[0].name, sent[0].amount, sent[0].description) == (HOLD, 3, "part")
    assert client.capture_hold(HOLD).hold.captured_amount == 9  # amount 0: all of it
    voided = client.void_hold(HOLD)
    assert voided.status == transaction_pb2.TRANSACTION_STATUS_VOIDED
    (void,) = script.requests("VoidHold")
    assert void.name == HOLD and uuid.UUID(void.request_id)


def test_refund(client: LedgerClient, script: Script) -> None:
    script.fail_first = 1
    refunded = client.refund(HOLD, amount=200, description="r", external_id="re-1", metadata={"k": "v"})
    assert (refunded.refund.amount, refunded.original.refunded_amount) == (200, 200)
    first, retry = script.requests("RefundTransaction")
    assert first == retry
    assert (first.name, first.amount, first.description, first.external_id, dict(first.metadata)) == (
        HOLD,
        200,
        "r",
        "re-1",
        {"k": "v"},
    )
    client.refund(HOLD)
    assert script.requests("RefundTransaction")[-1].amount == 0  # all that is left


def test_transfer(client: LedgerClient, script: Script) -> None:
    transfer = client.transfer(
        ACCOUNT,
        OTHER,
        50,
        "CREDITS",
        description="share",
        posting_date=dt.date(2025, 1, 2),
        metadata={"a": "b"},
    )
    (sent,) = script.requests("CreateTransfer")
    t = sent.transfer
    assert (t.account, t.counterparty_account, t.amount, t.currency, t.description) == (
        ACCOUNT,
        OTHER,
        50,
        "CREDITS",
        "share",
    )
    assert date_from_proto(t.posting_date) == dt.date(2025, 1, 2)
    assert dict(t.metadata) == {"a": "b"}
    assert transfer.name == f"transactions/{uuid.uuid5(uuid.NAMESPACE_URL, sent.request_id)}"


def test_import_streams_chunks_and_a_retry_resends_the_whole_stream(
    client: LedgerClient, script: Script
) -> None:
    script.fail_first = 1
    items = [
        transaction_request(account=ACCOUNT, direction="credit", amount=n, currency="USD")
        for n in range(1, 6)
    ]
    response = client.import_transactions(iter(items), chunk_size=2)  # a one-shot iterator
    first, retry = script.requests("ImportTransactions")
    assert first == retry
    assert [[i.transaction.amount for i in chunk.requests] for chunk in first] == [[1, 2], [3, 4], [5]]
    assert [i.request_id for chunk in first for i in chunk.requests] == [i.request_id for i in items]
    assert response.posted_count == 5 and len(response.results) == 5


def test_import_gives_up_like_any_call(client: LedgerClient, script: Script) -> None:
    script.fail_first = 99
    item = transaction_request(account=ACCOUNT, direction="credit", amount=1, currency="USD")
    with pytest.raises(LedgerError) as info:
        client.import_transactions([item])
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert info.value.attempts == client.retry_policy.max_attempts
    assert info.value.request_id is None  # each item has its own


def test_balance_as_of_time_or_date(client: LedgerClient, script: Script) -> None:
    at = dt.datetime(2025, 3, 1, 8, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert client.get_balance_as_of(ACCOUNT, time=at) == 1234
    assert client.get_balance_as_of(ACCOUNT, posting_date=dt.date(2025, 2, 28)) == 1234
    by_time, by_date = script.requests("GetAccountBalance")
    assert by_time.WhichOneof("as_of") == "as_of_time"
    assert by_time.as_of_time.ToJsonString() == "2025-03-01T13:30:00Z"
    assert by_date.WhichOneof("as_of") == "as_of_posting_date"
    assert date_from_proto(by_date.as_of_posting_date) == dt.date(2025, 2, 28)
    assert {by_time.name, by_date.name} == {ACCOUNT}


def test_verify_ledger(client: LedgerClient, script: Script) -> None:
    report = client.verify_ledger()
    assert (list(report.violations), report.accounts_checked, report.transactions_checked) == ([], 3, 7)
    assert isinstance(only(script, "VerifyLedger")[0], Message)
