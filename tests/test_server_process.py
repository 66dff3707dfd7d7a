"""The real `ledger-server` process: idempotency survives restarts and kill -9, SIGTERM
drains in-flight calls, every call is logged once."""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ledger.v1 import transaction_pb2
from ledger_client import LedgerClient, LedgerError, transaction_request

from ledger_server.core.admin import Admin
from tests.support import ServerProcess, holding_account_lock


@pytest.fixture
def connect(token: str) -> Callable[[ServerProcess], LedgerClient]:
    return lambda proc: LedgerClient(f"127.0.0.1:{proc.port}", token=token, timeout=30.0)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_request_id_replays_identically_after_restart(
    server_process: ServerProcess, how: signal.Signals, connect: Callable[[ServerProcess], LedgerClient]
) -> None:
    request_id = str(uuid.uuid4())
    with connect(server_process) as client:
        account = client.create_account(currency="USD", request_id=request_id)
        credit_id = str(uuid.uuid4())
        first = client.credit(account.name, 250, "USD", request_id=credit_id)
    server_process.signal(how)
    server_process.wait()
    server_process.start(server_process.port)
    with connect(server_process) as client:
        assert client.create_account(currency="USD", request_id=request_id) == account
        again = client.credit(account.name, 250, "USD", request_id=credit_id)
        assert again.SerializeToString() == first.SerializeToString()
        assert client.get_account(account.name).balance.posted == 250
        with pytest.raises(LedgerError) as info:
            client.credit(account.name, 251, "USD", request_id=credit_id)
        assert info.value.reason == "REQUEST_ID_REUSED"


def test_sigterm_drains_in_flight_calls_and_refuses_new_ones(
    server_process: ServerProcess, connect: Callable[[ServerProcess], LedgerClient]
) -> None:
    with connect(server_process) as client:
        account = client.create_account(currency="USD")
        health = health_pb2_grpc.HealthStub(client.channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        result: list[transaction_pb2.Transaction | Exception] = []
        with holding_account_lock(server_process.database_url, account.name.split("/")[1]):
            call = threading.Thread(target=lambda: result.append(client.credit(account.name, 9, "USD")))
            call.start()
            server_process.wait_for(
                "rpc started", timeout=30, method="/ledger.v1.TransactionService/CreateTransaction"
            )
            server_process.signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(LedgerError) as refused:
                client.get_account(account.name, timeout=0.5)  # no retries within the drain period
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE
            assert refused.value.reason == "SHUTTING_DOWN"
        call.join(30)
    assert server_process.wait() == 0
    assert len(result) == 1 and isinstance(result[0], transaction_pb2.Transaction)
    assert result[0].ending_balance == 9
    lines = [
        (ln["msg"], ln.get("method", "").rsplit("/", 1)[-1], ln.get("code"))
        for ln in server_process.log_lines()
    ]
    # The in-flight call finished after the signal and before the server reported stopped.
    assert (
        lines.index(("shutting down", "", None))
        < lines.index(("rpc", "CreateTransaction", "OK"))
        < lines.index(("stopped", "", None))
    )


def test_one_structured_log_line_per_call(
    server_process: ServerProcess, connect: Callable[[ServerProcess], LedgerClient], token: str, admin: Admin
) -> None:
    reader = admin.create_token("acme", "reader", ["accounts:read"])[1]
    with connect(server_process) as client:
        opened, granted, spent = (str(uuid.uuid4()) for _ in range(3))
        account = client.create_account(currency="USD", request_id=opened)
        credit = client.credit(account.name, 5, "USD", request_id=granted)
        with pytest.raises(LedgerError):
            client.debit(account.name, 6, "USD", request_id=spent)
        client.get_account(account.name)
        items = [
            transaction_request(account=account.name, direction="credit", amount=1, currency="USD")
            for _ in range(2)
        ]
        client.batch_create_transactions(items, independent=True)
        with pytest.raises(LedgerError):
            client.get_account("accounts/" + "x" * 5000)
    with (
        LedgerClient(f"127.0.0.1:{server_process.port}", token="ltk_nope", max_attempts=1) as anonymous,
        pytest.raises(LedgerError),
    ):
        anonymous.get_account(account.name)
    with (
        LedgerClient(f"127.0.0.1:{server_process.port}", token=reader, max_attempts=1) as read_only,
        pytest.raises(LedgerError),
    ):
        read_only.create_account(currency="USD")
    server_process.signal(signal.SIGTERM)
    server_process.wait()
    calls = [line for line in server_process.log_lines() if line["msg"] == "rpc"]
    token_id = token.split("_")[1]
    assert [(c["method"].rsplit("/", 1)[1], c["code"], c.get("tenant"), c.get("token")) for c in calls] == [
        ("CreateAccount", "OK", "acme", token_id),
        ("CreateTransaction", "OK", "acme", token_id),
        ("CreateTransaction", "FAILED_PRECONDITION", "acme", token_id),
        ("GetAccount", "OK", "acme", token_id),
        ("BatchCreateTransactions", "OK", "acme", token_id),
        ("GetAccount", "INVALID_ARGUMENT", "acme", token_id),
        ("GetAccount", "UNAUTHENTICATED", None, None),  # no caller: no tenant, no token
        ("CreateAccount", "PERMISSION_DENIED", "acme", reader.split("_")[1]),  # who tried
    ]
    assert all(isinstance(c["duration_ms"], float) for c in calls)
    # What each call wrote or read and the client's request_id: a refused call names what
    # its request names (a debit names none), a call refused its caller nothing.
    assert [(c.get("resource"), c.get("request_id")) for c in calls] == [
        (account.name, opened),
        (credit.name, granted),
        (None, spent),
        (account.name, None),
        (None, None),
        ("accounts/" + "x" * 91 + "...", None),  # what a request names, clipped
        (None, None),
        (None, None),
    ]
    # The account a posting is for, posted or refused; a batch's size.
    assert [(c.get("account"), c.get("items")) for c in calls] == [
        (None, None),
        (account.name, None),
        (account.name, None),
        (None, None),
        (None, 2),
        (None, None),
        (None, None),
        (None, None),
    ]
    # The secret is all after the id: it may hold "_" itself (base64url), even start with one.
    secret = token.split("_", 2)[2]
    assert not any(secret in line for line in server_process.log_path.read_text().splitlines())


def test_start_up_objects_are_frozen_out_of_the_collectors_sight(server_process: ServerProcess) -> None:
    """Else every full garbage collection walks them all (cli._freeze_start_up_objects)."""
    line = server_process.wait_for("start-up objects frozen", timeout=30)
    assert line["objects"] > 10_000
