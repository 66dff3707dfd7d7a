"""The bank test's final phase: learn the outcome of every request that was never
answered (by sending it again, same bytes, same request_id), then check the ledger
against what the clients were told."""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.v1 import account_pb2, account_service_pb2, admin_service_pb2, transaction_pb2
from ledger.v1 import transaction_service_pb2 as tx_pb

from chaos.worker import Caller, b64, captured, unb64

TT = transaction_pb2


@dataclass
class Hold:
    name: str
    account: str
    amount: int
    status: str = "pending"  # pending | captured | voided
    captured: int = 0
    capture_name: str = ""


@dataclass
class Final:
    """What the final phase found and did."""

    anomalies: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def resolve_unknown(caller: Caller, records: list[dict[str, Any]], budget: float, final: Final) -> None:
    """Send every never-answered mutation again until it answers. Creations first, so
    that a hold exists before anything resolves it (workers never resolve a hold they
    are unsure of, so this order is only for clarity)."""
    order = {"hold": 0, "transfer": 1, "capture": 2, "void": 3}
    unknown = sorted((r for r in records if r["status"] == "unknown"), key=lambda r: order[r["op"]])
    late: Counter[str] = Counter()
    for record in unknown:
        outcome = caller.call(record["method"], unb64(record["request"]), budget=budget, max_attempts=1000)
        record.update(
            status=outcome.status,
            response=b64(outcome.response),
            code=outcome.code,
            reason=outcome.reason,
            late=True,
            late_attempts=outcome.attempts,
        )
        late[f"{record['op']}:{outcome.status}"] += 1
        if outcome.status == "unknown":
            final.anomalies.append(
                f"{record['method']} {record['request_id']} still unanswered after {budget:.0f}s "
                f"({outcome.code} {outcome.reason})"
            )
        elif outcome.status == "refused" and record["op"] in ("capture", "void"):
            final.anomalies.append(
                f"late {record['method']} {record['request_id']} of {record['hold']} refused: "
                f"{outcome.code} {outcome.reason} {outcome.message}"
            )
        elif outcome.status == "refused" and outcome.reason != "INSUFFICIENT_FUNDS":
            final.anomalies.append(
                f"late {record['method']} {record['request_id']} refused: {outcome.code} {outcome.reason}"
            )
    final.stats["unknown_resolved"] = dict(late)


def list_accounts(caller: Caller) -> list[account_pb2.Account]:
    outcome = caller.call("ListAccounts", account_service_pb2.ListAccountsRequest(page_size=1000), budget=60)
    if outcome.status != "ok":
        raise RuntimeError(f"ListAccounts failed: {outcome.code} {outcome.reason} {outcome.message}")
    return list(account_service_pb2.ListAccountsResponse.FromString(outcome.response).accounts)


def list_transactions(caller: Caller) -> list[transaction_pb2.Transaction]:
    found: list[transaction_pb2.Transaction] = []
    token = ""
    for _ in range(100_000):
        request = tx_pb.ListTransactionsRequest(page_size=1000, page_token=token)
        outcome = caller.call("ListTransactions", request, budget=60)
        if outcome.status != "ok":
            raise RuntimeError(f"ListTransactions failed: {outcome.code} {outcome.reason} {outcome.message}")
        page = tx_pb.ListTransactionsResponse.FromString(outcome.response)
        found.extend(page.transactions)
        if not page.next_page_token:
            return found
        token = page.next_page_token
    raise RuntimeError("ListTransactions did not end")


@dataclass
class Model:
    """The ledger as the clients were told it is: built from acknowledged replies only."""

    credits: dict[str, str]  # account -> its funding credit
    initial: int
    posted: dict[str, int] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    transfers: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    out: int = 0  # captured: money that left the accounts

    def expected_names(self) -> set[str]:
        names = set(self.credits.values()) | set(self.transfers) | set(self.holds)
        return names | {h.capture_name for h in self.holds.values() if h.capture_name}


def build_model(records: list[dict[str, Any]], credits: dict[str, str], initial: int, final: Final) -> Model:
    model = Model(credits, initial, posted=dict.fromkeys(credits, initial))
    for r in records:
        if r["status"] == "ok" and r["op"] == "transfer":
            moved = tx_pb.CreateTransferResponse.FromString(unb64(r["response"])).transfer
            model.posted[moved.account] -= moved.amount
            model.posted[moved.counterparty_account] += moved.amount
            model.transfers[moved.name] = (moved.account, moved.counterparty_account, moved.amount)
        elif r["status"] == "ok" and r["op"] == "hold":
            created = tx_pb.CreateHoldResponse.FromString(unb64(r["response"])).hold
            model.holds[created.name] = Hold(created.name, created.account, created.amount)
    for r in records:
        if r["status"] != "ok" or r["op"] not in ("capture", "void"):
            continue
        hold = model.holds.get(r["hold"])
        if hold is None:
            final.anomalies.append(f"{r['op']} {r['request_id']} acknowledged for {r['hold']}, not created")
            continue
        if hold.status != "pending":
            final.anomalies.append(f"{hold.name} resolved twice ({hold.status}, then {r['op']})")
        if r["op"] == "capture":
            capture = captured(r["method"], unb64(r["response"]))
            hold.status, hold.captured, hold.capture_name = "captured", capture.amount, capture.name
            model.posted[hold.account] -= capture.amount
            model.out += capture.amount
        else:
            hold.status = "voided"
    return model


def check_ledger(
    caller: Caller, records: list[dict[str, Any]], model: Model, replay_sample: int, final: Final
) -> None:
    """Every check that must hold once every outcome is known."""
    posted_total = check_balances(caller, model, final)
    cleanup_holds(caller, model, final)
    listed = check_transactions(caller, model, final)
    replayed, differ = check_replays(caller, records, replay_sample, final)
    verified = verify_ledger(caller, final)
    final.stats.update(
        initial_total=model.initial * len(model.credits),
        posted_total=posted_total,
        captured_out=model.out,
        holds={s: sum(1 for h in model.holds.values() if h.status == s) for s in ("captured", "voided")},
        transactions_listed=len(listed),
        transactions_by_type=dict(Counter(TT.TransactionType.Name(t.type) for t in listed)),
        replayed=replayed,
        replays_differing=differ,
        verify_ledger=verified,
    )


def check_balances(caller: Caller, model: Model, final: Final) -> int:
    """Each balance exactly as the acknowledged (and late-resolved) operations make it;
    the total conserved. Returns the posted total."""
    bad = final.anomalies.append
    accounts = {a.name: a for a in list_accounts(caller)}
    if set(accounts) != set(model.credits):
        bad(f"the tenant has accounts {sorted(accounts)}, expected {sorted(model.credits)}")
    for name, account in accounts.items():
        b = account.balance
        want_posted = model.posted.get(name)
        want_pending = sum(
            h.amount for h in model.holds.values() if h.status == "pending" and h.account == name
        )
        if b.posted != want_posted:
            bad(f"{name} posted {b.posted}, expected {want_posted} from acknowledged operations")
        if b.pending != want_pending:
            bad(f"{name} pending {b.pending}, expected {want_pending} from the holds left pending")
        if b.available < account.balance_floor:
            bad(f"{name} available {b.available} below its floor {account.balance_floor}")
    posted_total = sum(a.balance.posted for a in accounts.values())
    initial_total = model.initial * len(model.credits)
    if posted_total + model.out != initial_total:
        bad(f"money not conserved: posted {posted_total} + captured {model.out} != {initial_total}")
    return posted_total


def cleanup_holds(caller: Caller, model: Model, final: Final) -> None:
    """Holds still pending are in-doubt ones that resolved late: void them; then nothing
    at all may be pending, and no posted balance may have moved."""
    pending = [h for h in model.holds.values() if h.status == "pending"]
    for hold in pending:
        request = tx_pb.VoidHoldRequest(name=hold.name, request_id=str(uuid.uuid4()))
        outcome = caller.call("VoidHold", request, budget=60)
        if outcome.status != "ok":
            final.anomalies.append(f"cleanup VoidHold of {hold.name}: {outcome.status} {outcome.code}")
        else:
            hold.status = "voided"
    for a in list_accounts(caller):
        if a.balance.pending != 0 or a.balance.posted != model.posted.get(a.name):
            final.anomalies.append(
                f"after cleanup {a.name} posted {a.balance.posted} pending {a.balance.pending}"
            )
    final.stats["holds_voided_in_cleanup"] = len(pending)


def check_transactions(caller: Caller, model: Model, final: Final) -> list[transaction_pb2.Transaction]:
    """Every acknowledged transaction exactly once, as acknowledged; nothing else."""
    bad = final.anomalies.append
    listed = list_transactions(caller)
    for name, n in Counter(t.name for t in listed).items():
        if n > 1:
            bad(f"{name} listed {n} times")
    by_name = {t.name: t for t in listed}
    expected = model.expected_names()
    for name in sorted(expected - set(by_name)):
        bad(f"acknowledged {name} is missing from ListTransactions")
    for name in sorted(set(by_name) - expected):
        t = by_name[name]
        bad(f"unexpected transaction {name}: {TT.TransactionType.Name(t.type)} {t.amount} on {t.account}")
    for name, want in model.transfers.items():
        moved = by_name.get(name)
        if moved is not None and (moved.account, moved.counterparty_account, moved.amount) != want:
            bad(f"transfer {name} stored as {moved.account}->{moved.counterparty_account} {moved.amount}")
    for hold in model.holds.values():
        held = by_name.get(hold.name)
        if held is None:
            continue
        captured = hold.status == "captured"
        want_status = TT.TRANSACTION_STATUS_CAPTURED if captured else TT.TRANSACTION_STATUS_VOIDED
        if held.status != want_status or held.captured_amount != hold.captured:
            bad(
                f"hold {hold.name} is {TT.TransactionStatus.Name(held.status)} captured "
                f"{held.captured_amount}, expected {hold.status} {hold.captured}"
            )
        capture = by_name.get(hold.capture_name)
        if capture is not None and (capture.related_transaction, capture.amount) != (
            hold.name,
            hold.captured,
        ):
            bad(f"capture {capture.name} relates to {capture.related_transaction} for {capture.amount}")
    captured_listed = sum(t.amount for t in listed if t.type == TT.TRANSACTION_TYPE_CAPTURE)
    if captured_listed != model.out:
        bad(f"CAPTURE transactions sum to {captured_listed}, acknowledged captures to {model.out}")
    return listed


def check_replays(
    caller: Caller, records: list[dict[str, Any]], sample_size: int, final: Final
) -> tuple[int, int]:
    """The same request bytes with the same request_id answer the very same bytes."""
    acked = [r for r in records if r["status"] == "ok"]
    sample = acked if sample_size < 0 else random.Random(7).sample(acked, min(sample_size, len(acked)))
    differ = 0
    for r in sample:
        outcome = caller.call(r["method"], unb64(r["request"]), budget=60)
        if outcome.status != "ok" or outcome.response != unb64(r["response"]):
            differ += 1
            if differ <= 10:
                final.anomalies.append(
                    f"replay of {r['method']} {r['request_id']} answered {outcome.status} {outcome.code} "
                    f"{outcome.reason}, not the original bytes"
                )
    return len(sample), differ


def verify_ledger(caller: Caller, final: Final) -> dict[str, int]:
    """The ledger's own audit (AdminService.VerifyLedger)."""
    outcome = caller.call("VerifyLedger", admin_service_pb2.VerifyLedgerRequest(), budget=120)
    if outcome.status != "ok":
        final.anomalies.append(f"VerifyLedger failed: {outcome.code} {outcome.reason} {outcome.message}")
        return {}
    report = admin_service_pb2.VerifyLedgerResponse.FromString(outcome.response)
    for v in report.violations:
        final.anomalies.append(f"VerifyLedger: {v.check}: {v.resource}: {v.detail}")
    return {"accounts": report.accounts_checked, "transactions": report.transactions_checked}


def scan_server_logs(paths: list[Path], final: Final) -> None:
    """Calls that ended INTERNAL/UNKNOWN, and unexpected failures, are findings; error
    lines the faults explain (a commit that failed while Postgres restarted) are counted."""
    codes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for path in paths:
        if not path.exists():
            continue
        with path.open("rb") as f:
            for raw in f:
                if not raw.startswith(b"{"):
                    continue
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if line.get("msg") == "rpc":
                    codes[str(line.get("code"))] += 1
                    if line.get("code") in ("INTERNAL", "UNKNOWN"):
                        what = f"{line.get('method')} answered {line.get('code')}"
                        final.anomalies.append(f"{path.name}: {what}")
                if line.get("level") in ("error", "critical"):
                    errors[str(line.get("msg"))] += 1
                    if line.get("msg") == "unexpected failure":
                        final.anomalies.append(
                            f"{path.name}: unexpected failure in {line.get('method')}: "
                            f"{str(line.get('exception', ''))[-600:]}"
                        )
    final.stats["server_rpc_codes"] = dict(codes)
    final.stats["server_error_lines"] = dict(errors)
