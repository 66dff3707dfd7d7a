"""Servicer unit tests with grpcio-testing: request/response translation, without a
socket (error-to-status mapping is the interceptor's and is tested end to end)."""

from __future__ import annotations

from typing import Any

import grpc
import grpc_testing
import pytest
from google.type import date_pb2
from ledger.v1 import (
    account_pb2,
    account_service_pb2,
    transaction_pb2,
    transaction_service_pb2,
)

from ledger_server.api.account_servicer import AccountServicer
from ledger_server.api.aio_bridge import shared_loop
from ledger_server.api.caller import reset_caller, set_caller
from ledger_server.api.change_waiters import ChangeWaiters
from ledger_server.api.convert import parse_name
from ledger_server.api.transaction_servicer import TransactionServicer
from ledger_server.core.auth import ADMIN, Caller
from ledger_server.core.ledger import Ledger
from ledger_server.core.model import DEFAULT_TENANT
from ledger_server.core.validation import Violations

ACCOUNTS = account_service_pb2.DESCRIPTOR.services_by_name["AccountService"]
TRANSACTIONS = transaction_service_pb2.DESCRIPTOR.services_by_name["TransactionService"]


CALLER = Caller(DEFAULT_TENANT, "0" * 32, "unit-test", frozenset({ADMIN}))


class ActingAs:
    """A servicer seen as the interceptor would leave it: with an authenticated caller."""

    def __init__(self, servicer: object, caller: Caller) -> None:
        self._servicer = servicer
        self._caller = caller

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._servicer, name)

        def call(request: Any, context: Any) -> Any:
            token = set_caller(self._caller)
            try:
                return method(request, context)
            finally:
                reset_caller(token)

        return call


@pytest.fixture
def rpc_server(ledger: Ledger) -> grpc_testing.Server:
    return grpc_testing.server_from_dictionary(
        {
            ACCOUNTS: ActingAs(AccountServicer(ledger), CALLER),
            TRANSACTIONS: ActingAs(
                TransactionServicer(ledger, change_waiters=ChangeWaiters(shared_loop(), 1.0)), CALLER
            ),
        },
        grpc_testing.strict_real_time(),
    )


def call(server: grpc_testing.Server, service: Any, method: str, request: Any) -> Any:
    rpc = server.invoke_unary_unary(service.methods_by_name[method], (), request, None)
    response, _, code, details = rpc.termination()
    assert code == grpc.StatusCode.OK, details
    return response


def test_create_account_maps_every_field(rpc_server: grpc_testing.Server) -> None:
    request = account_service_pb2.CreateAccountRequest(
        account=account_pb2.Account(
            name="accounts/ignored-output-only",
            external_ref="membership-9",
            currency="eur",
            balance_floor=-100,
            metadata={"company_ref": "c-1"},
        )
    )
    account = call(rpc_server, ACCOUNTS, "CreateAccount", request).account
    assert account.name.startswith("accounts/") and account.name != "accounts/ignored-output-only"
    assert (account.external_ref, account.currency, account.balance_floor) == ("membership-9", "EUR", -100)
    assert account.status == account_pb2.ACCOUNT_STATUS_ACTIVE
    assert dict(account.metadata) == {"company_ref": "c-1"}
    assert account.balance == account_pb2.AccountBalance(posted=0, pending=0, available=0)
    assert account.create_time == account.update_time and account.create_time.seconds > 0
    fetched = call(
        rpc_server, ACCOUNTS, "GetAccount", account_service_pb2.GetAccountRequest(name=account.name)
    )
    assert fetched.account == account


def test_create_transaction_maps_every_field_and_replays(rpc_server: grpc_testing.Server) -> None:
    account = call(
        rpc_server,
        ACCOUNTS,
        "CreateAccount",
        account_service_pb2.CreateAccountRequest(account=account_pb2.Account(currency="USD")),
    ).account
    request = transaction_service_pb2.CreateTransactionRequest(
        transaction=transaction_pb2.Transaction(
            account=account.name,
            direction=transaction_pb2.DIRECTION_CREDIT,
            amount=1234,
            currency="usd",
            kind=transaction_pb2.TRANSACTION_KIND_TOP_UP,
            description="Description of transaction",
            posting_date=date_pb2.Date(year=2025, month=1, day=1),
            external_id="gw_123",
            metadata={"order_id": "4"},
            ending_balance=999,  # output only: ignored
        ),
        request_id="5d0a2f0e-8a5e-4c53-9d0e-3c7f9d1f2a44",
    )
    txn = call(rpc_server, TRANSACTIONS, "CreateTransaction", request).transaction
    assert txn.name.startswith("transactions/")
    assert (txn.account, txn.amount, txn.currency, txn.ending_balance) == (account.name, 1234, "USD", 1234)
    assert txn.direction == transaction_pb2.DIRECTION_CREDIT
    assert txn.kind == transaction_pb2.TRANSACTION_KIND_TOP_UP
    assert txn.status == transaction_pb2.TRANSACTION_STATUS_POSTED
    assert (txn.posting_date.year, txn.posting_date.month, txn.posting_date.day) == (2025, 1, 1)
    assert txn.creator == transaction_pb2.Creator(token=f"tokens/{CALLER.token_id}", token_name="unit-test")
    assert (txn.description, txn.external_id, dict(txn.metadata)) == (
        "Description of transaction",
        "gw_123",
        {"order_id": "4"},
    )
    replay = call(rpc_server, TRANSACTIONS, "CreateTransaction", request).transaction
    assert replay == txn
    listed = call(
        rpc_server,
        TRANSACTIONS,
        "ListTransactions",
        transaction_service_pb2.ListTransactionsRequest(
            account=account.name,
            direction=transaction_pb2.DIRECTION_CREDIT,
            posting_date_from=date_pb2.Date(year=2025, month=1, day=1),
            posting_date_to=date_pb2.Date(year=2025, month=1, day=1),
        ),
    )
    assert list(listed.transactions) == [txn] and listed.next_page_token == ""


def test_invalid_request_is_refused_by_the_servicer(rpc_server: grpc_testing.Server) -> None:
    request = account_service_pb2.GetAccountRequest(name="accounts/not-a-uuid")
    rpc = rpc_server.invoke_unary_unary(ACCOUNTS.methods_by_name["GetAccount"], (), request, None)
    _, _, code, _ = rpc.termination()
    assert code != grpc.StatusCode.OK  # raised for the interceptor to map (see test_grpc_e2e)


@pytest.mark.parametrize(
    "name",
    [
        "accounts/{3f0c1f8e-0d5b-4a47-9b8e-2f1d3c4b5a69}",
        "accounts/urn:uuid:3f0c1f8e-0d5b-4a47-9b8e-2f1d3c4b5a69",
        "accounts/3f0c1f8e0d5b4a479b8e2f1d3c4b5a69",
        "accounts/ 3f0c1f8e-0d5b-4a47-9b8e-2f1d3c4b5a69",
        "accounts/" + "\u0660" * 32,
        "transactions/3f0c1f8e-0d5b-4a47-9b8e-2f1d3c4b5a69",
    ],
)
def test_only_canonical_resource_names_parse(name: str) -> None:
    v = Violations()
    assert parse_name(v, "name", name, "accounts") == ""
    assert [violation.field for violation in v] == ["name"]


def test_resource_names_are_case_insensitive_hex() -> None:
    v = Violations()
    assert parse_name(v, "name", "accounts/3F0C1F8E-0D5B-4A47-9B8E-2F1D3C4B5A69", "accounts") == (
        "3f0c1f8e-0d5b-4a47-9b8e-2f1d3c4b5a69"
    )
    assert not v
