"""ledger.v1.AccountService: translate requests for the core and results back."""

from __future__ import annotations

from typing import TypeVar

import grpc
from ledger.v1 import account_service_pb2 as pb
from ledger.v1 import account_service_pb2_grpc

from ledger_server.api.caller import current_caller, tenant_of_call
from ledger_server.api.convert import (
    account_pb,
    account_update_pb,
    parse_account_status,
    parse_date,
    parse_metadata,
    parse_name,
    parse_time,
    parse_update_mask,
    status_change_pb,
)
from ledger_server.api.idempotency import Responder
from ledger_server.core.errors import invalid
from ledger_server.core.ledger import Ledger
from ledger_server.core.model import UPDATABLE_FIELDS, Account, AccountChanges, AccountStatus, NewAccount
from ledger_server.core.validation import Violations

# The mutations whose reply is the account alone.
R = TypeVar(
    "R",
    pb.CreateAccountResponse,
    pb.UpdateAccountResponse,
    pb.FreezeAccountResponse,
    pb.UnfreezeAccountResponse,
    pb.CloseAccountResponse,
)
StatusRequest = pb.FreezeAccountRequest | pb.UnfreezeAccountRequest | pb.CloseAccountRequest


def _responder(reply: type[R]) -> Responder[Account, R]:
    return Responder(lambda account: reply(account=account_pb(account)), reply.FromString)


class AccountServicer(account_service_pb2_grpc.AccountServiceServicer):
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def CreateAccount(
        self, request: pb.CreateAccountRequest, context: grpc.ServicerContext
    ) -> pb.CreateAccountResponse:
        v = Violations()
        responder = _responder(pb.CreateAccountResponse)
        idem = responder.idempotency("CreateAccount", request, v)
        a = request.account
        new = NewAccount(
            external_ref=a.external_ref,
            currency=a.currency,
            balance_floor=a.balance_floor,
            metadata=parse_metadata(a.metadata),
        )
        return responder.respond(self._ledger.create_account(tenant_of_call(), new, idem, v))

    def GetAccount(
        self, request: pb.GetAccountRequest, context: grpc.ServicerContext
    ) -> pb.GetAccountResponse:
        v = Violations()
        account_id = parse_name(v, "name", request.name, "accounts")
        if v:
            raise invalid(v)
        return pb.GetAccountResponse(
            account=account_pb(self._ledger.get_account(tenant_of_call(), account_id))
        )

    def GetAccountBalance(
        self, request: pb.GetAccountBalanceRequest, context: grpc.ServicerContext
    ) -> pb.GetAccountBalanceResponse:
        v = Violations()
        account_id = parse_name(v, "name", request.name, "accounts")
        at = parse_time(v, "as_of_time", request.HasField("as_of_time"), request.as_of_time)
        date = parse_date(v, "as_of_posting_date", request.as_of_posting_date)
        if (
            request.HasField("as_of_posting_date")
            and date is None
            and "as_of_posting_date" not in {x.field for x in v}
        ):
            v.add("as_of_posting_date", "must be a valid calendar date with year, month and day")
        posted = self._ledger.balance_as_of(tenant_of_call(), account_id, at, date, v)
        return pb.GetAccountBalanceResponse(posted=posted)

    def ListAccounts(
        self, request: pb.ListAccountsRequest, context: grpc.ServicerContext
    ) -> pb.ListAccountsResponse:
        v = Violations()
        status = parse_account_status(v, "status", request.status)
        items, token = self._ledger.list_accounts(
            tenant_of_call(),
            request.external_ref,
            request.page_size,
            request.page_token,
            status=status,
            violations=v,
        )
        return pb.ListAccountsResponse(accounts=[account_pb(a) for a in items], next_page_token=token)

    def ListAccountStatusChanges(
        self, request: pb.ListAccountStatusChangesRequest, context: grpc.ServicerContext
    ) -> pb.ListAccountStatusChangesResponse:
        v = Violations()
        account_id = parse_name(v, "parent", request.parent, "accounts")
        items, token = self._ledger.list_status_changes(
            tenant_of_call(), account_id, request.page_size, request.page_token, v
        )
        return pb.ListAccountStatusChangesResponse(
            status_changes=[status_change_pb(c) for c in items], next_page_token=token
        )

    def ListAccountUpdates(
        self, request: pb.ListAccountUpdatesRequest, context: grpc.ServicerContext
    ) -> pb.ListAccountUpdatesResponse:
        v = Violations()
        account_id = parse_name(v, "parent", request.parent, "accounts")
        items, token = self._ledger.list_account_updates(
            tenant_of_call(), account_id, request.page_size, request.page_token, v
        )
        return pb.ListAccountUpdatesResponse(
            updates=[account_update_pb(u) for u in items], next_page_token=token
        )

    def UpdateAccount(
        self, request: pb.UpdateAccountRequest, context: grpc.ServicerContext
    ) -> pb.UpdateAccountResponse:
        v = Violations()
        responder = _responder(pb.UpdateAccountResponse)
        idem = responder.idempotency("UpdateAccount", request, v)
        a = request.account
        account_id = parse_name(v, "account.name", a.name, "accounts")
        fields = parse_update_mask(v, "update_mask", request.update_mask.paths, UPDATABLE_FIELDS)
        changes = AccountChanges(
            external_ref=a.external_ref if "external_ref" in fields else None,
            balance_floor=a.balance_floor if "balance_floor" in fields else None,
            metadata=parse_metadata(a.metadata) if "metadata" in fields else None,
        )
        caller = current_caller()
        outcome = self._ledger.update_account(
            caller.tenant_id, account_id, changes, request.reason, caller.creator, idem=idem, violations=v
        )
        return responder.respond(outcome)

    def FreezeAccount(
        self, request: pb.FreezeAccountRequest, context: grpc.ServicerContext
    ) -> pb.FreezeAccountResponse:
        return self._change_status("FreezeAccount", request, AccountStatus.FROZEN, pb.FreezeAccountResponse)

    def UnfreezeAccount(
        self, request: pb.UnfreezeAccountRequest, context: grpc.ServicerContext
    ) -> pb.UnfreezeAccountResponse:
        return self._change_status(
            "UnfreezeAccount", request, AccountStatus.ACTIVE, pb.UnfreezeAccountResponse
        )

    def CloseAccount(
        self, request: pb.CloseAccountRequest, context: grpc.ServicerContext
    ) -> pb.CloseAccountResponse:
        return self._change_status("CloseAccount", request, AccountStatus.CLOSED, pb.CloseAccountResponse)

    def _change_status(self, method: str, request: StatusRequest, target: AccountStatus, reply: type[R]) -> R:
        v = Violations()
        responder = _responder(reply)
        idem = responder.idempotency(method, request, v)
        account_id = parse_name(v, "name", request.name, "accounts")
        caller = current_caller()
        outcome = self._ledger.change_account_status(
            caller.tenant_id,
            account_id,
            target,
            request.reason,
            by=caller.creator,
            idem=idem,
            violations=v,
        )
        return responder.respond(outcome)
