"""Batch create points: `TransactionService/BatchCreateTransactions` with 100 or 1000
postings per call (atomic mode: one all-or-nothing unit, one commit), reported as
postings/s against the raw-sqlite3 batched ceiling."""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable

import grpc
from ledger.v1 import transaction_service_pb2, transaction_service_pb2_grpc

from bench.postings import random_posting

BatchCall = Callable[[], Awaitable[int]]
#: Whether make_batch_create() makes real calls (the rows say "not available" otherwise).
HOOK_IMPLEMENTED = True


def batch_rpc_method() -> str | None:
    """The full name of a batch create method of TransactionService, if the stubs have one."""
    service = transaction_service_pb2.DESCRIPTOR.services_by_name["TransactionService"]
    for method in service.methods:
        if method.name.startswith("Batch") or method.name.endswith("Batch"):
            return method.full_name
    return None


def make_batch_create(
    channel: grpc.aio.Channel,
    metadata: tuple[tuple[str, str], ...],
    accounts: tuple[str, ...],
    batch_size: int,
    rng: random.Random,
) -> BatchCall | None:
    """A coroutine function making one batch call of `batch_size` random postings (each
    with its own request id); it returns how many postings the call made."""
    if batch_rpc_method() is None:
        return None
    stub = transaction_service_pb2_grpc.TransactionServiceStub(channel)

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
        response = await stub.BatchCreateTransactions(request, metadata=metadata, timeout=60)
        return len(response.results)

    return call


def unavailable_reason() -> str | None:
    """Why batch rows cannot be measured in this run, or None when they can."""
    method = batch_rpc_method()
    if method is None:
        return "not available: ledger.v1 has no batch create RPC yet (hook: bench/batch_hook.py)"
    if not HOOK_IMPLEMENTED:
        return f"not available: {method} exists but bench/batch_hook.make_batch_create is not written yet"
    return None
