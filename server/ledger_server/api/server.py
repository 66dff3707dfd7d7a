"""The gRPC server: ledger services behind the call interceptor, plus the standard health
and reflection services, with explicit message-size and concurrency limits. Health follows
the database: a probe thread pings it and reports NOT_SERVING while it does not answer.

It is a grpc.aio server on the process's event loop thread (api/aio_bridge.py): the loop
reads every request, and a call's synchronous behavior runs only once its request has
arrived, so calls that never send theirs hold nothing: in one of --workers threads, or
on the loop itself (call_greenlet.py): the short methods and the watches (on_loop). The
public API stays synchronous. Open watches wait for commits (this server's, and on
Postgres other processes' too: store/commit_notices.py) in ChangeWaiters
(api/change_waiters.py), which the shutdown ends first."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from ledger.v1 import (
    account_service_pb2,
    admin_service_pb2,
    transaction_service_pb2,
)

from ledger_server.api.account_servicer import AccountServicer
from ledger_server.api.admin_servicer import AdminServicer
from ledger_server.api.aio_bridge import asynchronous, run_on_loop, shared_loop
from ledger_server.api.change_waiters import ChangeWaiters
from ledger_server.api.interceptor import CallInterceptor, TenantLimit
from ledger_server.api.reflection import DocumentedReflectionServicer
from ledger_server.api.registration import add_servicer
from ledger_server.api.scopes import required_scopes
from ledger_server.api.transaction_servicer import TransactionServicer
from ledger_server.config import Settings
from ledger_server.core.auth import Authenticator
from ledger_server.core.errors import StoreUnavailable
from ledger_server.core.ledger import Ledger
from ledger_server.metrics import Metrics
from ledger_server.os_thread import name_all_threads, name_this_thread

log = logging.getLogger("ledger.server")
ACCOUNT_SERVICE = account_service_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name
TRANSACTION_SERVICE = transaction_service_pb2.DESCRIPTOR.services_by_name["TransactionService"].full_name
ADMIN_SERVICE = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
LEDGER_SERVICES = [ACCOUNT_SERVICE, TRANSACTION_SERVICE, ADMIN_SERVICE]


class LedgerServer:
    def __init__(
        self, ledger: Ledger, authenticator: Authenticator, settings: Settings, metrics: Metrics | None = None
    ) -> None:
        self._metrics = metrics
        self._interceptor = CallInterceptor(
            authenticator,
            required_scopes(LEDGER_SERVICES),
            metrics.observe if metrics else None,
            TenantLimit(settings.max_calls_per_tenant) if settings.max_calls_per_tenant > 0 else None,
        )
        self._ledger = ledger
        self._probe_seconds = max(settings.health_probe_seconds, 0.05)  # 0 would spin
        self._probe_stop = threading.Event()
        self._probe: threading.Thread | None = None
        self._health_lock = threading.Lock()  # orders the probe's reports and stop()
        self._store_up = True
        self._stopping = False
        self._drain_seconds = settings.drain_seconds
        # Health and reflection are asyncio-native: an open Watch or reflection stream (both
        # need no token) waits on the event loop and holds no worker thread.
        self.health = health.aio.HealthServicer()
        # Open WatchTransactionChanges streams wait there, woken by this server's commits.
        self._changes = ChangeWaiters(shared_loop(), max(settings.watch_poll_seconds, 0.05))  # 0 would spin
        self._stop_listening = ledger.on_commit(self._changes.committed)
        self._pool = ThreadPoolExecutor(
            max_workers=settings.workers, thread_name_prefix="rpc", initializer=name_this_thread
        )
        credentials = _tls_credentials(settings)
        self.tls = credentials is not None
        try:
            self._server, self.port = run_on_loop(self._build(settings, credentials))
        except BaseException:
            self._pool.shutdown(wait=False)
            self._stop_listening()
            raise
        self._grace = settings.grace_seconds

    async def _build(
        self, settings: Settings, credentials: grpc.ServerCredentials | None
    ) -> tuple[grpc.aio.Server, int]:
        """The grpc.aio server, made on the loop (it takes the running loop for its own)."""
        server = grpc.aio.server(
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                # gRPC sets SO_REUSEPORT by default: a second server would silently share the port.
                ("grpc.so_reuseport", 0),
                # One connection cannot take every call slot (with request-less calls, say).
                ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
            ],
        )
        try:
            methods: dict[str, Handler] = {}
            server.add_generic_rpc_handlers((_ByName(methods),))
            # As grpc.Servers:
            wrapping = _LedgerHandlers(self._interceptor, self._pool)
            ledger_services: Any = _Registry(methods, wrapping.wrap)
            add_servicer(ledger_services, ACCOUNT_SERVICE, AccountServicer(self._ledger))
            add_servicer(
                ledger_services,
                TRANSACTION_SERVICE,
                TransactionServicer(
                    self._ledger, change_waiters=self._changes, max_reply_bytes=settings.max_message_bytes
                ),
            )
            add_servicer(
                ledger_services, ADMIN_SERVICE, AdminServicer(self._ledger, settings.max_message_bytes)
            )
            plain: Any = _Registry(methods)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, plain)
            reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
                DocumentedReflectionServicer(
                    [*LEDGER_SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME]
                ),
                plain,
            )
            if credentials is None:
                port = server.add_insecure_port(settings.listen)
            else:
                port = server.add_secure_port(settings.listen, credentials)
            if not port:
                raise OSError(f"cannot listen on {settings.listen}")
        except BaseException:
            await server.stop(None)
            raise
        return server, port

    def start(self) -> None:
        run_on_loop(self._server.start())
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._probe = threading.Thread(target=self._probe_store, name="health-probe", daemon=True)
        self._probe.start()
        name_all_threads()  # grpc's own (its poller took the loop's name, as new threads do)

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING and refuse new calls with UNAVAILABLE for the drain period
        (so that load balancers move away), then stop, giving in-flight calls the grace
        period."""
        with self._health_lock:  # from now on the probe reports nothing
            self._stopping = True
            self._probe_stop.set()
            run_on_loop(self.health.enter_graceful_shutdown())
        self._interceptor.drain()
        self._changes.close()  # open streams end now, not at the end of the grace period
        self._stop_listening()
        if grace is None:  # a real shutdown, not a test's stop(0)
            time.sleep(self._drain_seconds)
        run_on_loop(self._server.stop(self._grace if grace is None else grace))
        # Calls cut short by the grace period may leave their workers running: not waited for.
        self._pool.shutdown(wait=False)
        if self._probe is not None:
            # A ping is bounded by the connect timeout; the thread is a daemon regardless.
            self._probe.join(timeout=10)
            if self._probe.is_alive():
                log.warning("health probe did not stop")

    def _probe_store(self) -> None:
        """Every --health-probe-seconds, ping the database: NOT_SERVING while it does not
        answer, SERVING again once it does (never once stop() has begun)."""
        name_this_thread()
        while not self._probe_stop.wait(self._probe_seconds):
            error = ""
            try:
                self._ledger.ping()
            except StoreUnavailable as exc:
                error = str(exc) or type(exc).__name__
            except Exception as exc:  # whatever it is, the store did not answer
                error = f"{type(exc).__name__}: {exc}"
            self._report_store(error)

    def _report_store(self, error: str) -> None:
        with self._health_lock:
            up = not error
            if self._stopping or up == self._store_up:
                return
            self._store_up = up
            if self._metrics is not None:
                self._metrics.database_up(up)
            if up:
                log.info("store reachable again; health SERVING")
                self._set_health(health_pb2.HealthCheckResponse.SERVING)
            else:
                log.warning("store unreachable; health NOT_SERVING", extra={"error": error})
                self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for service in ["", *LEDGER_SERVICES]:
            run_on_loop(self.health.set(service, status))


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Wrap: TypeAlias = Callable[[str, Handler], Handler]


class _Registry:
    """Stands for the grpc.aio server where servicers are added (by add_servicer and the
    generated add_*_to_server functions), taking each handler once, wrapped by `wrap` if
    given, into `methods`. No method is registered by name with grpc: its serving loop
    keeps a pending request per registered method and, for every incoming call, waits on
    all of them (asyncio.wait over 20 futures here). _ByName serves the dict instead: one
    lookup a call. A health check -20 % instructions, a CreateTransaction -6 % (callgrind,
    bench/instructions.py)."""

    def __init__(self, methods: dict[str, Handler], wrap: Wrap | None = None) -> None:
        self._methods = methods
        self._wrap = wrap

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        for name, handler in handlers.items():
            method = f"/{service}/{name}"
            self._methods[method] = handler if self._wrap is None else self._wrap(method, handler)

    def add_generic_rpc_handlers(self, generic_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """Kept none: the generated code adds the same methods by name as well, and a
        generic handler would only be a second route to them (for a ledger method, one
        around the call interceptor)."""


class _ByName(grpc.GenericRpcHandler):
    def __init__(self, methods: dict[str, Handler]) -> None:
        self._methods = methods

    def service(self, details: grpc.HandlerCallDetails) -> Handler | None:
        return self._methods.get(details.method)


class _LedgerHandlers:
    """Wraps a ledger method's handler by the call interceptor and then for where it runs:
    the event loop or the thread pool (on_loop)."""

    def __init__(self, interceptor: CallInterceptor, pool: ThreadPoolExecutor) -> None:
        self._interceptor = interceptor
        self._pool = pool

    def wrap(self, method: str, handler: Handler) -> Handler:
        pool = None if on_loop(method) else self._pool
        return asynchronous(self._interceptor.wrap(method, handler), pool)


# These run on the event loop, each in a greenlet that waits for its group commit without
# blocking it (call_greenlet.py): one posting or one bounded page of reads each. Their
# Postgres reads wait in worker threads, statement by statement (SqlStore.reading). So
# does a watch (WatchTransactionChanges), which between its reads waits for a commit on
# the loop. A batch (up to 1000 postings of Python work), a stream of requests, and the
# admin methods (an audit reads a whole tenant) keep to the worker threads. Against a
# hop to a worker thread and back for the whole call: SQLite GetAccount at 64 in flight
# +50 %, Postgres GetAccount at 8 in flight +11-29 % and CreateTransaction at 64 +5 %
# (measured).
_WORKER_METHODS = {
    f"/{TRANSACTION_SERVICE}/BatchCreateTransactions",
    f"/{TRANSACTION_SERVICE}/ImportTransactions",
}


def on_loop(method: str) -> bool:
    """Whether `method` runs on the event loop (in a call greenlet) rather than a worker."""
    service = method.lstrip("/").partition("/")[0]
    return service in (ACCOUNT_SERVICE, TRANSACTION_SERVICE) and method not in _WORKER_METHODS


def _tls_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if not settings.tls_cert and not settings.tls_key:
        if settings.tls_client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    pair = (Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())
    client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
