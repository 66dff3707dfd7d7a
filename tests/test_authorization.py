"""The authorization matrix: every RPC of every ledger service (discovered from the
descriptors, so a new RPC is covered automatically) x every kind of caller that must be
refused. Each call is checked for its code, its ErrorInfo reason, and that it changed
nothing in the database. Runs on SQLite and Postgres."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory, text_format
from google.protobuf.descriptor import MethodDescriptor
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from ledger.v1 import auth_pb2, transaction_pb2
from ledger_client import LedgerClient
from sqlalchemy import Engine, select, text

from ledger_server.api.server import LEDGER_SERVICES, LedgerServer
from ledger_server.core.admin import Admin
from ledger_server.core.auth import ADMIN, SCOPES, Authenticator, hash_secret
from ledger_server.core.model import TokenRecord
from ledger_server.store.schema import metadata
from ledger_server.store.sql_store import SqlStore
from tests.support import until_our_deadline

METHODS: list[MethodDescriptor] = [
    method
    for service in LEDGER_SERVICES
    for method in descriptor_pool.Default().FindServiceByName(service).methods
]
# A transfer's destination that exists for no tenant.
NOBODY = "accounts/00000000-0000-4000-8000-000000000000"
SCENARIOS = ["no token", "malformed", "unknown", "revoked", "expired", "missing scope", "other tenant"]


def scope_of(method: MethodDescriptor) -> str:
    scope: str = method.GetOptions().Extensions[auth_pb2.required_scope]
    return scope


@dataclass
class World:
    port: int
    account: str  # accounts/... of tenant acme
    transaction: str  # transactions/... of tenant acme
    tokens: dict[str, str]  # scenario -> authorization header value
    scoped_out: dict[str, str]  # scope -> token of acme with every scope but that one


@pytest.fixture
def world(server: LedgerServer, store: SqlStore, admin: Admin, token: str) -> World:
    with LedgerClient(f"127.0.0.1:{server.port}", token=token) as acme:
        account = acme.create_account(currency="USD", external_ref="acme-customer")
        txn = acme.credit(account.name, 100, "USD", external_id="shared-external-id")
    admin.create_tenant("globex", "Globex")
    _, other = admin.create_token("globex", "globex-admin", [ADMIN])
    _, revoked = admin.create_token("acme", "revoked", [ADMIN])
    admin.revoke_token(revoked.split("_")[1])
    expired = f"ltk_{uuid.uuid4().hex}_{'e' * 43}"
    with store.writing() as w:  # an expiry in the past: Admin would refuse to create one
        past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        w.insert_token(
            TokenRecord(
                expired.split("_")[1],
                "acme",
                "expired",
                frozenset({ADMIN}),
                hash_secret("e" * 43),
                past,
                past,
                None,
            )
        )
    scoped_out = {
        scope: "Bearer " + admin.create_token("acme", f"without {scope}", SCOPES - {scope, ADMIN})[1]
        for scope in SCOPES - {ADMIN}
    }
    return World(
        server.port,
        account.name,
        txn.name,
        {
            "malformed": "Bearer not-a-token",
            "unknown": f"Bearer ltk_{uuid.uuid4().hex}_{'x' * 43}",
            "revoked": f"Bearer {revoked}",
            "expired": f"Bearer {expired}",
            "other tenant": f"Bearer {other}",
        },
        scoped_out,
    )


def sample_request(method: MethodDescriptor, world: World) -> Any:
    """A valid request naming acme's resources, filled by field name (recursively, so
    that a batch's items are filled too)."""
    request: Any = message_factory.GetMessageClass(method.input_type)()
    names_account = method.containing_service.name == "AccountService"
    fill(request, world, names_account)
    return request


def fill(message: Any, world: World, names_account: bool) -> None:
    for field in message.DESCRIPTOR.fields:
        if (
            field.is_repeated
            and field.message_type is not None
            and not field.message_type.GetOptions().map_entry
        ):
            fill(getattr(message, field.name).add(), world, names_account)
        elif field.name == "name":
            message.name = world.account if names_account else world.transaction
        elif field.name == "account" and field.message_type is None:
            message.account = world.account
        elif field.name == "parent":  # an account's sub-collection (its status changes)
            message.parent = world.account
        elif field.name == "account":  # CreateAccount's new account, UpdateAccount's changes
            message.account.currency = "USD"
            message.account.name = world.account  # output only on create: ignored there
        elif field.name == "update_mask":
            message.update_mask.paths.append("metadata")
        elif field.name in ("transaction", "hold", "transfer"):
            getattr(message, field.name).CopyFrom(
                transaction_pb2.Transaction(
                    account=world.account,
                    direction=(
                        transaction_pb2.DIRECTION_DEBIT
                        if field.name == "transaction"
                        else transaction_pb2.DIRECTION_UNSPECIFIED
                    ),
                    amount=1,
                    currency="USD",
                    counterparty_account=NOBODY if field.name == "transfer" else "",
                )
            )
        elif field.name == "as_of_time":
            message.as_of_time.seconds = 1
        elif field.name == "request_id":
            message.request_id = str(uuid.uuid4())


def call(
    world: World, method: MethodDescriptor, request: Any, authorization: str | None
) -> grpc.RpcError | Any:
    response_cls = message_factory.GetMessageClass(method.output_type)
    with grpc.insecure_channel(f"127.0.0.1:{world.port}") as channel:
        path = f"/{method.containing_service.full_name}/{method.name}"
        serializers: dict[str, Any] = {
            "request_serializer": lambda m: m.SerializeToString(),
            "response_deserializer": response_cls.FromString,
        }
        headers = () if authorization is None else (("authorization", authorization),)
        try:
            if method.client_streaming:
                return channel.stream_unary(path, **serializers)(
                    iter([request]), timeout=10, metadata=headers
                )
            if method.server_streaming:
                stream = channel.unary_stream(path, **serializers)(request, timeout=1, metadata=headers)
                seen = response_cls()  # what the watch sent in its first second, as one message
                for message in until_our_deadline(stream):
                    seen.MergeFrom(message)
                return seen
            return channel.unary_unary(path, **serializers)(request, timeout=10, metadata=headers)
        except grpc.RpcError as err:
            return err


def reason_of(err: grpc.RpcError) -> tuple[str, dict[str, str]]:
    status = rpc_status.from_call(err)
    assert status is not None, "every error carries google.rpc details"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            assert info.domain == "ledger.v1"
            return info.reason, dict(info.metadata)
    raise AssertionError("no ErrorInfo")


def digest(engine: Engine, tenant: str | None = None) -> str:
    """A hash of every row (of one tenant's rows, if given) of every table."""
    h = hashlib.sha256()
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            q = select(table)
            if tenant is not None:
                if "tenant_id" in table.c:
                    q = q.where(table.c.tenant_id == tenant)
                elif table.name == "entries":
                    q = q.where(table.c.account_id.in_(text("SELECT id FROM accounts WHERE tenant_id = :t")))
                    q = q.params(t=tenant)
                else:
                    continue
            for row in conn.execute(q.order_by(*table.primary_key.columns)):
                h.update(repr(tuple(row)).encode())
    return h.hexdigest()


EXPECTED = {
    "no token": (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING"),
    "malformed": (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MALFORMED"),
    "unknown": (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID"),
    "revoked": (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED"),
    "expired": (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED"),
    "missing scope": (grpc.StatusCode.PERMISSION_DENIED, "MISSING_SCOPE"),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_refused_callers_change_nothing(
    world: World, engine: Engine, method: MethodDescriptor, scenario: str
) -> None:
    request = sample_request(method, world)
    if scenario == "other tenant":
        acme_before = digest(engine, "acme")
        result = call(world, method, request, world.tokens[scenario])
        assert digest(engine, "acme") == acme_before
        assert_no_leak(world, method, result)
        return
    header = {"no token": None, "missing scope": world.scoped_out.get(scope_of(method))}.get(
        scenario, world.tokens.get(scenario)
    )
    if scenario == "missing scope" and header is None:
        pytest.skip("an admin-scope method: every non-admin token lacks it")  # none exist yet
    before = digest(engine)
    result = call(world, method, request, header)
    assert isinstance(result, grpc.RpcError), f"{scenario} was let through"
    code, reason = EXPECTED[scenario]
    assert result.code() == code
    got_reason, details = reason_of(result)
    assert got_reason == reason
    if scenario == "missing scope":
        assert details["required_scope"] == scope_of(method)
    assert digest(engine) == before


def assert_no_leak(world: World, method: MethodDescriptor, result: Any) -> None:
    """Another tenant's valid token sees acme's resources exactly as if they did not exist."""
    acme_ids = {world.account.split("/")[1], world.transaction.split("/")[1]}
    # The very same answer as for names that never existed.
    missing = str(uuid.uuid4())
    nowhere = dataclasses.replace(world, account=f"accounts/{missing}", transaction=f"transactions/{missing}")
    never = call(world, method, sample_request(method, nowhere), world.tokens["other tenant"])
    if isinstance(result, grpc.RpcError):
        assert result.code() == grpc.StatusCode.NOT_FOUND, result
        assert isinstance(never, grpc.RpcError)
        assert never.code() == result.code()
        assert reason_of(never)[0] == reason_of(result)[0]
        assert (never.details() or "").replace(missing, "ID") == re.sub(
            "|".join(acme_ids), "ID", result.details() or ""
        )
    else:
        seen = text_format.MessageToString(result)
        if any(i in seen for i in acme_ids):
            # Per-item errors (an import's) may echo the names the caller sent, nothing more.
            assert not isinstance(never, grpc.RpcError)
            seen = re.sub("|".join(acme_ids), "ID", seen)
            assert seen == text_format.MessageToString(never).replace(missing, "ID"), "data leaked"


def test_tenants_may_reuse_external_ids_and_request_ids(world: World, token: str) -> None:
    with (
        LedgerClient(f"127.0.0.1:{world.port}", token=token) as acme,
        LedgerClient(f"127.0.0.1:{world.port}", token=world.tokens["other tenant"].split()[1]) as globex,
    ):
        request_id = str(uuid.uuid4())
        acme_txn = acme.credit(world.account, 5, "USD", request_id=request_id)
        account = globex.create_account(currency="USD")
        globex_txn = globex.credit(
            account.name, 5, "USD", external_id="shared-external-id", request_id=request_id
        )
        assert globex_txn.name != acme_txn.name and globex_txn.external_id == "shared-external-id"
        assert [a.name for a in globex.iter_accounts()] == [account.name]
        assert [t.name for t in globex.iter_transactions()] == [globex_txn.name]
        assert globex_txn.creator.token_name == "globex-admin"
        assert acme_txn.creator.token_name == "test-suite"


def test_a_token_is_read_through_the_callers_runner_only_when_not_cached(
    store: SqlStore, admin: Admin
) -> None:
    """The interceptor's runner (call_greenlet.blocking) moves the read off the event loop;
    a cached token costs no read and no hop."""
    tenant = f"runner-{uuid.uuid4().hex[:8]}"
    admin.create_tenant(tenant, "Runner")
    _, token = admin.create_token(tenant, "t", [ADMIN])
    reads: list[str] = []

    def run(read: Any) -> Any:
        reads.append("read")
        return read()

    authenticator = Authenticator(store, cache_seconds=60)
    for _ in range(2):
        assert authenticator.authenticate(f"Bearer {token}", run).tenant_id == tenant
    assert reads == ["read"]
