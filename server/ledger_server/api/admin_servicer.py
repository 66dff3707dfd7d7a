"""ledger.v1.AdminService: the ledger's self-audit for the caller's tenant."""

from __future__ import annotations

import grpc
from ledger.v1 import admin_service_pb2 as pb
from ledger.v1 import admin_service_pb2_grpc

from ledger_server.api.caller import tenant_of_call
from ledger_server.api.replies import SCALARS_BYTES, that_fit
from ledger_server.core.ledger import Ledger


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, ledger: Ledger, max_reply_bytes: int = 4 * 1024 * 1024) -> None:
        """`max_reply_bytes`: the server's message size limit, which a reply must fit."""
        self._ledger = ledger
        self._max_reply_bytes = max_reply_bytes

    def VerifyLedger(
        self, request: pb.VerifyLedgerRequest, context: grpc.ServicerContext
    ) -> pb.VerifyLedgerResponse:
        report = self._ledger.verify(tenant_of_call())
        response = pb.VerifyLedgerResponse(
            accounts_checked=report.accounts_checked, transactions_checked=report.transactions_checked
        )
        # A badly broken ledger can have more violations than a reply can carry, and a
        # reply above the message limit would not be sent at all: list what fits.
        listed = that_fit(
            (
                pb.LedgerViolation(check=x.check, resource=x.resource, detail=x.detail)
                for x in report.violations
            ),
            self._max_reply_bytes - SCALARS_BYTES,
        )
        response.violations.extend(listed)
        response.violations_omitted = len(report.violations) - len(listed)
        return response
