"""LedgerClient against a real in-process gRPC server with scripted failures: retries,
idempotency keys, deadlines, metadata and the decoding of rich error details."""

from __future__ import annotations

import asyncio
import datetime
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from ledger.v1 import (
    account_pb2,
    account_service_pb2,
    account_service_pb2_grpc,
    error_reason_pb2,
    transaction_pb2,
    transaction_service_pb2,
    transaction_service_pb2_grpc,
)
from ledger_client import (
    FieldViolation,
    LedgerClient,
    LedgerError,
    Reason,
    RetryPolicy,
    date_from_proto,
    date_to_proto,
)
from ledger_client.retry import call_with_retry, call_with_retry_async

from tests.blocking_view import ClientFactory

ACCOUNT = "accounts/0b7c8a52-3d43-4d2e-9a57-5a0f0c1d3b11"

# -- the fake ledger ----------------------------------------------------------------


@dataclass
class Attempt:
    method: str
    request: Any
    time_remaining: float | None
    metadata: dict[str, str]
    received: float = field(default_factory=time.monotonic)  # when the server got it


@dataclass
class FakeLedger:
    """What the servicers do and what they saw. Tests set the behaviour fields."""

    target: str = ""
    # Abort the first `fail_first` calls (any method) with `fail_code`.
    fail_first: int = 0
    fail_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    # Abort every call with this rich status (after the fail_first ones).
    status: grpc.Status | None = None
    # Block each call until `release` is set (at most 3 s).
    stall: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    attempts: list[Attempt] = field(default_factory=list)
    accounts: list[account_pb2.Account] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, method: str, request: Message, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.attempts.append(
                Attempt(
                    method=method,
                    request=request,
                    time_remaining=context.time_remaining(),
                    metadata={k: str(v) for k, v in context.invocation_metadata()},
                )
            )
            number = len(self.attempts)
        if self.stall:
            self.release.wait(timeout=3)
        if number <= self.fail_first:
            context.abort(self.fail_code, f"scripted failure {number}")
        if self.status is not None:
            context.abort_with_status(self.status)

    def request_ids(self) -> list[str]:
        return [a.request.request_id for a in self.attempts]


class FakeTransactions(transaction_service_pb2_grpc.TransactionServiceServicer):
    def __init__(self, ledger: FakeLedger) -> None:
        self.ledger = ledger

    def BatchCreateTransactions(
        self, request: transaction_service_pb2.BatchCreateTransactionsRequest, context: grpc.ServicerContext
    ) -> transaction_service_pb2.BatchCreateTransactionsResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of these retry tests")

    def CreateTransaction(
        self, request: transaction_service_pb2.CreateTransactionRequest, context: grpc.ServicerContext
    ) -> transaction_service_pb2.CreateTransactionResponse:
        self.ledger.handle("CreateTransaction", request, context)
        posted = transaction_pb2.Transaction()
        posted.CopyFrom(request.transaction)
        posted.name = f"transactions/{uuid.uuid5(uuid.NAMESPACE_URL, request.request_id)}"
        posted.status = transaction_pb2.TRANSACTION_STATUS_POSTED
        posted.ending_balance = request.transaction.amount
        return transaction_service_pb2.CreateTransactionResponse(transaction=posted)

    def GetTransaction(
        self, request: transaction_service_pb2.GetTransactionRequest, context: grpc.ServicerContext
    ) -> transaction_service_pb2.GetTransactionResponse:
        self.ledger.handle("GetTransaction", request, context)
        return transaction_service_pb2.GetTransactionResponse(
            transaction=transaction_pb2.Transaction(name=request.name, amount=7)
        )

    def ListTransactions(
        self, request: transaction_service_pb2.ListTransactionsRequest, context: grpc.ServicerContext
    ) -> transaction_service_pb2.ListTransactionsResponse:
        self.ledger.handle("ListTransactions", request, context)
        if request.page_token:
            return transaction_service_pb2.ListTransactionsResponse(
                transactions=[transaction_pb2.Transaction(name="transactions/2")]
            )
        return transaction_service_pb2.ListTransactionsResponse(
            transactions=[transaction_pb2.Transaction(name="transactions/1")], next_page_token="p2"
        )


class FakeAccounts(account_service_pb2_grpc.AccountServiceServicer):
    def __init__(self, ledger: FakeLedger) -> None:
        self.ledger = ledger

    def CreateAccount(
        self, request: account_service_pb2.CreateAccountRequest, context: grpc.ServicerContext
    ) -> account_service_pb2.CreateAccountResponse:
        self.ledger.handle("CreateAccount", request, context)
        account = account_pb2.Account()
        account.CopyFrom(request.account)
        account.name = f"accounts/{uuid.uuid5(uuid.NAMESPACE_URL, request.request_id)}"
        account.currency = account.currency.upper()
        account.status = account_pb2.ACCOUNT_STATUS_ACTIVE
        return account_service_pb2.CreateAccountResponse(account=account)

    def GetAccount(
        self, request: account_service_pb2.GetAccountRequest, context: grpc.ServicerContext
    ) -> account_service_pb2.GetAccountResponse:
        self.ledger.handle("GetAccount", request, context)
        account = account_pb2.Account(name=request.name, currency="USD")
        account.balance.posted = 1500
        account.balance.available = 1200
        return account_service_pb2.GetAccountResponse(account=account)

    def ListAccounts(
        self, request: account_service_pb2.ListAccountsRequest, context: grpc.ServicerContext
    ) -> account_service_pb2.ListAccountsResponse:
        self.ledger.handle("ListAccounts", request, context)
        start = int(request.page_token or "0")
        size = request.page_size or 50
        page = self.ledger.accounts[start : start + size]
        more = start + size < len(self.ledger.accounts)
        return account_service_pb2.ListAccountsResponse(
            accounts=page, next_page_token=str(start + size) if more else ""
        )


@pytest.fixture
def ledger() -> Iterator[FakeLedger]:
    fake = FakeLedger()
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    transaction_service_pb2_grpc.add_TransactionServiceServicer_to_server(
        FakeTransactions(fake),  # type: ignore[abstract]  # only the methods the client tests call
        server,
    )
    account_service_pb2_grpc.add_AccountServiceServicer_to_server(FakeAccounts(fake), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    assert port > 0
    server.start()
    fake.target = f"127.0.0.1:{port}"
    try:
        yield fake
    finally:
        fake.release.set()
        server.stop(grace=None).wait(timeout=5)


@pytest.fixture
def client(ledger: FakeLedger, make_client: ClientFactory) -> Iterator[LedgerClient]:
    with make_client(ledger.target, timeout=5.0, initial_backoff=0.001, max_backoff=0.01) as c:
        yield c


def rich_status(code: grpc.StatusCode, message: str, *details: Message) -> grpc.Status:
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    result: grpc.Status = rpc_status.to_status(status)
    return result


# -- retries ------------------------------------------------------------------------


def test_unavailable_is_retried_with_the_same_generated_request_id(
    ledger: FakeLedger, client: LedgerClient
) -> None:
    ledger.fail_first = 2
    txn = client.credit(ACCOUNT, 1500, "USD")
    assert [a.method for a in ledger.attempts] == ["CreateTransaction"] * 3
    ids = ledger.request_ids()
    assert len(set(ids)) == 1
    parsed = uuid.UUID(ids[0])
    assert str(parsed) == ids[0]
    assert parsed.version == 4
    # The whole request, not just its request_id, is identical on every attempt.
    assert ledger.attempts[0].request == ledger.attempts[1].request == ledger.attempts[2].request
    assert txn.name == f"transactions/{uuid.uuid5(uuid.NAMESPACE_URL, ids[0])}"


def test_each_call_gets_a_new_request_id(ledger: FakeLedger, client: LedgerClient) -> None:
    client.credit(ACCOUNT, 1, "USD")
    client.credit(ACCOUNT, 1, "USD")
    client.create_account(currency="USD")
    ids = ledger.request_ids()
    assert len(set(ids)) == 3
    assert all(uuid.UUID(i).version == 4 for i in ids)


def test_explicit_request_id_is_sent_unchanged_on_every_attempt(
    ledger: FakeLedger, client: LedgerClient
) -> None:
    ledger.fail_first = 1
    request_id = "6F9619FF-8B86-D011-B42D-00C04FC964FF"
    client.debit(ACCOUNT, 10, "USD", request_id=request_id)
    assert ledger.request_ids() == [request_id, request_id]


def test_create_account_is_retried_with_the_same_request_id(ledger: FakeLedger, client: LedgerClient) -> None:
    ledger.fail_first = 3
    account = client.create_account(currency="usd", external_ref="customer-1", metadata={"tier": "gold"})
    ids = ledger.request_ids()
    assert len(ids) == 4
    assert len(set(ids)) == 1
    assert account.name == f"accounts/{uuid.uuid5(uuid.NAMESPACE_URL, ids[0])}"
    assert account.currency == "USD"
    assert dict(account.metadata) == {"tier": "gold"}


def test_gives_up_after_max_attempts(ledger: FakeLedger, make_client: ClientFactory) -> None:
    ledger.fail_first = 100
    with (
        make_client(ledger.target, max_attempts=3, initial_backoff=0.001, max_backoff=0.002) as client,
        pytest.raises(LedgerError) as caught,
    ):
        client.credit(ACCOUNT, 5, "USD")
    err = caught.value
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert err.attempts == 3
    assert len(ledger.attempts) == 3
    assert err.request_id == ledger.request_ids()[0]
    assert isinstance(err.__cause__, grpc.RpcError)
    assert "after 3 attempts" in str(err)
    assert err.request_id is not None
    assert err.request_id in str(err)


def test_max_attempts_one_disables_retries(ledger: FakeLedger, make_client: ClientFactory) -> None:
    ledger.fail_first = 1
    with make_client(ledger.target, max_attempts=1) as client, pytest.raises(LedgerError) as caught:
        client.get_account(ACCOUNT)
    assert caught.value.attempts == 1
    assert len(ledger.attempts) == 1


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ],
)
def test_other_codes_are_not_retried(ledger: FakeLedger, client: LedgerClient, code: grpc.StatusCode) -> None:
    ledger.fail_first = 1
    ledger.fail_code = code
    with pytest.raises(LedgerError) as caught:
        client.credit(ACCOUNT, 5, "USD")
    assert caught.value.code == code
    assert caught.value.attempts == 1
    assert len(ledger.attempts) == 1
    # The same request would have succeeded on a second attempt: none was made.
    assert caught.value.message == "scripted failure 1"


@pytest.mark.parametrize("method", ["get_account", "list_accounts", "get_transaction", "list_transactions"])
def test_reads_are_retried_on_unavailable(ledger: FakeLedger, client: LedgerClient, method: str) -> None:
    ledger.fail_first = 2
    if method == "get_account":
        assert client.get_account(ACCOUNT).balance.available == 1200
    elif method == "list_accounts":
        client.list_accounts()
    elif method == "get_transaction":
        assert client.get_transaction("transactions/x").amount == 7
    else:
        client.list_transactions(account=ACCOUNT)
    assert len(ledger.attempts) == 3


def test_unreachable_server_is_unavailable_after_all_attempts(make_client: ClientFactory) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with (
        make_client(
            f"127.0.0.1:{port}", timeout=3.0, max_attempts=3, initial_backoff=0.001, max_backoff=0.002
        ) as client,
        pytest.raises(LedgerError) as caught,
    ):
        client.get_account(ACCOUNT)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.attempts == 3
    assert time.monotonic() - started < 3.5


def test_timeout_bounds_the_whole_call_including_retries(
    ledger: FakeLedger, make_client: ClientFactory
) -> None:
    """Every attempt gets what is left of the one 0.5 s budget: the server sees one
    deadline for them all (each attempt's arrival plus its time remaining, within a few
    ms of transport), so the retries stop long before max_attempts. The last attempt may
    fail as UNAVAILABLE or, begun with almost nothing left, as DEADLINE_EXCEEDED: which
    one depends on the machine's timing, not on the client (a clock-time bound on the
    whole call is not asserted, for the same reason)."""
    ledger.fail_first = 10_000
    with (
        make_client(
            ledger.target, timeout=0.5, max_attempts=1000, initial_backoff=0.05, max_backoff=0.05
        ) as client,
        pytest.raises(LedgerError) as caught,
    ):
        client.credit(ACCOUNT, 1, "USD")
    assert caught.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert 1 < caught.value.attempts < 1000
    remaining = [a.time_remaining for a in ledger.attempts]
    # gRPC rounds a timeout up on the wire (to few significant digits): hence the 0.05.
    assert all(r is not None and r <= 0.55 for r in remaining), remaining
    deadlines = [a.received + (a.time_remaining or 0.0) for a in ledger.attempts]
    assert max(deadlines) - min(deadlines) < 0.05, remaining  # one deadline, not a fresh 0.5 s each
    assert len(set(ledger.request_ids())) == 1


# -- deadlines and metadata ---------------------------------------------------------


def test_default_deadline_is_applied(ledger: FakeLedger, make_client: ClientFactory) -> None:
    with make_client(ledger.target) as client:
        assert client.timeout == 10.0
        client.credit(ACCOUNT, 1, "USD")
        client.get_account(ACCOUNT)
        client.list_transactions()
    assert len(ledger.attempts) == 3
    for attempt in ledger.attempts:
        assert attempt.time_remaining is not None
        # The server's view of the deadline may overshoot the client's by grpc's slack.
        assert 5.0 < attempt.time_remaining <= 10.5


def test_configured_and_per_call_deadlines(ledger: FakeLedger, make_client: ClientFactory) -> None:
    with make_client(ledger.target, timeout=3.0) as client:
        client.get_account(ACCOUNT)
        client.get_account(ACCOUNT, timeout=1.0)
    first, second = (a.time_remaining for a in ledger.attempts)
    assert first is not None
    assert second is not None
    assert 1.5 < first <= 3.5
    assert 0 < second <= 1.5
    assert second < first - 1.0


def test_deadline_exceeded_is_not_retried(ledger: FakeLedger, make_client: ClientFactory) -> None:
    ledger.stall = True  # for up to 3 s: the call's 0.3 s deadline passes first
    with make_client(ledger.target, timeout=0.3, initial_backoff=0.001) as client:
        with pytest.raises(LedgerError) as caught:
            client.credit(ACCOUNT, 1, "USD")
        ledger.release.set()
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.attempts == 1
    [attempt] = ledger.attempts
    assert (
        attempt.time_remaining is not None and attempt.time_remaining <= 0.35
    )  # 0.3, rounded up on the wire
    # The request_id is there so that the caller can repeat the call safely.
    assert caught.value.request_id == ledger.request_ids()[0]


def test_metadata_is_sent_on_every_call_and_attempt(ledger: FakeLedger, make_client: ClientFactory) -> None:
    ledger.fail_first = 1
    with make_client(
        ledger.target, metadata=[("authorization", "Bearer t0ken")], initial_backoff=0.001
    ) as client:
        client.credit(ACCOUNT, 1, "USD")
        client.list_accounts()
    assert len(ledger.attempts) == 3
    assert all(a.metadata.get("authorization") == "Bearer t0ken" for a in ledger.attempts)


# -- requests and responses ---------------------------------------------------------


def test_create_transaction_builds_the_request_and_unwraps_the_response(
    ledger: FakeLedger, client: LedgerClient
) -> None:
    txn = client.create_transaction(
        account=ACCOUNT,
        direction="Debit",
        amount=250,
        currency="usd",
        kind="top-up",
        description="coffee",
        posting_date=datetime.date(2024, 2, 29),
        external_id="order-17",
        metadata={"order_id": "17"},
    )
    assert isinstance(txn, transaction_pb2.Transaction)
    sent = ledger.attempts[0].request.transaction
    assert sent.account == ACCOUNT
    assert sent.direction == transaction_pb2.DIRECTION_DEBIT
    assert sent.amount == 250
    assert sent.currency == "usd"
    assert sent.kind == transaction_pb2.TRANSACTION_KIND_TOP_UP
    assert sent.description == "coffee"
    assert date_from_proto(sent.posting_date) == datetime.date(2024, 2, 29)
    assert sent.external_id == "order-17"
    assert dict(sent.metadata) == {"order_id": "17"}
    assert txn.ending_balance == 250
    assert txn.status == transaction_pb2.TRANSACTION_STATUS_POSTED


def test_credit_and_debit_set_direction_and_defaults(ledger: FakeLedger, client: LedgerClient) -> None:
    client.credit(ACCOUNT, 100, "USD", kind=transaction_pb2.TRANSACTION_KIND_PROMOTION)
    client.debit(ACCOUNT, 40, "USD")
    credit, debit = (a.request.transaction for a in ledger.attempts)
    assert credit.direction == transaction_pb2.DIRECTION_CREDIT
    assert credit.kind == transaction_pb2.TRANSACTION_KIND_PROMOTION
    assert debit.direction == transaction_pb2.DIRECTION_DEBIT
    assert debit.kind == transaction_pb2.TRANSACTION_KIND_UNSPECIFIED
    assert not debit.HasField("posting_date")


def test_list_transactions_filters(ledger: FakeLedger, client: LedgerClient) -> None:
    page = client.list_transactions(
        account=ACCOUNT, posting_date_from=datetime.date(2024, 1, 1), direction="credit", page_size=10
    )
    assert [t.name for t in page.transactions] == ["transactions/1"]
    sent = ledger.attempts[0].request
    assert sent.account == ACCOUNT
    assert date_from_proto(sent.posting_date_from) == datetime.date(2024, 1, 1)
    assert not sent.HasField("posting_date_to")
    assert sent.direction == transaction_pb2.DIRECTION_CREDIT
    assert sent.page_size == 10


def test_iter_transactions_follows_page_tokens(ledger: FakeLedger, client: LedgerClient) -> None:
    names = [t.name for t in client.iter_transactions(account=ACCOUNT)]
    assert names == ["transactions/1", "transactions/2"]
    assert [a.request.page_token for a in ledger.attempts] == ["", "p2"]
    assert all(a.request.account == ACCOUNT for a in ledger.attempts)


def test_iter_accounts_follows_page_tokens_and_retries_each_page(
    ledger: FakeLedger, client: LedgerClient
) -> None:
    ledger.accounts = [account_pb2.Account(name=f"accounts/{i}", external_ref="c") for i in range(5)]
    ledger.fail_first = 1
    names = [a.name for a in client.iter_accounts(page_size=2, external_ref="c")]
    assert names == [f"accounts/{i}" for i in range(5)]
    assert [a.request.page_token for a in ledger.attempts] == ["", "", "2", "4"]
    assert all(a.request.external_ref == "c" for a in ledger.attempts)


def test_iter_accounts_empty(ledger: FakeLedger, client: LedgerClient) -> None:
    assert list(client.iter_accounts()) == []
    assert len(ledger.attempts) == 1


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"request_id": "not-a-uuid"}, ValueError),
        ({"amount": 1.5}, TypeError),
        ({"amount": True}, TypeError),
        ({"direction": "sideways"}, ValueError),
        ({"direction": "unspecified"}, ValueError),
        ({"direction": 0}, ValueError),
        ({"direction": 7}, ValueError),
        ({"kind": "gift"}, ValueError),
        ({"posting_date": datetime.datetime(2024, 1, 1, 12, 0)}, TypeError),
    ],
)
def test_bad_arguments_are_refused_before_any_call(
    ledger: FakeLedger, client: LedgerClient, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    args: dict[str, Any] = {"account": ACCOUNT, "direction": "credit", "amount": 1, "currency": "USD"}
    args.update(kwargs)
    with pytest.raises(error):
        client.create_transaction(**args)
    assert ledger.attempts == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"timeout": 0}, ValueError),
        ({"timeout": -1.0}, ValueError),
        ({"max_attempts": 0}, ValueError),
        ({"initial_backoff": -0.1}, ValueError),
        ({"initial_backoff": 1.0, "max_backoff": 0.5}, ValueError),
    ],
)
def test_bad_client_settings_are_refused(
    kwargs: dict[str, Any], error: type[Exception], make_client: ClientFactory
) -> None:
    with pytest.raises(error):
        make_client("127.0.0.1:1", **kwargs)


# -- errors -------------------------------------------------------------------------


def test_error_info_is_decoded(ledger: FakeLedger, client: LedgerClient) -> None:
    info = error_details_pb2.ErrorInfo(
        reason="INSUFFICIENT_FUNDS",
        domain="ledger.v1",
        metadata={"available": "100", "balance_floor": "0", "amount": "500"},
    )
    ledger.status = rich_status(grpc.StatusCode.FAILED_PRECONDITION, "insufficient funds", info)
    with pytest.raises(LedgerError) as caught:
        client.debit(ACCOUNT, 500, "USD")
    err = caught.value
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.message == "insufficient funds"
    assert err.reason == Reason.INSUFFICIENT_FUNDS
    assert err.domain == "ledger.v1"
    assert err.error_metadata == {"available": "100", "balance_floor": "0", "amount": "500"}
    assert err.field_violations == []
    assert err.attempts == 1
    assert err.status is not None
    assert err.status.code == code_pb2.FAILED_PRECONDITION
    assert isinstance(err.__cause__, grpc.RpcError)
    text = str(err)
    assert text.startswith("FAILED_PRECONDITION INSUFFICIENT_FUNDS: insufficient funds")
    assert "available=100" in text


def test_bad_request_is_decoded(ledger: FakeLedger, client: LedgerClient) -> None:
    info = error_details_pb2.ErrorInfo(reason="INVALID_REQUEST", domain="ledger.v1")
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="transaction.amount", description="must be > 0"
            ),
            error_details_pb2.BadRequest.FieldViolation(field="request_id", description="not a UUID"),
        ]
    )
    ledger.status = rich_status(grpc.StatusCode.INVALID_ARGUMENT, "invalid request", info, bad)
    with pytest.raises(LedgerError) as caught:
        client.get_account(ACCOUNT)
    err = caught.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == Reason.INVALID_REQUEST
    assert err.field_violations == [
        FieldViolation(field="transaction.amount", description="must be > 0"),
        FieldViolation(field="request_id", description="not a UUID"),
    ]
    assert "transaction.amount: must be > 0" in str(err)
    assert err.request_id is None  # reads carry no request_id
    with pytest.raises(AttributeError):
        err.field_violations[0].field = "x"  # type: ignore[misc]


def test_unavailable_with_details_is_retried_and_decoded(
    ledger: FakeLedger, make_client: ClientFactory
) -> None:
    info = error_details_pb2.ErrorInfo(reason="STORE_UNAVAILABLE", domain="ledger.v1")
    ledger.status = rich_status(grpc.StatusCode.UNAVAILABLE, "database busy", info)
    with (
        make_client(ledger.target, max_attempts=2, initial_backoff=0.001) as client,
        pytest.raises(LedgerError) as caught,
    ):
        client.credit(ACCOUNT, 1, "USD")
    assert caught.value.reason == Reason.STORE_UNAVAILABLE
    assert caught.value.attempts == 2
    assert len(ledger.attempts) == 2


def test_a_tenant_call_limit_is_retried_and_other_resource_exhausted_is_not(
    ledger: FakeLedger, make_client: ClientFactory
) -> None:
    """RESOURCE_EXHAUSTED is retried only for TENANT_CALL_LIMIT: the limit passes as the
    tenant's other calls finish; an import too large for its reply would fail again."""

    def exhausted(reason: str) -> LedgerError:
        info = error_details_pb2.ErrorInfo(reason=reason, domain="ledger.v1")
        ledger.status = rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "exhausted", info)
        ledger.attempts.clear()
        with (
            make_client(ledger.target, max_attempts=3, initial_backoff=0.001) as client,
            pytest.raises(LedgerError) as caught,
        ):
            client.credit(ACCOUNT, 1, "USD")
        assert caught.value.reason == reason and len(set(ledger.request_ids())) == 1
        return caught.value

    assert exhausted(Reason.TENANT_CALL_LIMIT).attempts == 3
    assert exhausted(Reason.IMPORT_TOO_LARGE).attempts == 1


def test_error_without_details(ledger: FakeLedger, client: LedgerClient) -> None:
    ledger.fail_first = 1
    ledger.fail_code = grpc.StatusCode.NOT_FOUND
    with pytest.raises(LedgerError) as caught:
        client.get_transaction("transactions/missing")
    err = caught.value
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert err.message == "scripted failure 1"
    assert err.reason is None
    assert err.domain is None
    assert err.error_metadata == {}
    assert err.field_violations == []
    assert str(err) == "NOT_FOUND: scripted failure 1"


def test_reason_constants_match_the_proto_enum() -> None:
    names = {n.removeprefix("ERROR_REASON_") for n, v in error_reason_pb2.ErrorReason.items() if v != 0}
    constants = {k for k in vars(Reason) if not k.startswith("_")}
    assert constants == names
    assert all(getattr(Reason, k) == k for k in constants)


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: Any = ()) -> None:
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailers


def test_details_survive_a_rewritten_message() -> None:
    # grpc_status.from_call refuses a status whose message differs from the call's
    # (as when a proxy rewrites it): the details are decoded all the same.
    status = status_pb2.Status(code=code_pb2.NOT_FOUND, message="account not found")
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason="ACCOUNT_NOT_FOUND", domain="ledger.v1"))
    error = FakeRpcError(
        grpc.StatusCode.NOT_FOUND, "rewritten", (("grpc-status-details-bin", status.SerializeToString()),)
    )
    err = LedgerError.from_rpc_error(error)
    assert err.message == "rewritten"
    assert err.reason == Reason.ACCOUNT_NOT_FOUND


def test_garbage_details_are_ignored() -> None:
    error = FakeRpcError(grpc.StatusCode.INTERNAL, "boom", (("grpc-status-details-bin", b"\xff\xff\xff"),))
    err = LedgerError.from_rpc_error(error, request_id="r", attempts=2)
    assert err.code == grpc.StatusCode.INTERNAL
    assert err.reason is None
    assert err.status is None
    assert err.request_id == "r"


def test_a_bare_rpc_error_is_unknown() -> None:
    err = LedgerError.from_rpc_error(grpc.RpcError())
    assert err.code == grpc.StatusCode.UNKNOWN
    assert err.reason is None


# -- the channel --------------------------------------------------------------------


def test_close_closes_the_channel(ledger: FakeLedger, make_client: ClientFactory) -> None:
    client = make_client(ledger.target)
    client.close()
    client.close()  # idempotent
    # grpc's closed channel refuses the call: ValueError, grpc.aio's UsageError.
    with pytest.raises((ValueError, grpc.aio.UsageError)):
        client.get_account(ACCOUNT)


def test_from_channel_leaves_the_channel_open(ledger: FakeLedger) -> None:
    with grpc.insecure_channel(ledger.target) as channel:
        with LedgerClient.from_channel(channel, timeout=2.0) as client:
            assert client.channel is channel
            client.get_account(ACCOUNT)
        # Still usable after the client is closed.
        again = LedgerClient.from_channel(channel, timeout=2.0)
        assert again.get_account(ACCOUNT).name == ACCOUNT
    assert len(ledger.attempts) == 2


# -- backoff, without a server -------------------------------------------------------


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff=0.1, max_backoff=1.0)
    assert [policy.backoff_cap(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert policy.backoff_cap(10_000) == 1.0  # no overflow
    assert policy.backoff(3, lambda: 0.0) == 0.0
    assert policy.backoff(3, lambda: 0.5) == pytest.approx(0.2)
    assert all(0 <= policy.backoff(4) < 0.8 for _ in range(200))
    assert len({policy.backoff(4) for _ in range(50)}) > 1  # full jitter, not fixed


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


Retrying = Callable[..., Any]


@pytest.fixture(params=["blocking", "asyncio"])
def retrying(request: pytest.FixtureRequest) -> Retrying:
    """call_with_retry, or call_with_retry_async run to completion with the same
    (blocking) attempt and sleep, each wrapped in a coroutine."""
    if request.param == "blocking":
        return call_with_retry

    def run(attempt: Callable[[float], Any], policy: RetryPolicy, **options: Any) -> Any:
        sleep = options.pop("sleep")

        async def attempt_async(left: float) -> Any:
            return attempt(left)

        async def sleep_async(seconds: float) -> None:
            sleep(seconds)

        return asyncio.run(call_with_retry_async(attempt_async, policy, sleep=sleep_async, **options))

    return run


def test_call_with_retry_sleeps_between_attempts_and_passes_the_remaining_time(retrying: Retrying) -> None:
    clock = FakeClock()
    remaining: list[float] = []

    def attempt(left: float) -> str:
        remaining.append(left)
        if len(remaining) < 4:
            raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "busy")
        return "ok"

    policy = RetryPolicy(max_attempts=4, initial_backoff=0.1, max_backoff=0.25)
    result = retrying(attempt, policy, timeout=10.0, sleep=clock.sleep, clock=clock, rand=lambda: 0.5)
    assert result == "ok"
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.125])
    assert remaining == pytest.approx([10.0, 9.95, 9.85, 9.725])


def test_call_with_retry_stops_when_the_backoff_would_pass_the_deadline(retrying: Retrying) -> None:
    clock = FakeClock()
    calls = 0

    def attempt(left: float) -> str:
        nonlocal calls
        calls += 1
        clock.now += 0.4  # each attempt takes 0.4 s
        raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "busy")

    policy = RetryPolicy(max_attempts=100, initial_backoff=1.0, max_backoff=1.0)
    with pytest.raises(FakeRpcError):
        retrying(attempt, policy, timeout=2.0, sleep=clock.sleep, clock=clock, rand=lambda: 0.5)
    # 0.4 + 0.5 + 0.4 = 1.3; a further 0.5 s backoff would end at 1.8 < 2.0, then 1.8 + 0.4 = 2.2.
    assert calls == 3
    assert clock.sleeps == [0.5, 0.5]


def test_call_with_retry_does_not_retry_other_errors(retrying: Retrying) -> None:
    calls = 0

    def attempt(left: float) -> str:
        nonlocal calls
        calls += 1
        raise FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "late")

    with pytest.raises(FakeRpcError):
        retrying(attempt, RetryPolicy(), timeout=1.0, sleep=lambda s: None)
    assert calls == 1


def test_date_helpers() -> None:
    proto = date_to_proto(datetime.date(2024, 12, 31))
    assert (proto.year, proto.month, proto.day) == (2024, 12, 31)
    assert date_from_proto(proto) == datetime.date(2024, 12, 31)
    assert date_from_proto(type(proto)()) is None
    with pytest.raises(ValueError):
        date_from_proto(type(proto)(year=2024, month=12))
    with pytest.raises(TypeError):
        date_to_proto(datetime.datetime(2024, 12, 31, 23, 0))
