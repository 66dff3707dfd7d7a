"""Clients that misuse the transport -- oversized messages, sockets that stall in the
handshake, calls whose responses are never read, calls that never send their request,
calls abandoned mid-flight -- against a real server on 127.0.0.1: the server keeps
serving everyone else and never leaves a posting half-applied."""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from ledger.v1 import (
    account_pb2,
    account_service_pb2,
    account_service_pb2_grpc,
    transaction_pb2,
    transaction_service_pb2,
    transaction_service_pb2_grpc,
)
from ledger_client import LedgerClient, LedgerError
from sqlalchemy import Engine, text

from ledger_server.api.server import LedgerServer
from ledger_server.core.admin import Admin
from ledger_server.core.ledger import Ledger
from ledger_server.store.sql_store import SqlStore
from tests.support import holding_account_lock, invariant_violations, serving, wait_until

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
CREATE_TRANSACTION = "/ledger.v1.TransactionService/CreateTransaction"


def still_serves(port: int, token: str) -> None:
    """Health answers SERVING and a posting goes through, each within a few seconds."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
    with LedgerClient(f"127.0.0.1:{port}", token=token, timeout=5.0, max_attempts=1) as client:
        account = client.create_account(currency="USD")
        assert client.credit(account.name, 7, "USD").ending_balance == 7


# -- raw HTTP/2, for clients that the grpc library would never let misbehave ----------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS = 0x0, 0x1, 0x4
END_STREAM, END_HEADERS = 0x1, 0x4
INITIAL_WINDOW_SIZE = 0x4


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def hpack_literal(name: str, value: str) -> bytes:
    """A header as an HPACK literal without indexing (new name); short strings only."""
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def request_headers(stream: int, path: str, end_stream: bool = False) -> bytes:
    block = b"".join(
        hpack_literal(k, v)
        for k, v in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "127.0.0.1"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )
    return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream, block)


def grpc_message(payload: bytes, stream: int) -> bytes:
    return frame(DATA, END_STREAM, stream, b"\x00" + struct.pack(">I", len(payload)) + payload)


def raw_socket(port: int, stack: ExitStack) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    stack.callback(sock.close)
    return sock


# -- messages above the size limit -------------------------------------------------------


@sqlite_only
def test_a_message_above_the_limit_is_resource_exhausted_and_others_are_served(
    ledger: Ledger, store: SqlStore, token: str
) -> None:
    with serving(ledger, store, max_message_bytes=64 * 1024) as server:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = transaction_service_pb2_grpc.TransactionServiceStub(channel)
            request = transaction_service_pb2.CreateTransactionRequest(
                transaction=transaction_pb2.Transaction(description="x" * (65 * 1024)),
                request_id=str(uuid.uuid4()),
            )
            for _ in range(3):  # the same connection stays usable after each refusal
                with pytest.raises(grpc.RpcError) as info:
                    stub.CreateTransaction(
                        request, timeout=10, metadata=(("authorization", f"Bearer {token}"),)
                    )
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            small = account_service_pb2.CreateAccountRequest(account=account_pb2.Account(currency="USD"))
            created = account_service_pb2_grpc.AccountServiceStub(channel).CreateAccount(
                small, timeout=10, metadata=(("authorization", f"Bearer {token}"),)
            )
            assert created.account.name.startswith("accounts/")
        still_serves(server.port, token)


# -- stalled connections and streams --------------------------------------------------


@sqlite_only
def test_sockets_that_stall_in_the_handshake_do_not_stop_other_clients(
    server: LedgerServer, token: str
) -> None:
    with ExitStack() as stack:
        for i in range(60):
            sock = raw_socket(server.port, stack)
            if i % 3 == 1:
                sock.sendall(PREFACE[:10])  # a partial preface, then silence
            elif i % 3 == 2:
                sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b"") + b"\x00\x00")  # a torn frame
            # i % 3 == 0: connected, never a byte
        still_serves(server.port, token)
    still_serves(server.port, token)


@sqlite_only
def test_calls_whose_responses_are_never_read_do_not_stop_other_clients(
    ledger: Ledger, store: SqlStore, token: str
) -> None:
    """Complete requests on connections that grant the server no flow-control window
    and never read a byte: the answers can never leave, yet no worker stays stuck."""
    workers = 8
    with serving(ledger, store, workers=workers) as server, ExitStack() as stack:
        for _ in range(4):
            sock = raw_socket(server.port, stack)
            streams = b"".join(
                request_headers(stream, HEALTH_CHECK) + grpc_message(b"", stream)
                for stream in range(1, 2 * 4 * workers, 2)  # 4 x workers calls per connection
            )
            sock.sendall(
                PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", INITIAL_WINDOW_SIZE, 0)) + streams
            )
        still_serves(server.port, token)
    # Each call also made with the grpc library, never asking for its result.
    with serving(ledger, store, workers=workers) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        check = health_pb2_grpc.HealthStub(channel).Check
        unread = [check.future(health_pb2.HealthCheckRequest()) for _ in range(4 * workers)]
        still_serves(server.port, token)
        for call in unread:
            call.cancel()
        channel.close()
        still_serves(server.port, token)


def stalled_calls(
    port: int, count: int, stack: ExitStack, timeout: float | None, method: str = HEALTH_CHECK
) -> list[Any]:
    """`count` calls that send their headers but never their request message."""
    never = threading.Event()
    stack.callback(never.set)

    def no_request() -> Iterator[bytes]:
        never.wait(60)
        return
        yield b""

    # A connection of its own: channels in one process otherwise share connections.
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
    stack.callback(channel.close)
    call: Any = channel.stream_unary(method)
    calls: list[Any] = [call.future(no_request(), timeout=timeout) for _ in range(count)]
    for stalled in calls:
        stack.callback(stalled.cancel)
    return calls


@sqlite_only
def test_calls_that_never_send_their_request_do_not_stop_other_clients(
    ledger: Ledger, store: SqlStore, token: str
) -> None:
    """The event loop waits for a call's request, not a worker: request-less calls end at
    their deadline, and leave the server serving meanwhile and after."""
    workers = 8
    with serving(ledger, store, workers=workers) as server, ExitStack() as stack:
        calls = stalled_calls(server.port, workers - 3, stack, timeout=3.0)
        still_serves(server.port, token)
        wait_until(lambda: all(c.done() for c in calls))
        assert {c.exception().code() for c in calls} == {grpc.StatusCode.DEADLINE_EXCEEDED}
        more = stalled_calls(server.port, workers - 3, stack, timeout=None)
        still_serves(server.port, token)
        for c in more:
            c.cancel()
        still_serves(server.port, token)


@sqlite_only
@pytest.mark.parametrize("method", [HEALTH_CHECK, "/ledger.v1.TransactionService/CreateTransaction"])
def test_many_more_request_less_calls_than_workers_do_not_starve_the_server(
    ledger: Ledger, store: SqlStore, token: str, method: str
) -> None:
    """Calls without a deadline that send their headers and never their request: with
    gRPC's threaded server each held a worker, and --workers of them froze the server.
    Here the event loop waits for their requests: eight times --workers of them, on a
    health method and on a ledger one, and every other client is still served."""
    workers = 4
    with serving(ledger, store, workers=workers) as server, ExitStack() as stack:
        calls = stalled_calls(server.port, 8 * workers, stack, timeout=None, method=method)
        time.sleep(0.5)  # give them time to take workers, were they to
        still_serves(server.port, token)
        assert not any(c.done() for c in calls)  # still waiting for their requests
        for c in calls:
            c.cancel()
        still_serves(server.port, token)


@sqlite_only
def test_one_connection_cannot_take_every_call_slot(ledger: Ledger, store: SqlStore, token: str) -> None:
    """Request-less calls hold no thread, but they do hold a call slot until their
    deadline. One connection gets at most --max-streams-per-connection of them, so it
    cannot fill --max-concurrent-rpcs: here 64 calls on one connection, 8 streams each."""
    with (
        serving(ledger, store, max_concurrent_rpcs=32, max_streams_per_connection=8) as server,
        ExitStack() as stack,
    ):
        calls = stalled_calls(server.port, 64, stack, timeout=None, method=CREATE_TRANSACTION)
        time.sleep(0.5)  # time to take call slots, were they to
        still_serves(server.port, token)
        assert not any(c.done() for c in calls)


@sqlite_only
def test_open_watch_and_reflection_streams_hold_no_worker(
    ledger: Ledger, store: SqlStore, token: str
) -> None:
    """Health Watch and reflection need no token and stay open as long as the client
    likes: served on the event loop, four times --workers of each leave every worker free."""
    workers = 4
    with serving(ledger, store, workers=workers) as server, ExitStack() as stack:
        channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
        health = health_pb2_grpc.HealthStub(channel)
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        # Deadlines only so that a server that did tie up workers fails this test, not hangs it.
        watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=20) for _ in range(4 * workers)]
        for watch in watches:
            stack.callback(watch.cancel)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING  # open, and waiting
        streams = []
        for _ in range(4 * workers):
            requests: queue.Queue[reflection_pb2.ServerReflectionRequest | None] = queue.Queue()
            requests.put(reflection_pb2.ServerReflectionRequest(list_services=""))
            stream = reflect.ServerReflectionInfo(iter(requests.get, None), timeout=20)
            stack.callback(requests.put, None)
            stack.callback(stream.cancel)
            assert next(stream).list_services_response.service  # answered; the stream stays open
            streams.append(stream)
        still_serves(server.port, token)


# -- clients that go away mid-call ------------------------------------------------------


def counts(engine: Engine) -> tuple[int, int]:
    """(transactions, stored responses): every applied posting adds one of each."""
    with engine.connect() as conn:
        transactions = conn.execute(text("SELECT COUNT(*) FROM transactions")).scalar_one()
        responses = conn.execute(text("SELECT COUNT(*) FROM idempotency_keys")).scalar_one()
    return int(transactions), int(responses)


def test_calls_abandoned_mid_flight_are_applied_whole_or_not_at_all(
    server: LedgerServer, token: str, engine: Engine
) -> None:
    address = f"127.0.0.1:{server.port}"
    auth: tuple[tuple[str, str | bytes], ...] = (("authorization", f"Bearer {token}"),)
    with LedgerClient(address, token=token, timeout=20.0) as client:
        accounts = [client.create_account(currency="USD").name for _ in range(4)]
        for name in accounts:
            client.credit(name, 1000, "USD")
    before = counts(engine)
    requests: list[transaction_service_pb2.CreateTransactionRequest] = []
    for round_ in range(4):
        channel = grpc.insecure_channel(address)
        stub = transaction_service_pb2_grpc.TransactionServiceStub(channel)
        calls = []
        for i in range(40):
            request = transaction_service_pb2.CreateTransactionRequest(
                transaction=transaction_pb2.Transaction(
                    account=accounts[i % len(accounts)],
                    direction=transaction_pb2.DIRECTION_DEBIT if i % 2 else transaction_pb2.DIRECTION_CREDIT,
                    amount=1 + i % 5,
                    currency="USD",
                ),
                request_id=str(uuid.uuid4()),
            )
            requests.append(request)
            calls.append(stub.CreateTransaction.future(request, timeout=20, metadata=auth))
        if round_ % 2:
            for call in calls[::2]:
                call.cancel()  # abandon some calls, keep the connection
        channel.close()  # then hang up with whatever is still in flight

    def settled() -> bool:  # the server finished what it took on: counts stop moving
        first = counts(engine)
        time.sleep(0.2)
        return counts(engine) == first

    wait_until(settled)
    # Whatever the server did with them, nothing is half-applied: each applied posting
    # has its balanced entries, balances and stored response; the others left no trace.
    assert invariant_violations(engine) == []
    transactions, responses = counts(engine)
    assert transactions - before[0] == responses - before[1] <= len(requests)
    # Each request, sent again with its request_id, lands exactly once in all.
    with grpc.insecure_channel(address) as channel:
        stub = transaction_service_pb2_grpc.TransactionServiceStub(channel)
        for request in requests:
            stub.CreateTransaction(request, timeout=20, metadata=auth)
    expected = {name: 1000 for name in accounts}
    for request in requests:
        sign = -1 if request.transaction.direction == transaction_pb2.DIRECTION_DEBIT else 1
        expected[request.transaction.account] += sign * request.transaction.amount
    with LedgerClient(address, token=token, timeout=20.0) as client:
        assert {name: client.get_account(name).balance.posted for name in accounts} == expected
    assert counts(engine) == (before[0] + len(requests), before[1] + len(requests))
    assert invariant_violations(engine) == []
    still_serves(server.port, token)


def test_a_tenant_at_its_call_limit_is_refused_and_other_tenants_are_served(
    ledger: Ledger, store: SqlStore, token: str, admin: Admin, database_url: str
) -> None:
    """--max-calls-per-tenant 2: of three credits sent at once to a locked account, two
    wait for the lock and the third is refused at once, changing nothing; another tenant
    is served meanwhile; once the two finish, the tenant's slots are free again."""
    admin.create_tenant("other", "Other")
    others = admin.create_token("other", "other-service", ["accounts:read"])[1]
    with (
        serving(ledger, store, max_calls_per_tenant=2) as srv,
        LedgerClient(f"127.0.0.1:{srv.port}", token=token, timeout=30.0, max_attempts=1) as client,
        LedgerClient(f"127.0.0.1:{srv.port}", token=others, timeout=30.0) as other,
    ):
        account = client.create_account(currency="USD").name
        outcomes: queue.Queue[int | LedgerError] = queue.Queue()

        def credit(amount: int) -> None:
            try:
                outcomes.put(client.credit(account, amount, "USD").amount)
            except LedgerError as err:
                outcomes.put(err)

        with holding_account_lock(database_url, account.split("/")[1]):
            calls = [threading.Thread(target=credit, args=(amount,)) for amount in (1, 10, 100)]
            for t in calls:
                t.start()
            refused = outcomes.get(timeout=20)  # the third to arrive, while the others wait
            assert isinstance(refused, LedgerError)
            assert (refused.code, refused.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TENANT_CALL_LIMIT")
            assert refused.error_metadata == {"tenant": "acme", "limit": "2"}
            assert other.list_accounts().accounts == []  # another tenant's calls go on
        for t in calls:
            t.join(30)
        posted = [outcomes.get(timeout=1) for _ in range(2)]
        assert all(isinstance(p, int) for p in posted)
        assert client.get_account(account).balance.posted == sum(posted)  # type: ignore[arg-type]
        assert outcomes.empty()
