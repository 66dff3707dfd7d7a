"""The gRPC server: ledger services behind the call interceptor, plus the standard health
and reflection services, with explicit message-size and concurrency limits."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from ledger.v1 import (
    account_service_pb2,
    admin_service_pb2,
    transaction_service_pb2,
)

from ledger_server.api.account_servicer import AccountServicer
from ledger_server.api.admin_servicer import AdminServicer
from ledger_server.api.interceptor import CallInterceptor
from ledger_server.api.reflection import DocumentedReflectionServicer
from ledger_server.api.registration import add_servicer
from ledger_server.api.scopes import required_scopes
from ledger_server.api.transaction_servicer import TransactionServicer
from ledger_server.config import Settings
from ledger_server.core.auth import Authenticator
from ledger_server.core.ledger import Ledger

log = logging.getLogger("ledger.server")
ACCOUNT_SERVICE = account_service_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name
TRANSACTION_SERVICE = transaction_service_pb2.DESCRIPTOR.services_by_name["TransactionService"].full_name
ADMIN_SERVICE = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
LEDGER_SERVICES = [ACCOUNT_SERVICE, TRANSACTION_SERVICE, ADMIN_SERVICE]


class LedgerServer:
    def __init__(self, ledger: Ledger, authenticator: Authenticator, settings: Settings) -> None:
        self._interceptor = CallInterceptor(authenticator, required_scopes(LEDGER_SERVICES))
        self._drain_seconds = settings.drain_seconds
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="rpc"),
            interceptors=[self._interceptor],
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                # gRPC sets SO_REUSEPORT by default: a second server would silently share the port.
                ("grpc.so_reuseport", 0),
            ],
        )
        add_servicer(self._server, ACCOUNT_SERVICE, AccountServicer(ledger))
        add_servicer(self._server, TRANSACTION_SERVICE, TransactionServicer(ledger))
        add_servicer(self._server, ADMIN_SERVICE, AdminServicer(ledger))
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            DocumentedReflectionServicer([*LEDGER_SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME]),
            self._server,
        )
        credentials = _tls_credentials(settings)
        self.tls = credentials is not None
        if credentials is None:
            self.port = self._server.add_insecure_port(settings.listen)
        else:
            self.port = self._server.add_secure_port(settings.listen, credentials)
        if not self.port:
            raise OSError(f"cannot listen on {settings.listen}")
        self._grace = settings.grace_seconds

    def start(self) -> None:
        self._server.start()
        for service in ["", *LEDGER_SERVICES]:
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING and refuse new calls with UNAVAILABLE for the drain period
        (so that load balancers move away), then stop, giving in-flight calls the grace
        period."""
        self.health.enter_graceful_shutdown()
        self._interceptor.drain()
        if grace is None:  # a real shutdown, not a test's stop(0)
            time.sleep(self._drain_seconds)
        self._server.stop(self._grace if grace is None else grace).wait()


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
