"""The bank workload's client: one process, its own channels to every server, random
transfers, holds (captured or voided) and full reads, every mutation with a request_id
that is the same on every retry. It records each mutation's request and what became of
it (acknowledged, refused, or never answered) in a JSON file for the harness."""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from ledger.v1 import (
    account_service_pb2,
    admin_service_pb2,
    transaction_pb2,
    transaction_service_pb2,
)

#: Retried with the same request_id (and, for mutations, the same bytes) on another
#: server: the call may or may not have been applied.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,  # a server bug: counted as an anomaly, but retried
        grpc.StatusCode.UNKNOWN,  # likewise
    }
)
SUSPICIOUS = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})

tx_pb = transaction_service_pb2
#: method -> (service, request class, response class)
METHODS: dict[str, tuple[str, type[Message], type[Message]]] = {
    "CreateTransaction": ("tx", tx_pb.CreateTransactionRequest, tx_pb.CreateTransactionResponse),
    "CreateTransfer": ("tx", tx_pb.CreateTransferRequest, tx_pb.CreateTransferResponse),
    "CreateHold": ("tx", tx_pb.CreateHoldRequest, tx_pb.CreateHoldResponse),
    "CaptureHold": ("tx", tx_pb.CaptureHoldRequest, tx_pb.CaptureHoldResponse),
    "VoidHold": ("tx", tx_pb.VoidHoldRequest, tx_pb.VoidHoldResponse),
    "GetTransaction": ("tx", tx_pb.GetTransactionRequest, tx_pb.GetTransactionResponse),
    "ListTransactions": ("tx", tx_pb.ListTransactionsRequest, tx_pb.ListTransactionsResponse),
    "CreateAccount": (
        "accounts",
        account_service_pb2.CreateAccountRequest,
        account_service_pb2.CreateAccountResponse,
    ),
    "GetAccount": ("accounts", account_service_pb2.GetAccountRequest, account_service_pb2.GetAccountResponse),
    "ListAccounts": (
        "accounts",
        account_service_pb2.ListAccountsRequest,
        account_service_pb2.ListAccountsResponse,
    ),
    "VerifyLedger": (
        "admin",
        admin_service_pb2.VerifyLedgerRequest,
        admin_service_pb2.VerifyLedgerResponse,
    ),
}
CHANNEL_OPTIONS = [
    # A restarted server is reconnected within a second, not after gRPC's default
    # reconnect backoff (up to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),  # every retry is ours, and counted
]

# Indexes of the shared counters (amounts in minor units, only ever increased).
CAP_STARTED, CAP_ACKED, HOLD_STARTED, HOLD_CREATED_ACKED, HOLD_RESOLVE_STARTED, HOLD_RESOLVED_ACKED = range(6)
N_COUNTERS = 6
COUNTER_INDEX = {
    "CAP_STARTED": CAP_STARTED,
    "CAP_ACKED": CAP_ACKED,
    "HOLD_STARTED": HOLD_STARTED,
    "HOLD_CREATED_ACKED": HOLD_CREATED_ACKED,
    "HOLD_RESOLVE_STARTED": HOLD_RESOLVE_STARTED,
    "HOLD_RESOLVED_ACKED": HOLD_RESOLVED_ACKED,
}
MAX_OPEN_HOLDS = 4


@dataclass
class Outcome:
    """What became of one logical call: `ok` (response bytes), `refused` (a final
    status: not applied), or `unknown` (never answered within the budget)."""

    status: str
    response: bytes = b""
    code: str = ""
    reason: str = ""
    message: str = ""
    attempts: int = 0
    codes: list[str] = field(default_factory=list)


def reason_of(error: grpc.RpcError) -> str:
    try:
        status = rpc_status.from_call(error)
    except Exception:
        return ""
    if status is None:
        return ""
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


SERVICES = {
    "tx": "ledger.v1.TransactionService",
    "accounts": "ledger.v1.AccountService",
    "admin": "ledger.v1.AdminService",
}


class Caller:
    """Calls with bounded retries: each attempt has its own deadline, goes to the next
    server in turn, and backs off with jitter. Requests and responses travel as raw
    bytes: every retry sends exactly the same bytes, and a reply is kept exactly as the
    server sent it (so that replays can be compared byte for byte)."""

    def __init__(
        self,
        addresses: Sequence[str],
        token: str,
        *,
        attempt_timeout: float,
        budget: float,
        max_attempts: int,
        rng: random.Random,
    ) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.attempt_timeout = attempt_timeout
        self.budget = budget
        self.max_attempts = max_attempts
        self.rng = rng
        self.channels = [grpc.insecure_channel(a, options=CHANNEL_OPTIONS) for a in addresses]
        self.next_server = rng.randrange(len(addresses))
        self.codes: Counter[str] = Counter()  # every failed attempt's code
        self.suspicious: list[str] = []

    def close(self) -> None:
        for c in self.channels:
            c.close()

    def call(
        self,
        method: str,
        request: Message | bytes,
        *,
        budget: float | None = None,
        max_attempts: int | None = None,
    ) -> Outcome:
        service, request_type, _ = METHODS[method]
        data = request if isinstance(request, bytes) else request.SerializeToString(deterministic=True)
        path = f"/{SERVICES[service]}/{method}"
        limit = self.max_attempts if max_attempts is None else max_attempts
        deadline = time.monotonic() + (self.budget if budget is None else budget)
        outcome = Outcome("unknown")
        while outcome.attempts < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            rpc: grpc.UnaryUnaryMultiCallable[bytes, bytes]
            rpc = self.channels[self.next_server].unary_unary(path)  # bytes in, bytes out
            outcome.attempts += 1
            try:
                response = rpc(data, timeout=min(self.attempt_timeout, remaining), metadata=self.metadata)
            except grpc.RpcError as error:
                code: grpc.StatusCode = error.code()
                outcome.code, outcome.reason = code.name, reason_of(error)
                outcome.message = str(error.details())
                outcome.codes.append(code.name + (f"/{outcome.reason}" if outcome.reason else ""))
                self.codes[outcome.codes[-1]] += 1
                if code in SUSPICIOUS:
                    self.suspicious.append(f"{method}: {code.name} {outcome.reason}: {outcome.message}")
                if code not in RETRYABLE:
                    outcome.status = "refused"
                    return outcome
                # Next server, capped exponential backoff with full jitter.
                self.next_server = (self.next_server + 1) % len(self.channels)
                cap = min(1.0, 0.05 * 2 ** min(outcome.attempts, 10))
                time.sleep(min(max(0.0, deadline - time.monotonic()), self.rng.uniform(0, cap)))
                continue
            assert isinstance(response, bytes), request_type
            outcome.status = "ok"
            outcome.response = response
            outcome.code = outcome.reason = outcome.message = ""
            return outcome
        return outcome


def captured(method: str, response: bytes) -> transaction_pb2.Transaction:
    """The CAPTURE transaction of an acknowledged capture, made by either method."""
    if method == "CaptureHold":
        return tx_pb.CaptureHoldResponse.FromString(response).capture
    return tx_pb.CreateTransactionResponse.FromString(response).transaction


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


@dataclass(frozen=True)
class WorkerConfig:
    index: int
    addresses: list[str]
    token: str
    accounts: list[str]
    currency: str
    initial_total: int
    ops: int
    seconds: float
    seed: int
    out_path: str
    attempt_timeout: float
    call_budget: float
    max_attempts: int


class Counters:
    """Monotonic amounts shared by all workers, read before and after each full read to
    bound what the read may see."""

    def __init__(self, array: SynchronizedArray[int]) -> None:
        self.array = array

    def add(self, **amounts: int) -> None:
        with self.array.get_lock():
            for name, amount in amounts.items():
                self.array[COUNTER_INDEX[name]] += amount

    def snapshot(self) -> list[int]:
        with self.array.get_lock():
            return [int(self.array[i]) for i in range(N_COUNTERS)]


@dataclass
class OpenHold:
    name: str
    account: str
    amount: int


class Worker:
    def __init__(self, cfg: WorkerConfig, counters: Counters) -> None:
        self.cfg = cfg
        self.counters = counters
        self.rng = random.Random(cfg.seed * 1000 + cfg.index)
        self.caller = Caller(
            cfg.addresses,
            cfg.token,
            attempt_timeout=cfg.attempt_timeout,
            budget=cfg.call_budget,
            max_attempts=cfg.max_attempts,
            rng=self.rng,
        )
        self.records: list[dict[str, Any]] = []
        self.open_holds: list[OpenHold] = []
        self.anomalies: list[str] = []
        self.ops: Counter[str] = Counter()
        self.reads = Counter[str]()

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        end = time.monotonic() + self.cfg.seconds
        done = 0
        while done < self.cfg.ops and time.monotonic() < end:
            r = self.rng.random()
            if self.open_holds and (r < 0.2 or len(self.open_holds) >= MAX_OPEN_HOLDS):
                self.resolve_hold()
            elif r < 0.5:
                self.transfer()
            elif r < 0.7:
                self.hold()
            elif r < 0.95:
                self.read_all()
            else:
                self.read_each()
            done += 1
        while self.open_holds:  # leave nothing pending that we could resolve
            self.resolve_hold()

    def mutate(self, op: str, method: str, request: Message, **facts: Any) -> Outcome:
        data = request.SerializeToString(deterministic=True)
        outcome = self.caller.call(method, data)
        self.ops[f"{op}:{outcome.status}"] += 1
        record = {
            "op": op,
            "method": method,
            "worker": self.cfg.index,
            "request_id": getattr(request, "request_id"),  # noqa: B009
            "request": b64(data),
            **asdict(outcome),
            **facts,
        }
        record["response"] = b64(outcome.response)
        self.records.append(record)
        return outcome

    # -- operations --------------------------------------------------------------------

    def transfer(self) -> None:
        source, destination = self.rng.sample(self.cfg.accounts, 2)
        # Mostly affordable amounts; sometimes more than any account has, to meet the floor.
        big = self.rng.random() < 0.1
        amount = self.rng.randint(1, self.cfg.initial_total // 3) if big else self.rng.randint(1, 50_000)
        request = tx_pb.CreateTransferRequest(
            transfer=transaction_pb2.Transaction(
                account=source,
                counterparty_account=destination,
                amount=amount,
                currency=self.cfg.currency,
                description="bank test transfer",
            ),
            request_id=str(uuid.uuid4()),
        )
        outcome = self.mutate("transfer", "CreateTransfer", request, account=source, amount=amount)
        if outcome.status == "ok":
            moved = tx_pb.CreateTransferResponse.FromString(outcome.response).transfer
            if moved.amount != amount or moved.ending_balance < 0 or moved.counterparty_ending_balance < 0:
                self.anomalies.append(f"transfer reply {moved.name} looks wrong: {moved}")
        elif outcome.status == "refused" and outcome.reason != "INSUFFICIENT_FUNDS":
            self.anomalies.append(f"transfer refused unexpectedly: {outcome.code} {outcome.reason}")

    def hold(self) -> None:
        account = self.rng.choice(self.cfg.accounts)
        amount = self.rng.randint(1, 5_000) if self.rng.random() < 0.95 else self.cfg.initial_total
        request = tx_pb.CreateHoldRequest(
            hold=transaction_pb2.Transaction(
                account=account, amount=amount, currency=self.cfg.currency, description="bank test hold"
            ),
            request_id=str(uuid.uuid4()),
        )
        self.counters.add(HOLD_STARTED=amount)
        outcome = self.mutate("hold", "CreateHold", request, account=account, amount=amount)
        if outcome.status == "ok":
            self.counters.add(HOLD_CREATED_ACKED=amount)
            hold = tx_pb.CreateHoldResponse.FromString(outcome.response).hold
            if hold.status != transaction_pb2.TRANSACTION_STATUS_PENDING or hold.amount != amount:
                self.anomalies.append(f"hold reply {hold.name} looks wrong: {hold}")
            self.open_holds.append(OpenHold(hold.name, account, amount))
        elif outcome.status == "refused":
            self.counters.add(HOLD_RESOLVED_ACKED=amount)  # never pending
            if outcome.reason != "INSUFFICIENT_FUNDS":
                self.anomalies.append(f"hold refused unexpectedly: {outcome.code} {outcome.reason}")
        # unknown: possibly pending until the harness resolves it

    def resolve_hold(self) -> None:
        held = self.open_holds.pop(self.rng.randrange(len(self.open_holds)))
        facts = {"account": held.account, "hold": held.name, "hold_amount": held.amount}
        if self.rng.random() < 0.6:
            amount = held.amount if self.rng.random() < 0.5 else self.rng.randint(1, held.amount)
            self.counters.add(HOLD_RESOLVE_STARTED=held.amount, CAP_STARTED=amount)
            method, request = self._capture_request(held, amount)
            outcome = self.mutate("capture", method, request, amount=amount, **facts)
            if outcome.status == "ok":
                self.counters.add(HOLD_RESOLVED_ACKED=held.amount, CAP_ACKED=amount)
                capture = captured(method, outcome.response)
                if capture.amount != amount or capture.related_transaction != held.name:
                    self.anomalies.append(f"capture reply of {held.name} looks wrong: {capture}")
        else:
            self.counters.add(HOLD_RESOLVE_STARTED=held.amount)
            request = tx_pb.VoidHoldRequest(name=held.name, request_id=str(uuid.uuid4()))
            outcome = self.mutate("void", "VoidHold", request, amount=0, **facts)
            if outcome.status == "ok":
                self.counters.add(HOLD_RESOLVED_ACKED=held.amount)
        if outcome.status == "refused":  # nothing should refuse resolving our own pending hold
            self.anomalies.append(
                f"{request.DESCRIPTOR.name} of {held.name} refused: {outcome.code} {outcome.reason} "
                f"{outcome.message}"
            )

    def _capture_request(self, held: OpenHold, amount: int) -> tuple[str, Message]:
        """CaptureHold, or half the time a CreateTransaction of type CAPTURE (what a batch
        item is), which must be as durable and idempotent."""
        request_id = str(uuid.uuid4())
        if self.rng.random() < 0.5:
            return "CaptureHold", tx_pb.CaptureHoldRequest(
                name=held.name, amount=amount, description="bank test capture", request_id=request_id
            )
        capture = transaction_pb2.Transaction(
            type=transaction_pb2.TRANSACTION_TYPE_CAPTURE,
            related_transaction=held.name,
            amount=amount,
            description="bank test capture",
        )
        return "CreateTransaction", tx_pb.CreateTransactionRequest(transaction=capture, request_id=request_id)

    def read_all(self) -> None:
        """One ListAccounts: a single statement, so one snapshot of every balance. Its sums
        must lie within what acknowledged and in-flight operations allow."""
        before = self.counters.snapshot()
        outcome = self.caller.call("ListAccounts", account_service_pb2.ListAccountsRequest(page_size=1000))
        after = self.counters.snapshot()
        self.reads[f"list:{outcome.status}"] += 1
        if outcome.status != "ok":
            return
        accounts = account_service_pb2.ListAccountsResponse.FromString(outcome.response).accounts
        names = sorted(a.name for a in accounts)
        if names != sorted(self.cfg.accounts):
            self.anomalies.append(
                f"ListAccounts returned {len(names)} accounts, not the {len(self.cfg.accounts)}"
            )
            return
        self.check_floors(accounts)
        posted = sum(a.balance.posted for a in accounts)
        pending = sum(a.balance.pending for a in accounts)
        low, high = self.cfg.initial_total - after[CAP_STARTED], self.cfg.initial_total - before[CAP_ACKED]
        if not low <= posted <= high:
            self.anomalies.append(f"read: posted total {posted} outside [{low}, {high}]")
        low = before[HOLD_CREATED_ACKED] - after[HOLD_RESOLVE_STARTED]
        high = after[HOLD_STARTED] - before[HOLD_RESOLVED_ACKED]
        if not low <= pending <= high:
            self.anomalies.append(f"read: pending total {pending} outside [{low}, {high}]")

    def read_each(self) -> None:
        """GetAccount of every account: not one snapshot, so only per-account checks."""
        accounts = []
        for name in self.cfg.accounts:
            outcome = self.caller.call("GetAccount", account_service_pb2.GetAccountRequest(name=name))
            self.reads[f"get:{outcome.status}"] += 1
            if outcome.status != "ok":
                return
            accounts.append(account_service_pb2.GetAccountResponse.FromString(outcome.response).account)
        self.check_floors(accounts)

    def check_floors(self, accounts: Sequence[Any]) -> None:
        for a in accounts:
            b = a.balance
            if b.available < a.balance_floor or b.pending < 0 or b.available != b.posted - b.pending:
                self.anomalies.append(
                    f"read: {a.name} posted {b.posted} pending {b.pending} available {b.available} "
                    f"floor {a.balance_floor}"
                )

    def dump(self, error: str = "") -> None:
        result = {
            "index": self.cfg.index,
            "records": self.records,
            "anomalies": self.anomalies + [f"server error: {s}" for s in self.caller.suspicious],
            "ops": dict(self.ops),
            "reads": dict(self.reads),
            "attempt_codes": dict(self.caller.codes),
            "error": error,
        }
        with open(self.cfg.out_path, "w") as f:
            json.dump(result, f)


def run_worker(cfg: WorkerConfig, array: SynchronizedArray[int]) -> None:
    """The entry point of a worker process."""
    worker = Worker(cfg, Counters(array))
    error = ""
    try:
        worker.run()
    except Exception as exc:  # recorded; the harness reports it as an anomaly
        error = f"{type(exc).__name__}: {exc}"
    finally:
        worker.dump(error)
        worker.caller.close()
