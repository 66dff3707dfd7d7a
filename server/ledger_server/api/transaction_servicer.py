"""ledger.v1.TransactionService: translate requests for the core and results back."""

from __future__ import annotations

import grpc
from ledger.v1 import transaction_pb2, transaction_service_pb2_grpc
from ledger.v1 import transaction_service_pb2 as pb

from ledger_server.api.caller import current_caller, tenant_of_call
from ledger_server.api.convert import parse_date, parse_direction, parse_kind, parse_name, transaction_pb
from ledger_server.api.errors import ledger_status
from ledger_server.api.idempotency import Responder
from ledger_server.core.auth import Caller
from ledger_server.core.errors import FieldViolation, LedgerError, invalid
from ledger_server.core.ledger import BatchItem, Ledger
from ledger_server.core.model import Creator, NewTransaction, Transaction, TransactionFilter
from ledger_server.core.validation import Violations


def _created(txn: Transaction) -> pb.CreateTransactionResponse:
    return pb.CreateTransactionResponse(transaction=transaction_pb(txn))


def _responder() -> Responder[Transaction, pb.CreateTransactionResponse]:
    return Responder(_created, pb.CreateTransactionResponse.FromString)


def _command(t: transaction_pb2.Transaction, v: Violations, caller: Caller) -> NewTransaction:
    return NewTransaction(
        account_id=parse_name(v, "transaction.account", t.account, "accounts"),
        direction=parse_direction(v, "transaction.direction", t.direction, required=True),
        amount=t.amount,
        currency=t.currency,
        kind=parse_kind(v, "transaction.kind", t.kind),
        description=t.description,
        posting_date=parse_date(v, "transaction.posting_date", t.posting_date),
        external_id=t.external_id,
        metadata=dict(t.metadata),
        creator=Creator(caller.token_id, caller.token_name),
    )


class TransactionServicer(transaction_service_pb2_grpc.TransactionServiceServicer):
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def CreateTransaction(
        self, request: pb.CreateTransactionRequest, context: grpc.ServicerContext
    ) -> pb.CreateTransactionResponse:
        caller = current_caller()
        v = Violations()
        responder = _responder()
        idem = responder.idempotency("CreateTransaction", request, v)
        cmd = _command(request.transaction, v, caller)
        return responder.respond(self._ledger.post_transaction(caller.tenant_id, cmd, idem, v))

    def BatchCreateTransactions(
        self, request: pb.BatchCreateTransactionsRequest, context: grpc.ServicerContext
    ) -> pb.BatchCreateTransactionsResponse:
        caller = current_caller()
        if request.mode not in (pb.BATCH_MODE_UNSPECIFIED, pb.BATCH_MODE_ATOMIC, pb.BATCH_MODE_INDEPENDENT):
            raise invalid([FieldViolation("mode", f"unknown mode {request.mode}")])
        items, responders = [], []
        for item in request.requests:
            v = Violations()
            responder = _responder()
            # Fingerprinted as a CreateTransaction: an item and a lone call with the same
            # request_id are the same request.
            idem = responder.idempotency("CreateTransaction", item, v)
            items.append(BatchItem(_command(item.transaction, v, caller), idem, v))
            responders.append(responder)
        atomic = request.mode != pb.BATCH_MODE_INDEPENDENT
        results = self._ledger.post_batch(caller.tenant_id, items, atomic)
        return pb.BatchCreateTransactionsResponse(
            results=[
                pb.BatchItemResult(error=ledger_status(result))
                if isinstance(result, LedgerError)
                else pb.BatchItemResult(transaction=responder.respond(result).transaction)
                for result, responder in zip(results, responders, strict=True)
            ]
        )

    def GetTransaction(
        self, request: pb.GetTransactionRequest, context: grpc.ServicerContext
    ) -> pb.GetTransactionResponse:
        v = Violations()
        transaction_id = parse_name(v, "name", request.name, "transactions")
        if v:
            raise invalid(v)
        txn = self._ledger.get_transaction(tenant_of_call(), transaction_id)
        return pb.GetTransactionResponse(transaction=transaction_pb(txn))

    def ListTransactions(
        self, request: pb.ListTransactionsRequest, context: grpc.ServicerContext
    ) -> pb.ListTransactionsResponse:
        v = Violations()
        flt = TransactionFilter(
            account_id=parse_name(v, "account", request.account, "accounts", required=False),
            date_from=parse_date(v, "posting_date_from", request.posting_date_from),
            date_to=parse_date(v, "posting_date_to", request.posting_date_to),
            direction=parse_direction(v, "direction", request.direction, required=False),
        )
        items, token = self._ledger.list_transactions(
            tenant_of_call(), flt, request.page_size, request.page_token, v
        )
        return pb.ListTransactionsResponse(
            transactions=[transaction_pb(t) for t in items], next_page_token=token
        )
