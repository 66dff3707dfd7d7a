"""ledger.v1.TransactionService: translate requests for the core and results back."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import grpc
from ledger.v1 import transaction_pb2, transaction_service_pb2_grpc
from ledger.v1 import transaction_service_pb2 as pb

from ledger_server.api.caller import current_caller, tenant_of_call
from ledger_server.api.change_waiters import ChangeWaiters, SharedPage, SharedPages
from ledger_server.api.convert import (
    CREATABLE_TYPES,
    parse_creatable_type,
    parse_date,
    parse_direction,
    parse_kind,
    parse_metadata,
    parse_name,
    parse_status_filter,
    parse_time,
    parse_type_filter,
    transaction_pb,
)
from ledger_server.api.errors import MAX_MESSAGE_BYTES, MAX_VIOLATIONS_BYTES, ledger_status
from ledger_server.api.idempotency import Responder
from ledger_server.api.replies import SCALARS_BYTES, framed_size
from ledger_server.core.auth import Caller
from ledger_server.core.errors import Category, FieldViolation, LedgerError, invalid
from ledger_server.core.ledger import BatchItem, ItemResult, Ledger, Replay
from ledger_server.core.model import (
    SETTLING_TYPES,
    NewTransaction,
    Transaction,
    TransactionChange,
    TransactionFilter,
    TransactionType,
)
from ledger_server.core.operations import Capture, Refund
from ledger_server.core.validation import Violations


def _created(txn: Transaction) -> pb.CreateTransactionResponse:
    return pb.CreateTransactionResponse(transaction=transaction_pb(txn))


def _responder() -> Responder[Transaction, pb.CreateTransactionResponse]:
    return Responder(_created, pb.CreateTransactionResponse.FromString)


def _command(
    t: transaction_pb2.Transaction, v: Violations, caller: Caller, field: str = "transaction"
) -> NewTransaction:
    transfer = field == "transfer"
    # CreateHold and CreateTransfer say what they make; CreateTransaction says it in `type`.
    type_ = (
        parse_creatable_type(v, f"{field}.type", t.type)
        if field == "transaction"
        else TransactionType.STANDARD
    )
    settles = type_ in SETTLING_TYPES
    if settles and t.kind != transaction_pb2.TRANSACTION_KIND_UNSPECIFIED:
        v.add(
            f"{field}.kind", f"a {type_.value} takes the kind of the transaction it settles: leave it unset"
        )
    return NewTransaction(
        account_id=parse_name(v, f"{field}.account", t.account, "accounts", required=not settles),
        # A hold and a transfer are debits of `account` by definition; a capture's and a
        # refund's direction follows from what they settle.
        direction=parse_direction(
            v, f"{field}.direction", t.direction, required=field == "transaction" and not settles
        ),
        amount=t.amount,
        currency=t.currency,
        kind=parse_kind(v, f"{field}.kind", t.kind),
        description=t.description,
        posting_date=parse_date(v, f"{field}.posting_date", t.posting_date),
        external_id=t.external_id,
        metadata=parse_metadata(t.metadata),
        creator=caller.creator,
        expires_at=parse_time(v, f"{field}.expire_time", t.HasField("expire_time"), t.expire_time),
        counterparty_id=parse_name(
            v, f"{field}.counterparty_account", t.counterparty_account, "accounts", required=transfer
        )
        if transfer
        else "",
        type=type_,
        related_id=parse_name(v, f"{field}.related_transaction", t.related_transaction, "transactions")
        if settles
        else "",
    )


def _details(
    request: pb.CaptureHoldRequest | pb.RefundTransactionRequest, v: Violations, caller: Caller
) -> NewTransaction:
    """What a capture or refund takes from its request besides the amount (a capture's
    metadata is its hold's)."""
    metadata = parse_metadata(request.metadata) if isinstance(request, pb.RefundTransactionRequest) else {}
    return NewTransaction(
        account_id="",
        direction=None,
        amount=0,
        currency="",
        description=request.description,
        posting_date=parse_date(v, "posting_date", request.posting_date),
        external_id=request.external_id,
        metadata=metadata,
        creator=caller.creator,
    )


def _held(hold: Transaction) -> pb.CreateHoldResponse:
    return pb.CreateHoldResponse(hold=transaction_pb(hold))


def _captured(c: Capture) -> pb.CaptureHoldResponse:
    return pb.CaptureHoldResponse(hold=transaction_pb(c.hold), capture=transaction_pb(c.capture))


def _voided(hold: Transaction) -> pb.VoidHoldResponse:
    return pb.VoidHoldResponse(hold=transaction_pb(hold))


def _refunded(r: Refund) -> pb.RefundTransactionResponse:
    return pb.RefundTransactionResponse(refund=transaction_pb(r.refund), original=transaction_pb(r.original))


def _transferred(t: Transaction) -> pb.CreateTransferResponse:
    return pb.CreateTransferResponse(transfer=transaction_pb(t))


def _item_result(
    result: ItemResult, responder: Responder[Transaction, pb.CreateTransactionResponse]
) -> pb.BatchItemResult:
    if isinstance(result, LedgerError):
        return pb.BatchItemResult(error=ledger_status(result))
    return pb.BatchItemResult(transaction=responder.respond(result).transaction)


def _batch_items(
    requests: Iterable[pb.CreateTransactionRequest], caller: Caller, *, require_request_id: bool
) -> tuple[list[BatchItem], list[Responder[Transaction, pb.CreateTransactionResponse]]]:
    """The items of a batch or an import chunk, each with the responder of its result."""
    items, responders = [], []
    for item in requests:
        v = Violations()
        responder = _responder()
        # Fingerprinted as a CreateTransaction: an item and a lone call with the same
        # request_id are the same request.
        idem = responder.idempotency("CreateTransaction", item, v)
        if require_request_id and idem is None and not v:
            v.add("request_id", "required: an import is resumed by its request ids")
        items.append(BatchItem(_command(item.transaction, v, caller), idem, v))
        responders.append(responder)
    return items, responders


# A reply above the message limit cannot be sent: the client would get a bare
# RESOURCE_EXHAUSTED for a batch that was committed. So a batch whose reply could pass it
# is refused before anything is posted. A posted item's result is its request's
# transaction and the fields the server fills in (~170 bytes and the token's name); a
# refused item's, a status within api/errors.py's budgets.
RESULT_EXTRA_BYTES = 256
ERROR_RESULT_BYTES = MAX_MESSAGE_BYTES + MAX_VIOLATIONS_BYTES + 1024


# A capture or refund item's result also names the account and currency it may omit.
SETTLED_EXTRA_BYTES = 64


def _reply_bound(
    request: pb.BatchCreateTransactionsRequest, atomic: bool, caller: Caller, settled: dict[str, Transaction]
) -> int:
    """At most what the batch's reply can take (an atomic batch answers all its items or
    one error). `settled`: what its capture and refund items name; a capture carries its
    hold's metadata (and description, where the item has none)."""
    extra = RESULT_EXTRA_BYTES + len(caller.token_name.encode())
    posted = []
    for item in request.requests:
        size = item.transaction.ByteSize() + extra
        if item.transaction.type == transaction_pb2.TRANSACTION_TYPE_REFUND:
            size += SETTLED_EXTRA_BYTES
        elif item.transaction.type == transaction_pb2.TRANSACTION_TYPE_CAPTURE:
            hold = settled.get(_related_id(item.transaction))
            size += SETTLED_EXTRA_BYTES + (transaction_pb(hold).ByteSize() if hold is not None else 0)
        posted.append(size)
    return sum(posted) if atomic else sum(max(size, ERROR_RESULT_BYTES) for size in posted)


def _related_id(t: transaction_pb2.Transaction) -> str:
    return parse_name(Violations(), "related_transaction", t.related_transaction, "transactions")


def _settled_ids(request: pb.BatchCreateTransactionsRequest) -> list[str]:
    """The ids of the holds and payments a batch's capture and refund items name (a
    malformed name is refused later)."""
    named = (
        _related_id(item.transaction)
        for item in request.requests
        if CREATABLE_TYPES.get(item.transaction.type) in SETTLING_TYPES
    )
    return [transaction_id for transaction_id in named if transaction_id]


def _import_too_large(chunk_index: int, in_reply: int, processed: int) -> LedgerError:
    return LedgerError(
        Category.RESOURCE_EXHAUSTED,
        "IMPORT_TOO_LARGE",
        f"the results of chunk {chunk_index} would take the reply past the message size limit: "
        f"this call processed its first {processed} items (sent again, those committed are replayed); "
        f"import at most {in_reply} items a call",
        metadata={
            "chunk_index": str(chunk_index),
            "processed_items": str(processed),
            "items_in_reply": str(in_reply),
        },
    )


def _changes_pb(changes: list[tuple[TransactionChange, str]]) -> list[pb.TransactionChange]:
    return [
        pb.TransactionChange(
            type=pb.TRANSACTION_CHANGE_TYPE_CREATED if change.created else pb.TRANSACTION_CHANGE_TYPE_UPDATED,
            transaction=transaction_pb(change.transaction),
            resume_token=resume,
        )
        for change, resume in changes
    ]


class TransactionServicer(transaction_service_pb2_grpc.TransactionServiceServicer):
    def __init__(
        self, ledger: Ledger, *, change_waiters: ChangeWaiters, max_reply_bytes: int = 4 * 1024 * 1024
    ) -> None:
        """`change_waiters`: where WatchTransactionChanges streams wait for new changes.
        `max_reply_bytes`: the server's message size limit, which a reply must fit."""
        self._ledger = ledger
        self._waiters = change_waiters
        self._shared = SharedPages()  # the watches'
        self._max_reply_bytes = max_reply_bytes

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
        atomic = request.mode != pb.BATCH_MODE_INDEPENDENT
        # What its captures and refunds settle, read once: for the reply's bound, and by
        # the ledger to complete those items.
        wanted = _settled_ids(request)
        settled = self._ledger.get_transactions(caller.tenant_id, wanted) if wanted else {}
        bound = _reply_bound(request, atomic, caller, settled)
        if bound > self._max_reply_bytes:
            raise invalid(
                [
                    FieldViolation(
                        "requests",
                        f"the reply could take {bound} bytes, above the {self._max_reply_bytes}-byte "
                        "message limit: send fewer or smaller items a call",
                    )
                ]
            )
        items, responders = _batch_items(request.requests, caller, require_request_id=False)
        results = self._ledger.post_batch(caller.tenant_id, items, atomic, settled)
        return pb.BatchCreateTransactionsResponse(
            results=[_item_result(r, responder) for r, responder in zip(results, responders, strict=True)]
        )

    def CreateHold(
        self, request: pb.CreateHoldRequest, context: grpc.ServicerContext
    ) -> pb.CreateHoldResponse:
        caller = current_caller()
        v = Violations()
        responder = Responder(_held, pb.CreateHoldResponse.FromString)
        idem = responder.idempotency("CreateHold", request, v)
        cmd = _command(request.hold, v, caller, "hold")
        return responder.respond(self._ledger.create_hold(caller.tenant_id, cmd, idem, v))

    def CaptureHold(
        self, request: pb.CaptureHoldRequest, context: grpc.ServicerContext
    ) -> pb.CaptureHoldResponse:
        caller = current_caller()
        v = Violations()
        responder = Responder(_captured, pb.CaptureHoldResponse.FromString)
        idem = responder.idempotency("CaptureHold", request, v)
        hold_id = parse_name(v, "name", request.name, "transactions")
        outcome = self._ledger.capture_hold(
            caller.tenant_id,
            hold_id,
            amount=request.amount,
            cmd=_details(request, v, caller),
            idem=idem,
            violations=v,
        )
        return responder.respond(outcome)

    def VoidHold(self, request: pb.VoidHoldRequest, context: grpc.ServicerContext) -> pb.VoidHoldResponse:
        v = Violations()
        responder = Responder(_voided, pb.VoidHoldResponse.FromString)
        idem = responder.idempotency("VoidHold", request, v)
        hold_id = parse_name(v, "name", request.name, "transactions")
        return responder.respond(self._ledger.void_hold(tenant_of_call(), hold_id, idem, v))

    def RefundTransaction(
        self, request: pb.RefundTransactionRequest, context: grpc.ServicerContext
    ) -> pb.RefundTransactionResponse:
        caller = current_caller()
        v = Violations()
        responder = Responder(_refunded, pb.RefundTransactionResponse.FromString)
        idem = responder.idempotency("RefundTransaction", request, v)
        original_id = parse_name(v, "name", request.name, "transactions")
        details = _details(request, v, caller)
        outcome = self._ledger.refund(
            caller.tenant_id, original_id, amount=request.amount, cmd=details, idem=idem, violations=v
        )
        return responder.respond(outcome)

    def CreateTransfer(
        self, request: pb.CreateTransferRequest, context: grpc.ServicerContext
    ) -> pb.CreateTransferResponse:
        caller = current_caller()
        v = Violations()
        responder = Responder(_transferred, pb.CreateTransferResponse.FromString)
        idem = responder.idempotency("CreateTransfer", request, v)
        cmd = _command(request.transfer, v, caller, "transfer")
        return responder.respond(self._ledger.transfer(caller.tenant_id, cmd, idem, v))

    def ImportTransactions(
        self, request_iterator: Iterator[pb.ImportTransactionsRequest], context: grpc.ServicerContext
    ) -> pb.ImportTransactionsResponse:
        """Each chunk is posted as an independent batch as it arrives: a broken stream
        keeps what was committed, and sending it again replays those items."""
        caller = current_caller()
        response = pb.ImportTransactionsResponse()
        reply_bytes = SCALARS_BYTES
        for chunk_index, chunk in enumerate(request_iterator):
            items, responders = _batch_items(chunk.requests, caller, require_request_id=True)
            try:
                results = self._ledger.post_batch(caller.tenant_id, items, atomic=False)
            except LedgerError as err:  # the chunk itself is malformed (empty or too large)
                raise LedgerError(
                    err.category,
                    err.reason,
                    f"chunk {chunk_index}: {err.message}",
                    metadata={**err.metadata, "chunk_index": str(chunk_index)},
                    violations=err.violations,
                ) from err
            chunk_results = [
                _item_result(r, responder) for r, responder in zip(results, responders, strict=True)
            ]
            # Measured once built, its chunk committed: a reply above the message limit
            # would reach the client as a bare RESOURCE_EXHAUSTED, saying nothing of what
            # this call committed.
            reply_bytes += sum(map(framed_size, chunk_results))
            if reply_bytes > self._max_reply_bytes:
                raise _import_too_large(
                    chunk_index, len(response.results), len(response.results) + len(results)
                )
            response.results.extend(chunk_results)
            for result in results:
                if isinstance(result, LedgerError):
                    response.failed_count += 1
                elif isinstance(result, Replay):
                    response.replayed_count += 1
                else:
                    response.posted_count += 1
        return response

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
            type=parse_type_filter(v, "type", request.type),
            status=parse_status_filter(v, "status", request.status),
            external_id=request.external_id,
            related_id=parse_name(
                v, "related_transaction", request.related_transaction, "transactions", required=False
            ),
        )
        items, token = self._ledger.list_transactions(
            tenant_of_call(), flt, request.page_size, request.page_token, v
        )
        return pb.ListTransactionsResponse(
            transactions=[transaction_pb(t) for t in items], next_page_token=token
        )

    def ListTransactionChanges(
        self, request: pb.ListTransactionChangesRequest, context: grpc.ServicerContext
    ) -> pb.ListTransactionChangesResponse:
        page = self._ledger.list_transaction_changes(
            tenant_of_call(), request.page_size, request.page_token, request.start_at_end
        )
        return pb.ListTransactionChangesResponse(
            changes=_changes_pb(page.changes), next_page_token=page.next_token
        )

    def WatchTransactionChanges(
        self, request: pb.WatchTransactionChangesRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchTransactionChangesResponse]:
        """The feed read page by page, as ListTransactionChanges reads it; once caught up,
        waiting for the next commit (or the poll interval) before reading again.
        Watches at the same place in the feed send the page the first of them read."""
        tenant, token = tenant_of_call(), request.page_token
        while True:
            place = (tenant, token, request.page_size)
            page = self._shared.get(place)
            if page is None:
                seen, read_at = self._waiters.commits, time.monotonic()  # a commit after it is not missed
                read = self._ledger.list_transaction_changes(tenant, request.page_size, token)
                response = pb.WatchTransactionChangesResponse(
                    changes=_changes_pb(read.changes), next_page_token=read.next_token
                )
                page = SharedPage(response, seen, read_at, read.caught_up)
                if read.changes:  # an empty page is cheap to read, and must not be taken for news
                    self._shared.keep(place, page)
            token = page.response.next_page_token
            if page.response.changes:
                yield page.response
            if page.caught_up:
                self._waiters.wait(page.seen, page.read_at)
