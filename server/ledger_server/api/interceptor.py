"""What wraps every RPC's behavior: authenticates the caller of ledger methods, hands the
call's deadline to the store (core/deadline.py), turns domain errors into rich gRPC
statuses, and writes one structured log line per call (method, code, duration, caller,
the resource written or read, the request_id, the account a posting is for and a batch's
size), also counted in the metrics if they are served. Other request contents and tokens
are never logged.

The wrapped behaviors stay synchronous: the server (api/server.py) wraps every method
handler once, when it is registered, and runs the result in its worker threads or in call
greenlets on its event loop (api/aio_bridge.py), each call in a Context of its own."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, NamedTuple, cast

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from ledger_server.api.caller import reset_caller, set_caller
from ledger_server.api.errors import CODES, ledger_status, status_of, unavailable
from ledger_server.call_greenlet import blocking
from ledger_server.core.auth import Authenticator, Caller, require_scope
from ledger_server.core.deadline import reset_deadline, set_deadline
from ledger_server.core.errors import Category, DeadlineExceeded, LedgerError, StoreUnavailable

log = logging.getLogger("ledger.rpc")
# gRPC reports "no deadline" as a remaining time of centuries.
NO_DEADLINE = 365 * 24 * 3600.0


class ShuttingDown(Exception):
    """A new call arrived while the server drains."""


Behavior = Callable[[Any, grpc.ServicerContext], Any]


# A finished call's method, status code name, seconds taken and caller's tenant ("" if
# not authenticated) (metrics.Metrics.observe).
Observer = Callable[[str, str, float, str], None]


class TenantLimit:
    """At most `limit` calls of one tenant in flight at once, so that one tenant's bulk
    work cannot take every call slot and worker from the others. Counted under a lock:
    calls run on the event loop and in worker threads."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}

    def take(self, tenant_id: str) -> None:
        """One more call of `tenant_id`, or LedgerError TENANT_CALL_LIMIT."""
        with self._lock:
            busy = self._in_flight.get(tenant_id, 0)
            if busy >= self._limit:
                raise LedgerError(
                    Category.RESOURCE_EXHAUSTED,
                    "TENANT_CALL_LIMIT",
                    f"tenant {tenant_id} has {busy} calls in flight, this server's limit: retry after "
                    "a backoff (with the same request_id), or send fewer calls at once",
                    metadata={"tenant": tenant_id, "limit": str(self._limit)},
                )
            self._in_flight[tenant_id] = busy + 1

    def give_back(self, tenant_id: str) -> None:
        with self._lock:
            left = self._in_flight.pop(tenant_id) - 1
            if left:
                self._in_flight[tenant_id] = left


class CallInterceptor:
    def __init__(
        self,
        authenticator: Authenticator,
        scopes: dict[str, str],
        observe: Observer | None = None,
        tenant_limit: TenantLimit | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._scopes = scopes  # method path -> scope; methods not in it (health, reflection) are open
        self._observe = observe
        self._tenant_limit = tenant_limit
        self._draining = False

    def drain(self) -> None:
        """From now on refuse new ledger calls with UNAVAILABLE (SHUTTING_DOWN): retryable,
        unlike the CANCELLED that gRPC answers once the server is stopping."""
        self._draining = True

    # Handlers are gRPC's namedtuples (hence _replace); the stubs type them loosely.
    def wrap(self, method: str, handler: Any) -> Any:
        """`handler` of the method at path `method`, with each behavior wrapped."""
        scope = self._scopes.get(method)

        @contextmanager
        def around(context: grpc.ServicerContext) -> Iterator[_Call]:
            with (
                _observed(method, context, self._observe) as call,
                _deadline_of(context),
                self._authorized(scope, context, call),
            ):
                yield call

        if handler.unary_unary:
            return handler._replace(unary_unary=_unary(around, handler.unary_unary))
        if handler.stream_unary:
            return handler._replace(stream_unary=_unary(around, handler.stream_unary))

        def still_authorized(context: grpc.ServicerContext) -> None:
            if scope is not None:
                require_scope(self._caller_of(context), scope)

        if handler.unary_stream:
            return handler._replace(unary_stream=_streamed(around, handler.unary_stream, still_authorized))
        raise TypeError(f"{method}: streams of requests and responses are not wrapped")

    @contextmanager
    def _authorized(self, scope: str | None, context: grpc.ServicerContext, call: _Call) -> Iterator[None]:
        if scope is None:
            yield
            return
        if self._draining:
            raise ShuttingDown
        caller = self._caller_of(context)
        call.caller = caller  # logged even if refused for its scope: who tried matters
        require_scope(caller, scope)
        limit = self._tenant_limit
        if limit is not None:
            limit.take(caller.tenant_id)
        token = set_caller(caller)
        try:
            yield
        finally:
            reset_caller(token)
            if limit is not None:
                limit.give_back(caller.tenant_id)

    def _caller_of(self, context: grpc.ServicerContext) -> Caller:
        header = dict(context.invocation_metadata()).get("authorization")
        return self._authenticator.authenticate(header if isinstance(header, str) else None, blocking)


Around = Callable[[grpc.ServicerContext], AbstractContextManager["_Call"]]


def _unary(around: Around, behavior: Behavior) -> Behavior:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        with around(context) as logged:
            asked = _shape(type(request))
            if asked.keyed:
                logged.request_id = request.request_id
            if asked.named:
                logged.resource = _clipped(request.name)
            if asked.posting is not None:
                logged.account = _clipped(getattr(request, asked.posting).account)
            if asked.batched:
                logged.items = len(request.requests)
            response = behavior(request, context)
            field = _shape(type(response)).resource
            if field is not None:
                logged.resource = getattr(response, field).name
            return response

    return call


def _streamed(
    around: Around, behavior: Behavior, still_authorized: Callable[[grpc.ServicerContext], None]
) -> Behavior:
    """A stream of responses: the call (its caller, its log line) lasts as long as it, and
    its token is checked again before each message, so that a stream opened before the
    token was revoked or expired sends nothing after (within the token cache's time)."""

    def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        with around(context) as logged:
            for response in behavior(request, context):
                still_authorized(context)
                logged.messages += 1
                yield response

    return call


# A client's deadline runs out a little before the server's copy of it, which starts when
# the call arrives (later, on a loaded machine by milliseconds): the client's cancellation
# then reaches the server first. A call cancelled this close to its deadline was cut off
# by it (seen in CI: cancelled with its deadline not yet passed on the server's clock).
DEADLINE_SLACK_SECONDS = 0.1

# A resource name is ~45 characters; a request may carry anything up to the message limit
# before validation refuses it, and a log line should not grow with it.
MAX_LOGGED_NAME = 100


def _clipped(name: str) -> str:
    return name if len(name) <= MAX_LOGGED_NAME else name[:MAX_LOGGED_NAME] + "..."


class _Shape(NamedTuple):
    """What a message type holds for the log line: a request_id, a name, the field of the
    resource it carries (its singular message field 1 with a name: the account or
    transaction created, changed or read; None for lists, batches and reports), the field
    of the posting it asks for (field 1 with an account: a transaction, hold or transfer)
    and whether it is a batch of requests."""

    keyed: bool
    named: bool
    resource: str | None
    posting: str | None
    batched: bool


# Message type -> its _Shape, looked up once per type: a protobuf message raises on a
# missing attribute, which would cost more than the rest of the log line. A client-streamed
# request (ImportTransactions') is an iterator: no descriptor, nothing to log.
_SHAPES: dict[type, _Shape] = {}


def _shape(kind: type) -> _Shape:
    shape = _SHAPES.get(kind)
    if shape is None:
        descriptor = getattr(kind, "DESCRIPTOR", None)
        if descriptor is None:
            shape = _Shape(False, False, None, None, False)
        else:
            names, first = descriptor.fields_by_name, descriptor.fields_by_number.get(1)
            carried = first is not None and first.message_type is not None and not first.is_repeated
            held = first.message_type.fields_by_name if carried else {}
            shape = _Shape(
                keyed="request_id" in names,
                named="name" in names,
                resource=str(first.name) if "name" in held else None,
                posting=str(first.name) if "account" in held else None,
                batched="requests" in names and names["requests"].is_repeated,
            )
        _SHAPES[kind] = shape
    return shape


@contextmanager
def _deadline_of(context: grpc.ServicerContext) -> Iterator[None]:
    left: float | None = context.time_remaining()
    token = set_deadline(None if left is None or left > NO_DEADLINE else time.monotonic() + left)
    try:
        yield
    finally:
        reset_deadline(token)


class _Call:
    """What the log line of a call tells besides its method and outcome."""

    __slots__ = ("account", "caller", "items", "messages", "request_id", "resource")

    def __init__(self) -> None:
        self.caller: Caller | None = None  # once authenticated
        self.request_id = ""  # the client's idempotency key: finds the calls a client retried
        self.resource = ""  # the resource written or read, or else the one the request names
        self.account = ""  # the account a posting is for: finds an account's refused postings too
        self.items = 0  # a batch's requests
        self.messages = 0  # the responses a stream sent


@contextmanager
def _observed(method: str, context: grpc.ServicerContext, observe: Observer | None) -> Iterator[_Call]:
    start = time.perf_counter()
    code = grpc.StatusCode.OK
    log.debug("rpc started", extra={"method": method})
    call = _Call()
    try:
        yield call
    except asyncio.CancelledError:  # a call greenlet's: the client went away or its deadline passed
        left = context.time_remaining()
        cut_off = left is not None and left <= DEADLINE_SLACK_SECONDS
        code = grpc.StatusCode.DEADLINE_EXCEEDED if cut_off else grpc.StatusCode.CANCELLED
        raise
    except GeneratorExit:  # a stream's generator dropped before its end
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception as exc:
        answer = _answer(method, exc, context)
        if answer is None:  # the servicer already aborted with a status of its own
            code = _code_of(context) or grpc.StatusCode.UNKNOWN
            raise
        code, status = answer
        context.abort_with_status(rpc_status.to_status(status))
    finally:
        seconds = time.perf_counter() - start
        fields = {"method": method, "code": code.name, "duration_ms": round(seconds * 1000, 3)}
        if call.caller is not None:  # the tenant and token id, never the token's secret
            fields["tenant"], fields["token"] = call.caller.tenant_id, call.caller.token_id
        if call.resource:
            fields["resource"] = call.resource
        if call.request_id:
            fields["request_id"] = call.request_id
        if call.account:
            fields["account"] = call.account
        if call.items:
            fields["items"] = call.items
        if call.messages:
            fields["messages"] = call.messages
        log.info("rpc", extra=fields)
        if observe is not None:
            observe(method, code.name, seconds, "" if call.caller is None else call.caller.tenant_id)


def _answer(
    method: str, exc: Exception, context: grpc.ServicerContext
) -> tuple[grpc.StatusCode, status_pb2.Status] | None:
    if isinstance(exc, LedgerError):
        return CODES[exc.category], ledger_status(exc)
    if isinstance(exc, ShuttingDown):
        return grpc.StatusCode.UNAVAILABLE, unavailable(
            "SHUTTING_DOWN", "the server is shutting down; retry, with the same request_id"
        )
    if isinstance(exc, DeadlineExceeded):
        log.warning("deadline exceeded in the store", extra={"method": method, "error": str(exc)})
        return grpc.StatusCode.DEADLINE_EXCEEDED, status_of(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "DEADLINE_EXCEEDED",
            "the call's deadline passed before its database work finished; nothing was applied: "
            "retry with the same request_id and a longer deadline",
        )
    if isinstance(exc, StoreUnavailable):
        log.warning("store unavailable", extra={"method": method, "error": str(exc)})
        return grpc.StatusCode.UNAVAILABLE, unavailable(
            "STORE_UNAVAILABLE", "the ledger database is unavailable; retry with the same request_id"
        )
    if _code_of(context) is not None:  # raised by context.abort(): the status is already set
        return None
    incident = str(uuid.uuid4())
    log.exception("unexpected failure", extra={"method": method, "incident": incident})
    return grpc.StatusCode.INTERNAL, status_of(
        grpc.StatusCode.INTERNAL,
        "INTERNAL",
        f"internal error; quote incident {incident} to the operator",
        {"incident": incident},
    )


def _code_of(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    code: grpc.StatusCode | None = cast(Any, context).code()  # missing from the grpc stubs
    return code
