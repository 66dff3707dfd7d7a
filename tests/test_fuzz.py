"""Fuzz every request message of every ledger.v1 RPC over a real socket.

The RPCs are discovered from the service descriptors of every ledger.v1 file, so a new
method or service is fuzzed without touching this file. Requests are built from the input
message descriptor, field by field and recursively: extreme integers, unknown enum
numbers, empty / huge / unicode / control-character strings, malformed and real resource
names, bad dates, crowded maps, forged and truncated page tokens, good and bad request
ids. Half the examples instead start from a valid request sent while building the test's
ledger (so the success paths run too) and mutate a few of its fields.

Every call must: never answer INTERNAL or UNKNOWN (nor UNAVAILABLE: the database is up
and calls come one at a time); answer every error with a code of the ledger's error
vocabulary and a google.rpc.ErrorInfo of domain ledger.v1 (only gRPC's own
RESOURCE_EXHAUSTED may come without); when refused -- and for any Get or List -- leave
every row of every table as it was; when it succeeded with a request_id, replay
byte-identically on a retry and change nothing more. After every call health is SERVING
and the ledger's invariants hold.

LEDGER_FUZZ_EXAMPLES sets the examples per RPC and database. Unset, the suite runs 25,
derandomized (the same examples every run); set (say by a `make chaos`), it runs that many
random ones and Hypothesis keeps failures in .hypothesis/ to replay them first. Requests
that found bugs are replayed on every run by test_fuzz_regression."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import importlib
import logging
import operator
import os
import pkgutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from string import Template
from typing import Any

import grpc
import ledger.v1
import pytest
from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger.v1 import account_pb2, account_service_pb2, error_reason_pb2, transaction_pb2
from ledger.v1 import transaction_service_pb2 as tx_service_pb2
from sqlalchemy import Engine, MetaData, Table, select, update

from ledger_server.api.errors import CODES
from ledger_server.api.server import LEDGER_SERVICES, LedgerServer
from ledger_server.store.schema import accounts
from tests.support import invariant_violations, until_our_deadline

CHAOS = "LEDGER_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("LEDGER_FUZZ_EXAMPLES", "25"))
CALL_TIMEOUT = 30.0
WATCH_SECONDS = 0.5  # how long a stream of responses that stays open (a watch) is read
DOMAIN = "ledger.v1"
MAX_DEPTH = 3  # request -> transaction -> create_time -> seconds

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT32_MAX, UINT64_MAX = 2**32 - 1, 2**64 - 1

# The codes the ledger answers errors with (its domain errors' codes), plus gRPC's own
# RESOURCE_EXHAUSTED (message above the size limit, too many calls in flight).
PROPER_ERRORS = {*CODES.values(), grpc.StatusCode.RESOURCE_EXHAUSTED}
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
REASONS = {
    value.name.removeprefix("ERROR_REASON_")
    for value in error_reason_pb2.ErrorReason.DESCRIPTOR.values
    if value.name not in ("ERROR_REASON_UNSPECIFIED", "ERROR_REASON_INTERNAL")
}
# AIP-131/132 standard methods: they only read.
READ_ONLY_PREFIXES = ("Get", "List", "BatchGet", "Search")

Metadata = tuple[tuple[str, str], ...]
Path = tuple[FieldDescriptor, ...]


# -- discovery -----------------------------------------------------------------------------


def ledger_services() -> list[ServiceDescriptor]:
    """Every service declared in a ledger.v1 file (the services of each *_pb2 module)."""
    found: dict[str, ServiceDescriptor] = {}
    for info in pkgutil.iter_modules(ledger.v1.__path__, f"{ledger.v1.__name__}."):
        if info.name.endswith("_pb2"):
            for service in importlib.import_module(info.name).DESCRIPTOR.services_by_name.values():
                found[service.full_name] = service
    return [found[name] for name in sorted(found)]


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


SERVICES = ledger_services()
METHODS = [method for service in SERVICES for method in service.methods]
METHODS_BY_PATH = {path_of(m): m for m in METHODS}


def test_every_served_ledger_service_is_fuzzed() -> None:
    assert METHODS, "no ledger.v1 RPCs discovered"
    assert set(LEDGER_SERVICES) <= {s.full_name for s in SERVICES}


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def call_metadata(token: str) -> Metadata:
    """The metadata sent with every call: the one place credentials come from (the
    suite's admin-scope token of tenant `acme`)."""
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def fuzz_channel(server: LedgerServer) -> Iterator[grpc.Channel]:
    # No client-side size limits: the server's own limits are under test.
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=options) as channel:
        yield channel


Snapshot = dict[str, tuple[int, str]]


class Rows:
    """Digests of every row of every table of the database, as reflected (so a table a
    migration adds is covered too)."""

    def __init__(self, engine: Engine) -> None:
        meta = MetaData()
        meta.reflect(bind=engine)
        self.engine = engine
        self.tables: list[Table] = list(meta.sorted_tables)

    def __repr__(self) -> str:
        return f"Rows({len(self.tables)} tables)"

    def snapshot(self) -> Snapshot:
        """Row count and digest of all rows, per table."""
        digests: Snapshot = {}
        with self.engine.connect() as conn:
            for table in self.tables:
                order = list(table.primary_key.columns) or list(table.columns)
                digest, count = hashlib.sha256(), 0
                for row in conn.execute(select(table).order_by(*order)):
                    digest.update(repr(tuple(row)).encode())
                    count += 1
                digests[table.name] = (count, digest.hexdigest()[:16])
        return digests


def changed(before: Snapshot, after: Snapshot) -> list[str]:
    return [
        f"{name}: {before.get(name)} -> {after.get(name)} (rows, digest)"
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    ]


# -- calling -------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    responses: list[bytes]
    status: status_pb2.Status | None = None
    status_error: str = ""


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _raw(data: bytes) -> bytes:
    return data


def invoke(channel: grpc.Channel, method: MethodDescriptor, request: Message, metadata: Metadata) -> Outcome:
    """Call an RPC of any kind; responses stay raw bytes. A client stream sends the one request."""
    path = path_of(method)
    kwargs: dict[str, Any] = {"request_serializer": _serialize, "response_deserializer": _raw}
    call: Any
    try:
        if not method.client_streaming and not method.server_streaming:
            response, call = channel.unary_unary(path, **kwargs).with_call(
                request, metadata=metadata, timeout=CALL_TIMEOUT
            )
            responses = [response]
        elif not method.client_streaming:
            call = channel.unary_stream(path, **kwargs)(request, metadata=metadata, timeout=WATCH_SECONDS)
            return Outcome(grpc.StatusCode.OK, "", until_our_deadline(call))  # a watch: open until then
        elif not method.server_streaming:
            response, call = channel.stream_unary(path, **kwargs).with_call(
                iter([request]), metadata=metadata, timeout=CALL_TIMEOUT
            )
            responses = [response]
        else:
            call = channel.stream_stream(path, **kwargs)(
                iter([request]), metadata=metadata, timeout=CALL_TIMEOUT
            )
            responses = list(call)
    except grpc.RpcError as err:
        call = err
        outcome = Outcome(call.code(), call.details() or "", [])
        try:
            outcome.status = rpc_status.from_call(call)
        except ValueError as exc:  # the details trailer contradicts the call's status
            outcome.status_error = str(exc)
        return outcome
    return Outcome(call.code(), call.details() or "", responses)


# -- the checks ----------------------------------------------------------------------------


def status_problems(method: MethodDescriptor, outcome: Outcome) -> list[str]:
    """What is wrong with the status of one call: nothing for OK or a proper ledger error."""
    code = outcome.code
    if code == grpc.StatusCode.OK:
        output = GetMessageClass(method.output_type)
        for raw in outcome.responses:
            output.FromString(raw)  # raises on a malformed response
        return []
    problems = []
    if code in NEVER or code not in PROPER_ERRORS:
        problems.append(f"status {code.name} is not a proper ledger error")
    if code == grpc.StatusCode.UNAVAILABLE:
        problems.append("UNAVAILABLE although the database is up and calls come one at a time")
    if outcome.status_error:
        problems.append(f"grpc-status-details-bin contradicts the status: {outcome.status_error}")
    if outcome.status is None:
        if code != grpc.StatusCode.RESOURCE_EXHAUSTED:  # gRPC's own size limit sends no details
            problems.append(f"{code.name} without google.rpc details (grpc-status-details-bin)")
        return problems
    infos, bad_requests = [], []
    for detail in outcome.status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            infos.append(error_details_pb2.ErrorInfo())
            detail.Unpack(infos[-1])
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_requests.append(error_details_pb2.BadRequest())
            detail.Unpack(bad_requests[-1])
    if len(infos) != 1:
        problems.append(f"{code.name} carries {len(infos)} ErrorInfo details, not 1")
    for info in infos:
        if info.domain != DOMAIN:
            problems.append(f"ErrorInfo domain {info.domain!r}, not {DOMAIN!r}")
        if info.reason not in REASONS:
            problems.append(f"ErrorInfo reason {info.reason!r} is no ledger.v1.ErrorReason a client expects")
        if info.reason == "INVALID_REQUEST" and not any(b.field_violations for b in bad_requests):
            problems.append("INVALID_REQUEST without a BadRequest naming the bad fields")
    return problems


class Fuzz:
    """Sends requests to the server under test and checks every answer and its effects."""

    def __init__(
        self,
        channel: grpc.Channel,
        metadata: Metadata,
        engine: Engine,
        caplog: pytest.LogCaptureFixture,
        world: World,
    ) -> None:
        self.channel = channel
        self.metadata = metadata
        self.engine = engine
        self.rows = Rows(engine)
        self.caplog = caplog
        self.world = world

    def __repr__(self) -> str:
        return f"Fuzz({self.engine.url.get_backend_name()}, {self.world!r})"

    def check(self, method: MethodDescriptor, request: Message) -> None:
        """Send one request; fail with a report if anything about it is wrong."""
        first_record = len(self.caplog.records)
        before = self.rows.snapshot()
        outcome = invoke(self.channel, method, request, self.metadata)
        after = self.rows.snapshot()

        problems = status_problems(method, outcome)
        if outcome.code != grpc.StatusCode.OK and changed(before, after):
            problems.append(f"refused with {outcome.code.name} but changed rows: {changed(before, after)}")
        if method.name.startswith(READ_ONLY_PREFIXES) and changed(before, after):
            problems.append(f"read-only {method.name} changed rows: {changed(before, after)}")
        request_id: object = getattr(request, "request_id", "")
        if outcome.code == grpc.StatusCode.OK and request_id:
            problems += self.retry_problems(method, request, outcome, after)
        problems += self.health_problems(method)
        problems += [f"invariant broken: {p}" for p in invariant_violations(self.engine)]
        if problems:
            report = [
                f"{path_of(method)} {describe(request)}",
                f"-> {outcome.code.name}: {outcome.details!r}",
            ]
            report += [f"   {d}" for d in status_details(outcome)]
            report += problems
            report.append(server_errors(self.caplog.records[first_record:]))
            pytest.fail("\n".join(report), pytrace=False)

    def retry_problems(
        self, method: MethodDescriptor, request: Message, original: Outcome, after: Snapshot
    ) -> list[str]:
        """AIP-155: a retry of a successful request returns the byte-identical original
        response and changes nothing."""
        retry = invoke(self.channel, method, request, self.metadata)
        problems = []
        if retry.code != grpc.StatusCode.OK:
            problems.append(f"a retry with the same request_id answered {retry.code.name}: {retry.details!r}")
        elif retry.responses != original.responses:
            output = GetMessageClass(method.output_type)
            equal = [output.FromString(r) for r in retry.responses] == [
                output.FromString(r) for r in original.responses
            ]
            problems.append(
                "a retry with the same request_id did not return the byte-identical original response: "
                + ("an equal message, serialized differently" if equal else "a different message")
                + f" ({[len(r) for r in original.responses]} vs {[len(r) for r in retry.responses]} bytes)"
            )
        now = self.rows.snapshot()
        if changed(after, now):
            problems.append(f"a retry changed rows: {changed(after, now)}")
        return problems

    def health_problems(self, method: MethodDescriptor) -> list[str]:
        stub = health_pb2_grpc.HealthStub(self.channel)
        problems = []
        for service in ("", method.containing_service.full_name):
            try:
                reply = stub.Check(
                    health_pb2.HealthCheckRequest(service=service), metadata=self.metadata, timeout=10
                )
            except grpc.RpcError as err:
                problems.append(f"health check of {service!r} failed: {err}")
                continue
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                problems.append(f"health of {service!r} is {reply.status}, not SERVING")
        return problems


# -- reporting -----------------------------------------------------------------------------


def describe(request: Message) -> str:
    """The set fields of a request; long strings and big collections shortened."""

    def plain(value: Any) -> Any:
        if isinstance(value, Message):
            return {f.name: plain(dict(v) if _is_map(f) else v) for f, v in value.ListFields()}
        if isinstance(value, str) and len(value) > 80:
            return f"{value[:24]!r}... ({len(value)} chars)"
        if isinstance(value, dict):
            items = [(plain(k), plain(v)) for k, v in value.items()]
            return dict(items[:5]) | ({"...": f"{len(items)} entries"} if len(items) > 5 else {})
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            return [plain(v) for v in value[:5]] + ([f"... {len(value)} items"] if len(value) > 5 else [])
        return value

    return repr(plain(request))


def status_details(outcome: Outcome) -> list[str]:
    if outcome.status is None:
        return []
    known = [
        error_details_pb2.ErrorInfo,
        error_details_pb2.BadRequest,
        error_details_pb2.ResourceInfo,
        error_details_pb2.RetryInfo,
    ]
    lines = []
    for detail in outcome.status.details:
        for cls in known:
            if detail.Is(cls.DESCRIPTOR):
                unpacked = cls()
                detail.Unpack(unpacked)
                lines.append(f"{cls.__name__} {text_format.MessageToString(unpacked, as_one_line=True)}")
                break
        else:
            lines.append(detail.type_url)
    return lines


def server_errors(records: Sequence[logging.LogRecord]) -> str:
    """The server's error log lines of the call, with their tracebacks."""
    formatter = logging.Formatter()
    lines = []
    for record in records:
        if record.levelno >= logging.ERROR:
            extra = {k: v for k, v in vars(record).items() if k in ("method", "incident", "error")}
            lines.append(f"server log: {record.name} {record.levelname} {record.getMessage()} {extra}")
            if record.exc_info:
                lines.append(formatter.formatException(record.exc_info))
    return "\n".join(lines)


# -- the ledger the fuzzer plays with ------------------------------------------------------


class World:
    """Real resources, ids and tokens to mix into requests, and the valid requests that
    made them (per method path): the seeds that examples mutate."""

    def __init__(self) -> None:
        self.account_ids: list[str] = []
        self.transaction_ids: list[str] = []
        self.currencies: list[str] = []
        self.external_refs: list[str] = []
        self.external_ids: list[str] = []
        self.request_ids: list[str] = []
        self.page_tokens: list[str] = []
        self.seeds: dict[str, list[Message]] = {}
        self.strategies: dict[str, st.SearchStrategy[Message]] = {}

    def __repr__(self) -> str:  # short, and no cycle through the cached strategies
        return f"World({len(self.account_ids)} accounts, {len(self.transaction_ids)} transactions)"


def _id(name: str) -> str:
    return name.partition("/")[2]


@pytest.fixture
def world(fuzz_channel: grpc.Channel, call_metadata: Metadata, engine: Engine) -> World:
    w = World()

    def call(path: str, request: Message) -> Any:
        method = METHODS_BY_PATH[path]
        outcome = invoke(fuzz_channel, method, request, call_metadata)
        assert outcome.code == grpc.StatusCode.OK, (path, outcome.code, outcome.details)
        w.seeds.setdefault(path, []).append(request)
        return GetMessageClass(method.output_type).FromString(outcome.responses[0])

    def open_account(currency: str, ref: str, floor: int = 0) -> str:
        w.request_ids.append(str(uuid.uuid4()))
        account = account_pb2.Account(
            external_ref=ref, currency=currency, balance_floor=floor, metadata={"tier": "gold"}
        )
        request = account_service_pb2.CreateAccountRequest(account=account, request_id=w.request_ids[-1])
        name: str = call("/ledger.v1.AccountService/CreateAccount", request).account.name
        w.account_ids.append(_id(name))
        return name

    def post(account: str, direction: int, amount: int, currency: str, **extra: Any) -> str:
        w.request_ids.append(str(uuid.uuid4()))
        txn = transaction_pb2.Transaction(account=account, amount=amount, currency=currency, **extra)
        txn.direction = direction  # type: ignore[assignment]
        request = tx_service_pb2.CreateTransactionRequest(transaction=txn, request_id=w.request_ids[-1])
        name: str = call("/ledger.v1.TransactionService/CreateTransaction", request).transaction.name
        w.transaction_ids.append(_id(name))
        return name

    credit, debit = transaction_pb2.DIRECTION_CREDIT, transaction_pb2.DIRECTION_DEBIT
    usd = open_account("usd", "fuzz-customer-1")
    credits = open_account("CREDITS", "fuzz-customer-1", floor=-1000)
    whale = open_account("MAXED", "fuzz-whale", floor=INT64_MIN)
    frozen = open_account("USD", "fuzz-frozen")
    closed = open_account("EUR", "fuzz-closed")
    w.external_refs += ["fuzz-customer-1", "fuzz-whale", "fuzz-frozen"]
    w.currencies += ["USD", "usd", "CREDITS", "MAXED", "EUR"]
    w.external_ids.append("fuzz-order-1")
    post(
        usd,
        credit,
        1000,
        "USD",
        kind=transaction_pb2.TRANSACTION_KIND_TOP_UP,
        external_id="fuzz-order-1",
        description="welcome",
        posting_date={"year": 2025, "month": 1, "day": 1},
        metadata={"order_id": "1", "gateway": "x"},
    )
    post(usd, debit, 250, "USD", kind=transaction_pb2.TRANSACTION_KIND_PURCHASE)
    post(credits, debit, 400, "CREDITS")  # into the credit line
    post(whale, credit, INT64_MAX, "MAXED")  # one more credit overflows
    for name, currency, status in ((frozen, "USD", "frozen"), (closed, "EUR", "closed")):
        post(name, credit, 10, currency)
        with engine.begin() as conn:  # no RPC freezes or closes an account yet
            conn.execute(update(accounts).where(accounts.c.id == _id(name)).values(status=status))
    with engine.connect() as conn:  # the counter-accounts are real accounts too
        w.account_ids += [i for i in conn.execute(select(accounts.c.id)).scalars() if i not in w.account_ids]

    call("/ledger.v1.AccountService/GetAccount", account_service_pb2.GetAccountRequest(name=usd))
    call(
        "/ledger.v1.TransactionService/GetTransaction",
        tx_service_pb2.GetTransactionRequest(name=f"transactions/{w.transaction_ids[0]}"),
    )
    listings: list[tuple[str, Message]] = [
        ("/ledger.v1.AccountService/ListAccounts", account_service_pb2.ListAccountsRequest(page_size=1)),
        (
            "/ledger.v1.AccountService/ListAccounts",
            account_service_pb2.ListAccountsRequest(page_size=1, external_ref="fuzz-customer-1"),
        ),
        (
            "/ledger.v1.TransactionService/ListTransactions",
            tx_service_pb2.ListTransactionsRequest(page_size=2),
        ),
        (
            "/ledger.v1.TransactionService/ListTransactions",
            tx_service_pb2.ListTransactionsRequest(page_size=1, account=usd),
        ),
        (
            "/ledger.v1.TransactionService/ListTransactions",
            tx_service_pb2.ListTransactionsRequest(
                account=usd,
                direction=credit,
                posting_date_from={"year": 2024, "month": 12, "day": 31},
                posting_date_to={"year": 2025, "month": 1, "day": 1},
            ),
        ),
    ]
    for path, request in listings:
        token: str = call(path, request).next_page_token
        if token:
            w.page_tokens.append(token)
            follow = type(request)()
            follow.CopyFrom(request)
            follow.page_token = token  # type: ignore[attr-defined]
            call(path, follow)
    assert w.page_tokens, "no listing produced a page token"
    return w


@pytest.fixture
def fuzz(
    world: World,
    fuzz_channel: grpc.Channel,
    call_metadata: Metadata,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> Fuzz:
    return Fuzz(fuzz_channel, call_metadata, engine, caplog, world)


# -- values --------------------------------------------------------------------------------


class Clear:
    """Leave the field unset (clear it on a seed)."""

    def __repr__(self) -> str:
        return "CLEAR"


class Present:
    """Set a message field to an empty message (present, every field default)."""

    def __repr__(self) -> str:
        return "PRESENT"


CLEAR, PRESENT = Clear(), Present()
CONTROL = "".join(map(chr, range(32))) + "\x7f\x85\u200b\u200e\u202e\u2028\u2029\ufeff\ufffd"
TRICKY = [" ", "\t", "\n", "\x00", "a\x00b", "\u00a0", "null", "None", "-1", "0", "9223372036854775808"]
TRICKY += [
    "' OR '1'='1",
    "%",
    "_",
    "\\",
    "%s%n",
    "../../etc/passwd",
    "\uff55\uff53\uff44",
    "ß",
    "ﬃ",
    "\u0131",
    "İ",
]
TRICKY += ["e\u0301", "😀", "\U0010ffff", "\U0001d518\U0001d516\U0001d507", "\u202eDSU"]
HUGE_LENGTHS = [17, 37, 41, 129, 501, 1001, 4096, 100_000]
# Just above the server's 4 MiB message limit: gRPC itself refuses it with RESOURCE_EXHAUSTED.
OVERSIZE = 4 * 1024 * 1024 + 1024


def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = [0, 1, -1, 2, 50, 999, 1000, 1001, INT32_MAX, INT32_MIN, 2**31, 2**53 + 1, INT64_MAX, INT64_MIN]
    edges += [INT64_MAX - 1, INT64_MIN + 1, UINT32_MAX, UINT64_MAX, lo, hi]
    return st.one_of(
        st.sampled_from(sorted({e for e in edges if lo <= e <= hi})),
        st.integers(max(lo, -1000), min(hi, 1000)),
        st.integers(lo, hi),
    )


NUMBERS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.CPPTYPE_INT32: _ints(INT32_MIN, INT32_MAX),
    FieldDescriptor.CPPTYPE_INT64: _ints(INT64_MIN, INT64_MAX),
    FieldDescriptor.CPPTYPE_UINT32: _ints(0, UINT32_MAX),
    FieldDescriptor.CPPTYPE_UINT64: _ints(0, UINT64_MAX),
    FieldDescriptor.CPPTYPE_BOOL: st.booleans(),
    FieldDescriptor.CPPTYPE_FLOAT: st.floats(width=32),
    FieldDescriptor.CPPTYPE_DOUBLE: st.floats(),
}
any_text = st.one_of(
    st.just(""),
    st.sampled_from(TRICKY),
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.text(st.sampled_from(CONTROL + "aZ9 "), min_size=1, max_size=12),
    st.builds(
        operator.mul,
        st.sampled_from(["x", "é", "😀", "\x00", " ", "a\u0301", "accounts/"]),
        st.sampled_from([*HUGE_LENGTHS, OVERSIZE]),
    ),
)
uuids = st.uuids().map(str)
NAME_FORMS = ["{c}/{id}", "{c}/{id}", "{c}/{ID}", "{c}/{hex}", "{c}/{{{id}}}", "{c}/urn:uuid:{id}"]
NAME_FORMS += [" {c}/{id}", "{c}/{id} ", "{c}/{id}\x00", "{c}/{id}/", "{c}/{id}/x", "{c}//{id}"]
NAME_FORMS += ["{c}/../{c}/{id}", "{c}%2F{id}", "/{c}/{id}", "tenants/default/{c}/{id}", "{c}/{id}{id}"]
NAME_FORMS += ["//ledger.example.com/{c}/{id}", "{c}/{short}", "{c}/{id}?view=FULL"]
NAME_JUNK = ["accounts/", "accounts", "transactions/", "/", "//", "accounts/../x", "accounts/.."]
NAME_JUNK += [
    "accounts/*",
    "accounts/-",
    "accounts/" + "x" * 36,
    "accounts/00000000-0000-0000-0000-000000000000",
]
NAME_JUNK += ["accounts/" + "0" * 32, "accounts/0000000000000000000000000000_001"]
NAME_JUNK += ["accounts/" + "\u0660" * 32, "accounts/ 000000000000000000000000000000 "]


def _name(form: str, collection: str, ident: str) -> str:
    return form.format(c=collection, id=ident, ID=ident.upper(), hex=ident.replace("-", ""), short=ident[:8])


def _resource_names(w: World) -> st.SearchStrategy[str]:
    ids = st.one_of(st.sampled_from(w.account_ids + w.transaction_ids), uuids)
    collections = st.sampled_from(["accounts", "transactions", "Accounts", "ACCOUNTS", "tokens", "account"])
    return st.one_of(
        st.sampled_from([f"accounts/{i}" for i in w.account_ids]),
        st.sampled_from([f"transactions/{i}" for i in w.transaction_ids]),
        st.builds(_name, st.sampled_from(NAME_FORMS), collections, ids),
        st.sampled_from(NAME_JUNK),
    )


# A request_id "FRESH|<form>" is sent as a new uuid4 in that form: a new request every time
# the example runs (also when Hypothesis replays or shrinks it), never an id used up before.
FRESH = "FRESH|"
FRESH_FORMS = ["{id}", "{ID}", "{hex}", "{{{id}}}", "urn:uuid:{id}", " {id} ", "{id}\x00", "{short}"]


def freshened(request: Message) -> Message:
    """The request as sent: a FRESH request_id replaced by a new uuid in its form."""
    value = getattr(request, "request_id", None)
    if not isinstance(value, str) or not value.startswith(FRESH):
        return request
    sent = type(request)()
    sent.CopyFrom(request)
    sent.request_id = _name(value.removeprefix(FRESH), "", str(uuid.uuid4()))  # type: ignore[attr-defined]
    return sent


def _request_ids(w: World) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(FRESH + "{id}"),
        st.sampled_from(FRESH_FORMS).map(FRESH.__add__),
        st.sampled_from(w.request_ids),
        st.sampled_from(["00000000-0000-0000-0000-000000000000", "not-a-uuid", "-", "0" * 36]),
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _flip(token: str, at: int) -> str:
    i = at % len(token)
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


def _page_tokens(w: World) -> st.SearchStrategy[str]:
    real = st.sampled_from(w.page_tokens)
    unsigned = [b'{"q":"0000000000000000","p":1}', b'{"p":-1}', b"[]", b'"x"', b"1", b'{"q":null,"p":true}']
    return st.one_of(
        real,
        st.builds(lambda t, n: t[: n % len(t)], real, st.integers(0, 400)),  # truncated
        st.builds(_flip, real, st.integers(0, 400)),
        st.builds(operator.add, real, st.sampled_from(["A", "=", "==", "\x00", "é", " "])),
        real.map(lambda t: t[::-1]),
        st.binary(max_size=200).map(_b64),
        st.sampled_from(unsigned).map(lambda body: _b64(bytes(16) + body)),
        st.sampled_from(["=", "====", "!!!", "é", "\x00", "null", "a" * 10_000]),
    )


def _currencies(w: World) -> st.SearchStrategy[str]:
    odd = ["US", "U", "USDX", "A" * 16, "A" * 17, "1USD", "_USD", "US D", "usd ", " usd", "ÜSD", "\u0131sd"]
    return st.sampled_from(w.currencies + odd)


def _strings(f: FieldDescriptor, w: World) -> st.SearchStrategy[Any]:
    """A string (or bytes) field: values hinted by the field's name first, then anything."""
    if f.type == FieldDescriptor.TYPE_BYTES:
        huge = st.builds(operator.mul, st.binary(min_size=1, max_size=4), st.sampled_from(HUGE_LENGTHS))
        return st.one_of(st.binary(max_size=64), huge)
    name = f.name
    hinted: list[st.SearchStrategy[str]] = []
    if name in ("name", "parent") or name.endswith(("account", "_name")):
        hinted += [_resource_names(w), _resource_names(w)]
    if name.endswith("request_id"):
        hinted += [_request_ids(w), _request_ids(w)]
    if name.endswith("page_token"):
        hinted += [_page_tokens(w), _page_tokens(w)]
    if name == "currency":
        hinted += [_currencies(w), _currencies(w)]
    if name.endswith("external_ref"):
        hinted.append(st.sampled_from(w.external_refs))
    if name.endswith("external_id"):
        hinted.append(st.sampled_from(w.external_ids))
    if not hinted:
        hinted.append(st.text(st.characters(codec="utf-8", categories=["L", "N"]), max_size=20))
    return st.one_of(*hinted, any_text)


def _date(desc: Descriptor) -> st.SearchStrategy[Any]:
    """google.type.Date: valid days (mostly near today), impossible and partial ones, any int32s."""
    cls = GetMessageClass(desc)
    odd = [(2023, 2, 29), (2024, 2, 30), (2024, 4, 31), (0, 1, 1), (2024, 0, 1), (2024, 13, 1), (2024, 1, 0)]
    odd += [(2024, 1, 32), (-1, 1, 1), (10000, 1, 1), (2024, 0, 0), (0, 0, 1), (0, 1, 0), (1, 1, 1)]
    odd += [(9999, 12, 31), (INT32_MAX, INT32_MAX, INT32_MAX), (INT32_MIN, INT32_MIN, INT32_MIN)]
    int32 = NUMBERS[FieldDescriptor.CPPTYPE_INT32]
    days = st.one_of(st.dates(dt.date(2024, 1, 1), dt.date(2026, 12, 31)), st.dates())
    triples = st.one_of(
        days.map(lambda d: (d.year, d.month, d.day)),
        st.sampled_from(odd),
        st.tuples(int32, int32, int32),
    )
    return triples.map(lambda t: cls(year=t[0], month=t[1], day=t[2]))


def _is_map(f: FieldDescriptor) -> bool:
    return f.message_type is not None and f.message_type.GetOptions().map_entry


def _scalar(f: FieldDescriptor, w: World) -> st.SearchStrategy[Any]:
    if f.enum_type is not None:
        known = [v.number for v in f.enum_type.values]
        unknown = [99, -1, max(known) + 1, INT32_MAX, INT32_MIN]
        return st.one_of(st.sampled_from(known), st.sampled_from(known), st.sampled_from(unknown))
    if f.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return _strings(f, w)
    numbers = NUMBERS[f.cpp_type]
    if f.name == "amount":
        return st.one_of(st.integers(1, 2000), numbers)
    if f.name == "page_size":
        return st.one_of(st.integers(0, 3), numbers)
    return numbers


def _crowd(n: int, value: Any) -> dict[str, Any]:
    return {f"key_{i}": value for i in range(n)}


def _map(f: FieldDescriptor, w: World, depth: int) -> st.SearchStrategy[dict[Any, Any]]:
    """A map: a few odd entries, many entries, or one huge key."""
    entry = f.message_type
    assert entry is not None
    key_f, value_f = entry.fields_by_name["key"], entry.fields_by_name["value"]
    if value_f.message_type is not None:
        value = small = _message(value_f.message_type, w, depth + 1)
    else:
        small = st.sampled_from(["", "v", "v" * 500, "v" * 501])
        value = st.one_of(small, _scalar(value_f, w))
    if key_f.cpp_type != FieldDescriptor.CPPTYPE_STRING:
        return st.dictionaries(_scalar(key_f, w), value, max_size=8)
    keys = st.one_of(st.sampled_from(["", "order_id", "k" * 40, "k" * 41, "\x00", " "]), any_text)
    return st.one_of(
        st.dictionaries(keys, value, max_size=8),
        st.builds(_crowd, st.sampled_from([49, 50, 51, 200, 5000]), small),
        st.builds(lambda n, v: {"k" * n: v}, st.sampled_from(HUGE_LENGTHS), small),
    )


def _leaf(f: FieldDescriptor, w: World, depth: int) -> st.SearchStrategy[Any]:
    """The values one field may take (CLEAR: unset it); depth is its message's."""
    if _is_map(f):
        return st.one_of(st.just(CLEAR), _map(f, w, depth))
    if f.message_type is None:
        one = _scalar(f, w)
    elif f.message_type.full_name == "google.type.Date":
        one = _date(f.message_type)
    else:
        one = st.one_of(st.just(PRESENT), _message(f.message_type, w, depth + 1))
    if f.is_repeated:
        return st.one_of(st.just(CLEAR), st.lists(one, max_size=5))
    return st.one_of(st.just(CLEAR), one)


def leaf_paths(desc: Descriptor, depth: int = 0, seen: tuple[str, ...] = ()) -> list[Path]:
    """The field paths an example may set: every field, and the fields of singular
    message fields (other than dates) down to MAX_DEPTH."""
    paths: list[Path] = []
    for f in desc.fields:
        paths.append((f,))
        sub = f.message_type
        if (
            sub is not None
            and not f.is_repeated
            and sub.full_name != "google.type.Date"
            and sub.full_name not in seen
            and depth + 1 < MAX_DEPTH
        ):
            paths += [(f, *p) for p in leaf_paths(sub, depth + 1, (*seen, desc.full_name))]
    return paths


def _set(message: Message, path: Path, value: Any) -> None:
    target = message
    for f in path[:-1]:
        target = getattr(target, f.name)
    leaf = path[-1]
    if value is CLEAR:
        target.ClearField(leaf.name)
    elif _is_map(leaf):
        entries = getattr(target, leaf.name)
        entries.clear()
        for k, v in value.items():
            if isinstance(v, Message):
                entries[k].CopyFrom(v)
            else:
                entries[k] = v
    elif leaf.is_repeated:
        items = getattr(target, leaf.name)
        del items[:]
        for v in value:
            if isinstance(v, Message):
                items.add().CopyFrom(v)
            elif v is PRESENT:
                items.add()
            else:
                items.append(v)
    elif value is PRESENT:
        getattr(target, leaf.name).SetInParent()
    elif isinstance(value, Message):
        getattr(target, leaf.name).CopyFrom(value)
    else:
        setattr(target, leaf.name, value)


@st.composite
def _mutated(draw: st.DrawFn, desc: Descriptor, w: World, depth: int, seeds: Sequence[Message]) -> Message:
    """A seed with up to 3 fields changed (mostly under a new request_id), or an empty
    message with any number of fields set."""
    paths = leaf_paths(desc, depth)
    from_seed = draw(st.booleans()) if seeds else False
    if from_seed:
        message = type(seeds[0])()
        message.CopyFrom(draw(st.sampled_from(seeds)))
        if "request_id" in desc.fields_by_name and draw(st.sampled_from([True, True, True, False])):
            message.request_id = FRESH + "{id}"  # type: ignore[attr-defined]
        chosen = draw(st.lists(st.sampled_from(paths), max_size=3, unique=True)) if paths else []
    else:
        message = GetMessageClass(desc)()
        chosen = draw(st.lists(st.sampled_from(paths), max_size=len(paths), unique=True)) if paths else []
    for path in chosen:
        _set(message, path, draw(_leaf(path[-1], w, depth + len(path) - 1)))
    return message


def _message(desc: Descriptor, w: World, depth: int) -> st.SearchStrategy[Message]:
    if depth >= MAX_DEPTH:
        return st.just(GetMessageClass(desc)())
    return _mutated(desc, w, depth, ())


def requests(method: MethodDescriptor, w: World) -> st.SearchStrategy[Message]:
    path = path_of(method)
    if path not in w.strategies:
        w.strategies[path] = _mutated(method.input_type, w, 0, w.seeds.get(path, []))
    return w.strategies[path]


# -- the fuzzer ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS, ids=[path_of(m).rsplit(".", 1)[-1] for m in METHODS])
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not CHAOS,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzz_rpc(method: MethodDescriptor, data: st.DataObject, fuzz: Fuzz) -> None:
    fuzz.check(method, freshened(data.draw(requests(method, fuzz.world), label="request")))


# Requests the fuzzer found bugs with, replayed on every run whatever the examples drawn.
# $usd names a real USD account with funds.
# (49 metadata entries: how a map's entries are ordered on the wire depends on their
# insertion order and a per-process hash seed; with this many they practically always differ.)
ENTRIES = " ".join(f'metadata {{ key: "k{i:02d}" value: "" }}' for i in range(49, 0, -1))
REGRESSIONS = [
    ("nul-external_ref", "/ledger.v1.AccountService/ListAccounts", r'external_ref: "\000"'),
    (
        "metadata-replay",
        "/ledger.v1.AccountService/CreateAccount",
        f'account {{ currency: "USD" {ENTRIES} }} request_id: "{FRESH}{{id}}"',
    ),
    (
        "metadata-replay",
        "/ledger.v1.TransactionService/CreateTransaction",
        f'transaction {{ account: "$usd" direction: DIRECTION_CREDIT amount: 1 currency: "USD" {ENTRIES} }}'
        f' request_id: "{FRESH}{{id}}"',
    ),
]


@pytest.mark.parametrize(
    ("path", "text"),
    [(path, text) for _, path, text in REGRESSIONS],
    ids=[f"{path.rsplit('/', 1)[-1]}-{name}" for name, path, _ in REGRESSIONS],
)
def test_fuzz_regression(path: str, text: str, fuzz: Fuzz) -> None:
    method = METHODS_BY_PATH[path]
    filled = Template(text).substitute(usd=f"accounts/{fuzz.world.account_ids[0]}")
    fuzz.check(method, freshened(text_format.Parse(filled, GetMessageClass(method.input_type)())))
