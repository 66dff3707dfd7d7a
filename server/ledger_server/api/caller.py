"""Who is calling. Until tokens and tenants land every call acts in the default tenant."""

from __future__ import annotations

import grpc

from ledger_server.core.model import DEFAULT_TENANT


def tenant_of(_context: grpc.ServicerContext) -> str:
    return DEFAULT_TENANT
