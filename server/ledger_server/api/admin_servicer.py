"""ledger.v1.AdminService: the ledger's self-audit for the caller's tenant."""

from __future__ import annotations

import grpc
from ledger.v1 import admin_service_pb2 as pb
from ledger.v1 import admin_service_pb2_grpc

from ledger_server.api.caller import tenant_of_call
from ledger_server.core.ledger import Ledger


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def VerifyLedger(
        self, request: pb.VerifyLedgerRequest, context: grpc.ServicerContext
    ) -> pb.VerifyLedgerResponse:
        report = self._ledger.verify(tenant_of_call())
        return pb.VerifyLedgerResponse(
            violations=[
                pb.LedgerViolation(check=x.check, resource=x.resource, detail=x.detail)
                for x in report.violations
            ],
            accounts_checked=report.accounts_checked,
            transactions_checked=report.transactions_checked,
        )
