"""HOOK for a batch create RPC, which ledger.v1 does not have yet.

The harness already runs `batch_create` points (100 and 1000 postings per call) and
reports them as postings/s against the raw-sqlite3 batched ceiling; while no batch RPC
exists every such row says 'not available' (never a made-up number).

When a batch RPC lands (say `TransactionService/BatchCreateTransactions`):
1. `batch_rpc_method()` finds it in the ledger.v1 descriptors by itself;
2. implement `make_batch_create()` below: build one request of `batch_size` postings over
   `accounts` (random credits and debits, as bench/ops.py does for CreateTransaction, each
   with its own request id) and return a coroutine function that sends it and returns the
   number of postings it made; set HOOK_IMPLEMENTED = True. Nothing else in bench/ changes.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import grpc
from ledger.v1 import transaction_service_pb2

BatchCall = Callable[[], Awaitable[int]]
#: Set to True together with a real make_batch_create().
HOOK_IMPLEMENTED = False


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
    """HOOK: a coroutine function making one batch call of `batch_size` postings (it returns
    how many postings the call made), or None while there is no batch RPC to call."""
    return None


def unavailable_reason() -> str | None:
    """Why batch rows cannot be measured in this run, or None when they can."""
    method = batch_rpc_method()
    if method is None:
        return "not available: ledger.v1 has no batch create RPC yet (hook: bench/batch_hook.py)"
    if not HOOK_IMPLEMENTED:
        return f"not available: {method} exists but bench/batch_hook.make_batch_create is not written yet"
    return None
