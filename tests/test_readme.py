"""The README is executable: its grpcurl walkthrough (JSON bodies parsed with protojson,
as grpcurl does) and its Python example run against a real server, and its
configuration table matches the server's options."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from ledger.v1 import (  # noqa: F401  (registers the services)
    account_service_pb2,
    admin_service_pb2,
    transaction_pb2,
    transaction_service_pb2,
)

from ledger_server.api.server import LedgerServer
from ledger_server.config import OPTIONS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def grpcurl_calls() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(full method name, JSON body, -H headers) of every `grpcurl ... -d` command."""
    calls = []
    for line in README.splitlines():
        if line.startswith("grpcurl") and " -d " in line:
            args = shlex.split(line)
            headers = [args[i + 1].split(": ", 1) for i, a in enumerate(args) if a == "-H"]
            calls.append((args[-1], args[args.index("-d") + 1], [(k, v) for k, v in headers]))
    return calls


def invoke(channel: grpc.Channel, method: str, body: str, headers: list[tuple[str, str]]) -> Any:
    desc = descriptor_pool.Default().FindMethodByName(method.replace("/", "."))
    request = json_format.Parse(body, message_factory.GetMessageClass(desc.input_type)())
    response_cls = message_factory.GetMessageClass(desc.output_type)
    rpc: grpc.UnaryUnaryMultiCallable[Any, Any] = channel.unary_unary(
        f"/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_cls.FromString,
    )
    return rpc(request, timeout=10, metadata=tuple(headers))


def test_grpcurl_walkthrough_runs(server: LedgerServer, token: str) -> None:
    calls = [
        (method, body, [(k, v.replace("$TOKEN", token)) for k, v in headers])
        for method, body, headers in grpcurl_calls()
    ]
    assert [m.rsplit("/", 1)[1] for m, _, _ in calls] == [
        "CreateAccount",
        "CreateTransaction",
        "CreateTransaction",
        "GetAccount",
        "ListTransactions",
        "CreateTransaction",
        "CreateHold",
        "CaptureHold",
        "RefundTransaction",
        "CreateTransaction",
        "CreateAccount",
        "CreateTransfer",
        "GetAccountBalance",
        "VerifyLedger",
        "FreezeAccount",
        "UnfreezeAccount",
        "ListAccountStatusChanges",
        "UpdateAccount",
        "ListAccountUpdates",
        "BatchCreateTransactions",
        "ListTransactionChanges",
        "ListTransactionChanges",  # with start_at_end
    ]
    ids: dict[str, str] = {}  # placeholder -> id, filled from replies as the walkthrough goes

    def run(method: str, body: str, headers: list[tuple[str, str]]) -> Any:
        for placeholder, value in ids.items():
            body = body.replace(placeholder, value)
        return invoke(channel, method, body, headers)

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        replies: list[Any] = []
        for i, call in enumerate(calls):
            if i == 5:  # the walkthrough's deliberate error
                with pytest.raises(grpc.RpcError) as info:
                    run(*call)
                assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "exceeds the available balance 1250" in (info.value.details() or "")
                replies.append(None)
                continue
            replies.append(run(*call))
            if i == 0:
                ids["<ACCOUNT_ID>"] = replies[0].account.name.split("/")[1]
            elif i == 2:
                ids["<DEBIT_ID>"] = replies[2].transaction.name.split("/")[1]
            elif i == 6:
                ids["<HOLD_ID>"] = replies[6].hold.name.split("/")[1]
            elif i == 7:
                ids["<CAPTURE_ID>"] = replies[7].capture.name.split("/")[1]
            elif i == 10:
                ids["<OTHER_ACCOUNT_ID>"] = replies[10].account.name.split("/")[1]
        assert [r.transaction.ending_balance for r in replies[1:3]] == [2500, 1250]
        assert replies[3].account.balance.available == 1250
        assert len(replies[4].transactions) == 2
        assert run(*calls[1]) == replies[1]  # run again: same request_id, same reply
        assert (replies[7].hold.captured_amount, replies[7].capture.ending_balance) == (300, 950)
        assert replies[8].original.refunded_amount == 250
        assert (replies[11].transfer.ending_balance, replies[11].transfer.counterparty_ending_balance) == (
            2100,
            100,
        )
        assert replies[12].posted == -1250
        assert list(replies[13].violations) == []
        assert (replies[14].account.status, replies[14].account.status_reason) == (2, "chargeback review #12")
        assert (replies[15].account.status, replies[15].account.status_reason) == (1, "review closed")
        assert [(c.status, c.reason) for c in replies[16].status_changes] == [
            (1, "review closed"),
            (2, "chargeback review #12"),
        ]
        assert replies[17].account.balance_floor == -500
        (update,) = replies[18].updates
        assert (list(update.changed_fields.paths), update.reason) == (["balance_floor"], "limit review #7")
        assert (update.previous.balance_floor, update.current.balance_floor) == (0, -500)
        refunds = [r.transaction for r in replies[19].results]
        assert [(t.type, t.amount, t.ending_balance) for t in refunds] == [(4, 100, 2200), (4, 300, 2500)]
        assert [(c.type, c.transaction.amount, c.transaction.status) for c in replies[20].changes] == [
            (
                transaction_service_pb2.TRANSACTION_CHANGE_TYPE_CREATED,
                2500,
                transaction_pb2.TRANSACTION_STATUS_POSTED,
            ),
            (
                transaction_service_pb2.TRANSACTION_CHANGE_TYPE_CREATED,
                1250,
                transaction_pb2.TRANSACTION_STATUS_POSTED,
            ),
            (
                transaction_service_pb2.TRANSACTION_CHANGE_TYPE_CREATED,
                500,
                transaction_pb2.TRANSACTION_STATUS_PENDING,
            ),
        ]
        following = invoke(
            channel,
            "ledger.v1.TransactionService/ListTransactionChanges",
            f'{{"page_size": 2, "page_token": "{replies[20].next_page_token}"}}',
            calls[0][2],
        ).changes
        assert [(c.type, c.transaction.status, c.transaction.captured_amount) for c in following] == [
            (
                transaction_service_pb2.TRANSACTION_CHANGE_TYPE_CREATED,
                transaction_pb2.TRANSACTION_STATUS_POSTED,
                0,
            ),
            (
                transaction_service_pb2.TRANSACTION_CHANGE_TYPE_UPDATED,
                transaction_pb2.TRANSACTION_STATUS_CAPTURED,
                300,
            ),
        ]
        after_end = invoke(  # from the end token: the walkthrough has made nothing since
            channel,
            "ledger.v1.TransactionService/ListTransactionChanges",
            f'{{"page_token": "{replies[21].next_page_token}"}}',
            calls[0][2],
        )
        assert (list(replies[21].changes), list(after_end.changes)) == ([], [])
        account = invoke(
            channel,
            "ledger.v1.AccountService/GetAccount",
            f'{{"name": "accounts/{ids["<ACCOUNT_ID>"]}"}}',
            calls[0][2],
        ).account
        assert (account.balance.posted, account.balance.expiring, account.balance.permanent) == (
            2500,
            900,
            1600,
        )


@pytest.mark.parametrize(
    ("code_pattern", "printed"),
    [
        (r"(from ledger_client import LedgerClient.*?)", ["12.50", "StatusCode.FAILED_PRECONDITION 1250"]),
        (r"(import asyncio.*?)", ["10 1000"]),
        (
            r"(from ledger\.v1\.transaction_pb2 import.*?)",
            [
                "500 TRANSACTION_STATUS_POSTED",
                "200 TRANSACTION_STATUS_PENDING",
                "200 TRANSACTION_STATUS_VOIDED",
            ],
        ),
        (r"(import threading.*?)", ["paid in: 250"]),
    ],
    ids=["blocking", "asyncio", "change feed", "watch"],
)
def test_python_example_runs(
    server: LedgerServer,
    token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *,
    code_pattern: str,
    printed: list[str],
) -> None:
    run_example(code_pattern, server, token, tmp_path, monkeypatch)
    assert capsys.readouterr().out.splitlines() == printed


def run_example(
    code_pattern: str, server: LedgerServer, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run the README's Python client example that begins as `code_pattern` says, against
    `server`, in a directory where var/dev-token holds `token` (as after `make run`)."""
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "dev-token").write_text(token + "\n")
    monkeypatch.chdir(tmp_path)
    match = re.search(r"## Python client.*?```python\n" + code_pattern + "```", README, re.S)
    assert match
    code = match.group(1).replace("127.0.0.1:50051", f"127.0.0.1:{server.port}")
    exec(compile(code, "README.md", "exec"), {})


def test_configuration_table_matches_the_options() -> None:
    rows = {
        cells[0].strip("` "): [c.strip("` ") for c in cells]
        for line in README.splitlines()
        if line.startswith("| `--")
        for cells in [line.strip("|").split("|")]
    }
    assert set(rows) == {o.flag for o in OPTIONS}
    for option in OPTIONS:
        default = rows[option.flag][2]
        assert [rows[option.flag][1], "" if default == "(none)" else default] == [option.env, option.default]
