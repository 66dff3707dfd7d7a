"""One call of each scenario, as the load processes make it: a coroutine function that
sends one RPC and returns how many postings it made (0 for reads and health checks)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ledger.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    transaction_service_pb2,
    transaction_service_pb2_grpc,
)

from bench.postings import random_posting

Op = Callable[[], Awaitable[int]]
# The scenarios one server process answers (make_op), for bench.threads and bench.instructions.
ONE_SERVER_SCENARIOS = (
    "health",
    "create_spread",
    "create_hot",
    "get_account",
    "list_transactions",
    "list_changes",
    "batch_create",
)
CALL_TIMEOUT = 30.0
BATCH_TIMEOUT = 60.0  # a batch of 1000 at 8 in flight takes ~2 s on these machines
PAGE_SIZE = 50


@dataclass(frozen=True)
class Workload:
    """What to call: the scenario, the caller's token and the seeded accounts."""

    scenario: str
    token: str
    accounts: tuple[str, ...]
    hot_accounts: tuple[str, ...]
    batch_size: int = 1


def make_op(workload: Workload, channel: grpc.aio.Channel, rng: random.Random) -> Op:
    metadata = (("authorization", f"Bearer {workload.token}"),)
    transactions = transaction_service_pb2_grpc.TransactionServiceStub(channel)
    if workload.scenario == "health":
        return _health(health_pb2_grpc.HealthStub(channel))
    if workload.scenario in ("create_spread", "two_servers"):
        return _create(transactions, metadata, workload.accounts, rng)
    if workload.scenario == "create_hot":
        return _create(transactions, metadata, workload.hot_accounts, rng)
    if workload.scenario == "get_account":
        return _get_account(account_service_pb2_grpc.AccountServiceStub(channel), metadata, workload, rng)
    if workload.scenario == "list_transactions":
        return _ListPager(transactions, metadata, workload.hot_accounts, rng).call
    if workload.scenario == "list_changes":
        return _FeedReader(transactions, metadata).call
    if workload.scenario == "batch_create":
        return _batch_create(transactions, metadata, workload.accounts, workload.batch_size, rng)
    raise ValueError(f"unknown scenario {workload.scenario!r}")


def _health(stub: health_pb2_grpc.HealthStub) -> Op:
    request = health_pb2.HealthCheckRequest()

    async def call() -> int:
        await stub.Check(request, timeout=CALL_TIMEOUT)
        return 0

    return call


def _create(
    stub: transaction_service_pb2_grpc.TransactionServiceAsyncStub,
    metadata: tuple[tuple[str, str], ...],
    accounts: tuple[str, ...],
    rng: random.Random,
) -> Op:
    async def call() -> int:
        request = transaction_service_pb2.CreateTransactionRequest(
            transaction=random_posting(rng.choice(accounts), rng), request_id=str(uuid.uuid4())
        )
        await stub.CreateTransaction(request, metadata=metadata, timeout=CALL_TIMEOUT)
        return 1

    return call


def _batch_create(
    stub: transaction_service_pb2_grpc.TransactionServiceAsyncStub,
    metadata: tuple[tuple[str, str], ...],
    accounts: tuple[str, ...],
    batch_size: int,
    rng: random.Random,
) -> Op:
    """One atomic BatchCreateTransactions of `batch_size` random postings, each with its
    own request id; it counts the postings made."""

    async def call() -> int:
        request = transaction_service_pb2.BatchCreateTransactionsRequest(
            requests=[
                transaction_service_pb2.CreateTransactionRequest(
                    transaction=random_posting(rng.choice(accounts), rng), request_id=str(uuid.uuid4())
                )
                for _ in range(batch_size)
            ],
            mode=transaction_service_pb2.BATCH_MODE_ATOMIC,
        )
        response = await stub.BatchCreateTransactions(request, metadata=metadata, timeout=BATCH_TIMEOUT)
        return len(response.results)

    return call


def _get_account(
    stub: account_service_pb2_grpc.AccountServiceAsyncStub,
    metadata: tuple[tuple[str, str], ...],
    workload: Workload,
    rng: random.Random,
) -> Op:
    async def call() -> int:
        request = account_service_pb2.GetAccountRequest(name=rng.choice(workload.accounts))
        await stub.GetAccount(request, metadata=metadata, timeout=CALL_TIMEOUT)
        return 0

    return call


class _ListPager:
    """Pages through one hot account's history (newest first, PAGE_SIZE a page), following
    next_page_token; at the end it starts over on another account."""

    def __init__(
        self,
        stub: transaction_service_pb2_grpc.TransactionServiceAsyncStub,
        metadata: tuple[tuple[str, str], ...],
        accounts: tuple[str, ...],
        rng: random.Random,
    ) -> None:
        self._stub, self._metadata, self._accounts, self._rng = stub, metadata, accounts, rng
        self._account = ""
        self._token = ""

    async def call(self) -> int:
        if not self._token:
            self._account = self._rng.choice(self._accounts)
        request = transaction_service_pb2.ListTransactionsRequest(
            account=self._account, page_size=PAGE_SIZE, page_token=self._token
        )
        response = await self._stub.ListTransactions(request, metadata=self._metadata, timeout=CALL_TIMEOUT)
        self._token = response.next_page_token
        return 0


class _FeedReader:
    """Reads the tenant's change feed from its start, PAGE_SIZE changes a page, following
    next_page_token; once caught up (a short page) it starts over."""

    def __init__(
        self,
        stub: transaction_service_pb2_grpc.TransactionServiceAsyncStub,
        metadata: tuple[tuple[str, str], ...],
    ) -> None:
        self._stub, self._metadata = stub, metadata
        self._token = ""

    async def call(self) -> int:
        request = transaction_service_pb2.ListTransactionChangesRequest(
            page_size=PAGE_SIZE, page_token=self._token
        )
        response = await self._stub.ListTransactionChanges(
            request, metadata=self._metadata, timeout=CALL_TIMEOUT
        )
        self._token = response.next_page_token if len(response.changes) == PAGE_SIZE else ""
        return 0


def outcome_of(error: grpc.aio.AioRpcError) -> str:
    """`CODE` or `CODE/REASON` (the google.rpc.ErrorInfo reason the ledger attaches)."""
    code = error.code().name
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return f"{code}/{info.reason}"
    return code
