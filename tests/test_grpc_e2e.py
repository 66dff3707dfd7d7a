"""End to end over a real socket through the Python clients (blocking and asyncio), on
SQLite and Postgres."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import grpc
import pytest
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ledger.v1 import account_pb2, transaction_pb2, transaction_service_pb2, transaction_service_pb2_grpc
from ledger_client import LedgerClient, LedgerError

from ledger_server.api.aio_bridge import shared_loop
from ledger_server.api.server import LedgerServer
from tests.blocking_view import ClientFactory


@pytest.fixture
def client(server: LedgerServer, token: str, make_client: ClientFactory) -> Iterator[LedgerClient]:
    with make_client(f"127.0.0.1:{server.port}", token=token, timeout=20.0) as c:
        yield c


def test_walkthrough_account_credit_debit_balance(client: LedgerClient) -> None:
    account = client.create_account(currency="usd", external_ref="user-1", metadata={"tier": "gold"})
    assert account.name.startswith("accounts/")
    assert account.currency == "USD"
    assert account.status == account_pb2.ACCOUNT_STATUS_ACTIVE
    assert dict(account.metadata) == {"tier": "gold"}
    credit = client.credit(account.name, 1500, "USD", description="welcome", external_id="grant-1")
    debit = client.debit(
        account.name, 400, "USD", posting_date=dt.date(2025, 1, 1), metadata={"order_id": "4"}
    )
    assert (credit.ending_balance, debit.ending_balance) == (1500, 1100)
    assert debit.posting_date.year == 2025
    assert (dict(debit.metadata), dict(credit.metadata)) == ({"order_id": "4"}, {})
    assert debit.status == transaction_pb2.TRANSACTION_STATUS_POSTED
    assert debit.create_time.seconds > 0 and debit.update_time.seconds > 0
    fetched = client.get_account(account.name)
    balance = fetched.balance
    assert (balance.posted, balance.pending, balance.available) == (1100, 0, 1100)
    assert dict(fetched.metadata) == {"tier": "gold"}
    assert client.get_transaction(credit.name) == credit
    history = list(client.iter_transactions(account=account.name, page_size=1))
    assert [t.name for t in history] == [debit.name, credit.name]
    assert [a.name for a in client.iter_accounts(external_ref="user-1")] == [account.name]


def test_insufficient_funds_error_carries_details(client: LedgerClient) -> None:
    account = client.create_account(currency="EUR")
    client.credit(account.name, 30, "EUR")
    with pytest.raises(LedgerError) as info:
        client.debit(account.name, 31, "EUR")
    err = info.value
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == "INSUFFICIENT_FUNDS"
    assert err.domain == "ledger.v1"
    assert err.error_metadata["available"] == "30"
    assert client.get_account(account.name).balance.posted == 30


def test_invalid_request_names_every_bad_field(server: LedgerServer, token: str) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = transaction_service_pb2_grpc.TransactionServiceStub(channel)
    request = transaction_service_pb2.CreateTransactionRequest(
        transaction=transaction_pb2.Transaction(
            account="users/1",
            direction=9,  # type: ignore[arg-type]  # an unknown enum number, as a raw client may send
            amount=-5,
            currency="$",
        ),
        request_id="not-a-uuid",
    )
    with channel, pytest.raises(grpc.RpcError) as info:
        stub.CreateTransaction(request, timeout=10, metadata=(("authorization", f"Bearer {token}"),))
    err = LedgerError.from_rpc_error(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "INVALID_REQUEST"
    assert {v.field for v in err.field_violations} == {
        "request_id",
        "transaction.account",
        "transaction.direction",
        "transaction.amount",
        "transaction.currency",
    }


def test_not_found_and_malformed_names(client: LedgerClient) -> None:
    with pytest.raises(LedgerError) as missing:
        client.get_account(f"accounts/{uuid.uuid4()}")
    assert (missing.value.code, missing.value.reason) == (grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")
    with pytest.raises(LedgerError) as malformed:
        client.get_transaction("transactions/42")
    assert malformed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in malformed.value.field_violations] == ["name"]


def test_duplicate_external_id_names_the_existing_transaction(client: LedgerClient) -> None:
    account = client.create_account(currency="USD")
    first = client.credit(account.name, 5, "USD", external_id="pay_123")
    with pytest.raises(LedgerError) as info:
        client.credit(account.name, 5, "USD", external_id="pay_123")
    assert info.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert info.value.reason == "DUPLICATE_EXTERNAL_ID"
    assert info.value.error_metadata["existing_transaction"] == first.name


def test_tampered_page_token_is_invalid_argument(client: LedgerClient) -> None:
    account = client.create_account(currency="USD")
    for _ in range(3):
        client.credit(account.name, 1, "USD")
    page = client.list_transactions(account=account.name, page_size=1)
    with pytest.raises(LedgerError) as info:
        client.list_transactions(account=account.name, page_size=1, page_token=page.next_page_token[::-1])
    assert info.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(LedgerError) as negative:
        client.list_transactions(page_size=-1)
    assert [v.field for v in negative.value.field_violations] == ["page_size"]


FULL_METADATA = {f"key-{i:02d}-".ljust(40, "k"): "v" * 500 for i in range(50)}  # the most allowed


def test_the_change_feed_follows_the_ledger_from_any_resume_token(client: LedgerClient) -> None:
    CREATED, UPDATED = (
        transaction_service_pb2.TRANSACTION_CHANGE_TYPE_CREATED,
        transaction_service_pb2.TRANSACTION_CHANGE_TYPE_UPDATED,
    )
    account = client.create_account(currency="USD")
    paid = client.credit(account.name, 100, "USD")
    held = client.create_hold(account.name, 30, "USD")
    voided = client.void_hold(held.name)
    changes = list(client.iter_transaction_changes(page_size=2))
    assert [(c.type, c.transaction.name, c.transaction.status) for c in changes] == [
        (CREATED, paid.name, transaction_pb2.TRANSACTION_STATUS_POSTED),
        (CREATED, held.name, transaction_pb2.TRANSACTION_STATUS_PENDING),
        (UPDATED, held.name, transaction_pb2.TRANSACTION_STATUS_VOIDED),
    ]
    assert changes[0].transaction == paid and changes[2].transaction == voided
    # Caught up: an empty page, whose token continues where the feed stands.
    caught_up = client.list_transaction_changes(page_token=changes[-1].resume_token)
    assert list(caught_up.changes) == [] and caught_up.next_page_token
    spent = client.debit(account.name, 10, "USD")
    assert [c.transaction for c in client.iter_transaction_changes(page_token=caught_up.next_page_token)] == [
        spent
    ]
    resumed = client.iter_transaction_changes(page_token=changes[0].resume_token)
    assert [c.transaction.name for c in resumed] == [held.name, held.name, spent.name]
    with pytest.raises(LedgerError) as tampered:
        client.list_transaction_changes(page_token=changes[0].resume_token[::-1])
    assert tampered.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(LedgerError) as negative:
        client.list_transaction_changes(page_size=-1)
    assert [v.field for v in negative.value.field_violations] == ["page_size"]


@pytest.mark.parametrize("listed", ["accounts", "transactions", "changes"])
def test_pages_of_items_with_full_metadata_stay_under_the_message_limit(
    client: LedgerClient, listed: str
) -> None:
    """160 items of ~27 KB each: one page of them would be a 4.4 MB reply, which gRPC
    refuses to send (RESOURCE_EXHAUSTED). Pages hold fewer instead, and paging through
    them returns every item once, in order."""
    holder = client.create_account(currency="USD", external_ref="full")
    if listed == "accounts":
        made = [client.create_account(currency="USD", metadata=FULL_METADATA).name for _ in range(160)]
    else:
        made = [client.credit(holder.name, 1, "USD", metadata=FULL_METADATA).name for _ in range(160)]
        made = made if listed == "changes" else made[::-1]
    pages: list[list[str]] = []
    token = ""
    while True:
        if listed == "accounts":
            accounts = client.list_accounts(page_size=1000, page_token=token)
            page, token = [a.name for a in accounts.accounts], accounts.next_page_token
        elif listed == "transactions":
            history = client.list_transactions(account=holder.name, page_size=1000, page_token=token)
            page, token = [t.name for t in history.transactions], history.next_page_token
        else:  # the feed has no last page: it is read until an empty one
            feed = client.list_transaction_changes(page_size=1000, page_token=token)
            page, token = [c.transaction.name for c in feed.changes], feed.next_page_token
            if not page:
                break
        pages.append(page)
        if not token:
            break
    assert [name for page in pages for name in page if name != holder.name] == made
    assert len(pages) > 1 and all(len(page) >= 20 for page in pages[:-1])


def test_health_reports_serving(server: LedgerServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ledger.v1.AccountService", "ledger.v1.TransactionService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_calls_are_served_on_uvloop(client: LedgerClient) -> None:
    account = client.create_account(currency="usd", external_ref="loop")
    assert client.credit(account.name, 5, "USD").ending_balance == 5
    assert isinstance(shared_loop(), uvloop.Loop)  # the measured choice (docs/performance.md)


def test_oversized_message_is_refused(client: LedgerClient) -> None:
    account = client.create_account(currency="USD")
    with pytest.raises(LedgerError) as info:
        client.credit(account.name, 1, "USD", description="x" * (5 * 1024 * 1024))
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert client.get_account(account.name).balance.posted == 0
