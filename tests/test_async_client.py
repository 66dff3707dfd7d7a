"""AsyncLedgerClient against a real server on both databases: many calls in flight on one
channel from one event loop, each answered exactly, and the methods that page, stream and
settle. (Its retries, deadlines and error decoding are the blocking client's tests, run
against it too: tests/client.)"""

from __future__ import annotations

import asyncio
import threading
import uuid

import grpc
import pytest
from ledger.v1 import transaction_pb2
from ledger_client import AsyncLedgerClient, LedgerError, Reason, transaction_request

from ledger_server.api.server import LedgerServer
from ledger_server.store.sql_store import SqlStore
from tests.support import writer_held

CONCURRENT = 40


def target(server: LedgerServer) -> str:
    return f"127.0.0.1:{server.port}"


def test_many_calls_in_flight_on_one_channel_each_apply_once(server: LedgerServer, token: str) -> None:
    async def scenario() -> None:
        async with AsyncLedgerClient(target(server), token=token, timeout=30.0) as ledger:
            account = await ledger.create_account(currency="USD", external_ref="async-1")
            amounts = [100 + i for i in range(CONCURRENT)]
            credits = await asyncio.gather(*(ledger.credit(account.name, a, "USD") for a in amounts))
            assert sorted(c.amount for c in credits) == amounts
            assert len({c.name for c in credits}) == CONCURRENT
            # Ten copies of one request at once: one transaction, the others replay it.
            request_id = str(uuid.uuid4())
            copies = await asyncio.gather(
                *(ledger.debit(account.name, 7, "USD", request_id=request_id) for _ in range(10))
            )
            assert {c.name for c in copies} == {copies[0].name}
            balance = (await ledger.get_account(account.name)).balance
            assert balance.posted == balance.available == sum(amounts) - 7
            seen = [t.name async for t in ledger.iter_transactions(account=account.name, page_size=7)]
            assert sorted(seen) == sorted([c.name for c in credits] + [copies[0].name])

    asyncio.run(scenario())


def test_refusals_are_ledger_errors_and_change_nothing(server: LedgerServer, token: str) -> None:
    async def scenario() -> None:
        async with AsyncLedgerClient(target(server), token=token, timeout=30.0) as ledger:
            account = await ledger.create_account(currency="EUR")
            await ledger.credit(account.name, 500, "EUR")
            with pytest.raises(LedgerError) as caught:
                await ledger.debit(account.name, 501, "EUR")
            assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert caught.value.reason == Reason.INSUFFICIENT_FUNDS
            assert caught.value.error_metadata["available"] == "500"
            with pytest.raises(LedgerError) as missing:
                await ledger.get_account(f"accounts/{uuid.uuid4()}")
            assert missing.value.reason == Reason.ACCOUNT_NOT_FOUND
            assert (await ledger.get_account(account.name)).balance.posted == 500

    asyncio.run(scenario())


def test_holds_refunds_transfers_imports_and_lookups(server: LedgerServer, token: str) -> None:
    async def scenario() -> None:
        async with AsyncLedgerClient(target(server), token=token, timeout=30.0) as ledger:
            payer = await ledger.create_account(currency="USD")
            payee = await ledger.create_account(currency="USD")
            await ledger.credit(payer.name, 10_000, "USD", external_id="top-up-1")
            hold = await ledger.create_hold(payer.name, 3_000, "USD")
            captured = await ledger.capture_hold(hold.name, amount=2_000)
            assert captured.hold.status == transaction_pb2.TRANSACTION_STATUS_CAPTURED
            refunded = await ledger.refund(captured.capture.name, amount=500)
            assert refunded.original.refunded_amount == 500
            moved = await ledger.transfer(payer.name, payee.name, 1_000, "USD")
            assert moved.counterparty_ending_balance == 1_000
            items = [
                transaction_request(account=payee.name, direction="credit", amount=1, currency="USD")
                for _ in range(30)
            ]
            imported = await ledger.import_transactions(items, chunk_size=8)
            assert imported.posted_count == 30 and imported.failed_count == 0
            found = await ledger.find_transaction("top-up-1")
            assert found is not None and found.amount == 10_000
            assert await ledger.find_transaction("no-such-id") is None
            assert (await ledger.get_account(payer.name)).balance.posted == 10_000 - 2_000 + 500 - 1_000
            assert (await ledger.get_account(payee.name)).balance.posted == 1_030
            assert not (await ledger.verify_ledger()).violations

    asyncio.run(scenario())


def test_from_channel_leaves_an_aio_channel_open(server: LedgerServer, token: str) -> None:
    async def scenario() -> None:
        async with grpc.aio.insecure_channel(target(server)) as channel:
            async with AsyncLedgerClient.from_channel(channel, token=token) as ledger:
                assert ledger.channel is channel
                account = await ledger.create_account(currency="USD")
            again = AsyncLedgerClient.from_channel(channel, token=token)
            assert (await again.get_account(account.name)).name == account.name

    asyncio.run(scenario())


def test_a_client_made_outside_a_coroutine_or_used_on_another_loop_says_so(
    server: LedgerServer, token: str
) -> None:
    with pytest.raises(RuntimeError, match="inside a coroutine"):
        AsyncLedgerClient(target(server), token=token)

    async def make() -> AsyncLedgerClient:
        return AsyncLedgerClient(target(server), token=token, max_attempts=1)

    made = asyncio.run(make())
    with pytest.raises(RuntimeError, match="another event loop"):
        asyncio.run(made.get_account(f"accounts/{uuid.uuid4()}"))


def test_a_cancelled_call_repeated_with_its_request_id_is_applied_once(
    server: LedgerServer, token: str, store: SqlStore
) -> None:
    """Cancelling the task that awaits a write (asyncio.wait_for, say) cancels its RPC,
    which may or may not have been applied; the same call with the same request_id then
    applies it exactly once."""

    async def scenario() -> None:
        async with AsyncLedgerClient(target(server), token=token, timeout=30.0) as ledger:
            account = await ledger.create_account(currency="USD")
            request_id = str(uuid.uuid4())
            released = threading.Event()
            credit = ledger.credit(account.name, 25, "USD", request_id=request_id)
            with (
                writer_held(store, released, key=account.name.removeprefix("accounts/")),
                pytest.raises(TimeoutError),  # its unit queues behind the held writer
            ):
                await asyncio.wait_for(credit, 0.3)
            again = await ledger.credit(account.name, 25, "USD", request_id=request_id)
            assert (await ledger.credit(account.name, 25, "USD", request_id=request_id)).name == again.name
            assert (await ledger.get_account(account.name)).balance.posted == 25

    asyncio.run(scenario())
