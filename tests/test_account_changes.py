"""Changes to an account itself (UpdateAccount, FreezeAccount, UnfreezeAccount,
CloseAccount) in the core and over gRPC, against a real store (SQLite and Postgres):
what each status refuses and allows, which changes are allowed, and that a refused
change changes nothing."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2
from ledger.v1 import account_pb2, account_service_pb2, account_service_pb2_grpc
from ledger_client import LedgerClient, LedgerError
from sqlalchemy import Engine

from ledger_server.core.ledger import Idempotency, Ledger
from ledger_server.core.model import (
    Account,
    AccountChanges,
    AccountStatus,
    AccountUpdate,
    Creator,
    NewAccount,
    StatusChange,
)
from tests.support import START, Clock, invariant_violations
from tests.test_lifecycle import DAY, capture, credit, debit, hold, open_account, refund, transfer
from tests.test_lifecycle import refusal as refused

T = "default"
ACTIVE, FROZEN, CLOSED = AccountStatus.ACTIVE, AccountStatus.FROZEN, AccountStatus.CLOSED
OPS, SUPPORT = Creator("a" * 32, "ops-console"), Creator("b" * 32, "support-tool")


def change(
    ledger: Ledger, account: Account, target: AccountStatus, reason: str = "", by: Creator = OPS
) -> Account:
    changed = ledger.change_account_status(T, account.id, target, reason, by=by)
    assert isinstance(changed, Account)
    return changed


def test_a_frozen_account_refuses_postings_until_unfrozen(book: Ledger, clock: Clock, engine: Engine) -> None:
    account, other = open_account(book), open_account(book)
    credit(book, account, 500)
    credit(book, other, 500)
    pending = hold(book, account, 100)
    captured = hold(book, account, 50)
    original = debit(book, account, 10)
    clock.advance(DAY)

    frozen = change(book, account, FROZEN, "chargeback review #12")
    assert (frozen.status, frozen.status_reason) == (FROZEN, "chargeback review #12")
    assert frozen.updated_at == frozen.status_changed_at == clock.now
    assert frozen.status_changed_by == OPS
    assert (frozen.posted, frozen.pending) == (490, 150)
    assert book.get_account(T, account.id) == frozen

    refusals = [
        refused(credit, book, account, 1),
        refused(debit, book, account, 1),
        refused(hold, book, account, 1),
        refused(capture, book, captured),
        refused(refund, book, original),
        refused(transfer, book, account, other, 1),
        refused(transfer, book, other, account, 1),
    ]
    for err in refusals:
        assert (err.reason, err.metadata["status"]) == ("ACCOUNT_NOT_ACTIVE", "frozen")
    assert book.get_account(T, account.id) == frozen  # nothing of it changed

    # A hold can still be released: that returns the customer's money to them.
    book.void_hold(T, pending.id)
    assert book.get_account(T, account.id).pending == 50

    clock.advance(DAY)
    active = change(book, account, ACTIVE, "review closed", by=SUPPORT)
    assert (active.status, active.status_reason) == (ACTIVE, "review closed")
    assert (active.status_changed_at, active.status_changed_by) == (clock.now, SUPPORT)
    capture(book, captured)
    assert credit(book, account, 1).ending_balance == 441
    assert invariant_violations(engine) == []


def test_a_change_to_the_current_status_changes_nothing(book: Ledger, clock: Clock) -> None:
    account = open_account(book)
    assert change(book, account, ACTIVE, "ignored") == book.get_account(T, account.id) == account
    assert (account.status_reason, account.status_changed_at, account.status_changed_by) == ("", None, None)
    frozen = change(book, account, FROZEN, "first")
    clock.advance(DAY)
    assert change(book, account, FROZEN, "second", by=SUPPORT) == frozen
    closed = change(book, account, CLOSED, "done")
    clock.advance(DAY)
    assert change(book, account, CLOSED, "again") == closed
    assert (closed.status, closed.status_reason) == (CLOSED, "done")


def test_only_an_empty_account_closes(book: Ledger, clock: Clock, engine: Engine) -> None:
    account, other = open_account(book), open_account(book)
    credit(book, account, 300)
    held = hold(book, account, 100)
    before = book.get_account(T, account.id)

    err = refused(change, book, account, CLOSED)
    assert err.reason == "ACCOUNT_NOT_EMPTY"
    assert err.metadata == {
        "account": f"accounts/{account.id}",
        "posted": "300",
        "pending": "100",
        "expiring": "0",
    }
    book.void_hold(T, held.id)
    assert refused(change, book, account, CLOSED).metadata["pending"] == "0"
    transfer(book, account, other, 300)
    assert book.get_account(T, account.id).status is ACTIVE  # the refusals changed nothing
    assert before.status_reason == ""

    closed = change(book, account, CLOSED, "customer left")
    assert (closed.status, closed.posted, closed.pending) == (CLOSED, 0, 0)
    assert refused(transfer, book, other, account, 1).metadata["status"] == "closed"
    for target in (ACTIVE, FROZEN):
        err = refused(change, book, account, target)
        assert (err.reason, err.metadata["status"]) == ("ACCOUNT_NOT_ACTIVE", "closed")
    assert book.get_account(T, account.id) == closed
    assert invariant_violations(engine) == []


def test_an_account_at_zero_with_a_hold_or_expiring_credit_stays_open(book: Ledger) -> None:
    """On a credit line, posted can be 0 while a hold is pending, or while a lot of
    expiring credit would later expire into a negative balance on an account that can
    take no posting."""
    held, lots = open_account(book, floor=-100), open_account(book, floor=-100)
    hold(book, held, 50)
    err = refused(change, book, held, CLOSED)
    assert (err.metadata["posted"], err.metadata["pending"]) == ("0", "50")
    debit(book, lots, 100)
    credit(book, lots, 100, expires=START + DAY)
    err = refused(change, book, lots, CLOSED)
    assert (err.metadata["posted"], err.metadata["expiring"]) == ("0", "100")


def test_expired_credit_and_lapsed_holds_are_written_off_before_closing(
    book: Ledger, clock: Clock, engine: Engine
) -> None:
    account = open_account(book)
    credit(book, account, 70, expires=START + DAY)
    hold(book, account, 30, expires=START + DAY)
    assert refused(change, book, account, CLOSED).metadata["expiring"] == "70"
    clock.advance(2 * DAY)

    closed = change(book, account, CLOSED)
    assert (closed.status, closed.posted, closed.pending, closed.expiring) == (CLOSED, 0, 0, 0)
    assert closed.updated_at == clock.now
    assert book.get_account(T, account.id) == closed
    assert invariant_violations(engine) == []


def test_a_frozen_account_keeps_its_next_expirations(book: Ledger, clock: Clock) -> None:
    account = open_account(book)
    credit(book, account, 40, expires=START + DAY)
    credit(book, account, 5, expires=START + 2 * DAY)
    frozen = change(book, account, FROZEN)
    assert [(e.amount, e.expires_at) for e in frozen.next_expirations] == [
        (40, START + DAY),
        (5, START + 2 * DAY),
    ]
    assert frozen == book.get_account(T, account.id)
    # Freezing again changes no status, but the credit that expired meanwhile is written off.
    clock.advance(DAY)
    again = change(book, account, FROZEN)
    assert (again.posted, again.expiring, again.updated_at) == (5, 5, clock.now)
    assert again == book.get_account(T, account.id)


def test_bad_requests_are_refused_with_every_field_named(book: Ledger) -> None:
    account = open_account(book)
    err = refused(book.change_account_status, T, account.id, FROZEN, "x" * 501)
    assert (err.reason, [v.field for v in err.violations]) == ("INVALID_REQUEST", ["reason"])
    assert (
        refused(book.change_account_status, T, account.id, FROZEN, "a\x00b").violations[0].field == "reason"
    )
    missing = refused(book.change_account_status, T, str(uuid.uuid4()), FROZEN, "")
    assert missing.reason == "ACCOUNT_NOT_FOUND"
    assert book.get_account(T, account.id) == account


def test_another_tenants_account_is_not_found(book: Ledger) -> None:
    account = open_account(book)
    assert refused(book.change_account_status, "acme", account.id, FROZEN, "").reason == "ACCOUNT_NOT_FOUND"
    assert book.get_account(T, account.id).status is ACTIVE


def test_a_status_change_replays_by_request_id(book: Ledger) -> None:
    account = open_account(book)
    rendered: list[Account] = []

    def render(result: Account) -> bytes:
        rendered.append(result)
        return result.status.value.encode()

    idem = Idempotency(str(uuid.uuid4()), b"f" * 32, render)
    first = book.change_account_status(T, account.id, FROZEN, "", idem=idem)
    change(book, account, ACTIVE)
    again = book.change_account_status(T, account.id, FROZEN, "", idem=idem)
    assert isinstance(first, Account) and first.status is FROZEN
    assert getattr(again, "response", None) == b"frozen"  # the stored response, not a second freeze
    assert book.get_account(T, account.id).status is ACTIVE
    assert len(rendered) == 1


def history(ledger: Ledger, account: Account, page_size: int = 10, token: str = "") -> list[StatusChange]:
    changes, _ = ledger.list_status_changes(T, account.id, page_size, token)
    return changes


def test_every_status_change_is_kept_newest_first_and_no_ops_are_not(book: Ledger, clock: Clock) -> None:
    account = open_account(book)
    assert history(book, account) == []
    change(book, account, ACTIVE, "already active")  # changes nothing: not listed
    start = clock.now
    change(book, account, FROZEN, "chargeback review #12")
    change(book, account, FROZEN, "again")
    clock.advance(DAY)
    change(book, account, ACTIVE, "review closed", by=SUPPORT)
    clock.advance(DAY)
    change(book, account, CLOSED, "churned")
    assert refused(change, book, account, ACTIVE).reason == "ACCOUNT_NOT_ACTIVE"  # refused: not listed
    assert history(book, account) == [
        StatusChange(ACTIVE, CLOSED, "churned", start + 2 * DAY, OPS),
        StatusChange(FROZEN, ACTIVE, "review closed", start + DAY, SUPPORT),
        StatusChange(ACTIVE, FROZEN, "chargeback review #12", start, OPS),
    ]
    # Pages follow each other without gaps; a token belongs to its account.
    first, token = book.list_status_changes(T, account.id, 2, "")
    rest, end = book.list_status_changes(T, account.id, 2, token)
    assert (first + rest, end) == (history(book, account), "")
    other = open_account(book)
    assert refused(book.list_status_changes, T, other.id, 2, token).reason == "INVALID_PAGE_TOKEN"
    assert refused(book.list_status_changes, "acme", account.id, 2, "").reason == "ACCOUNT_NOT_FOUND"
    assert refused(book.list_status_changes, T, account.id, -1, "").reason == "INVALID_REQUEST"


# -- over gRPC ---------------------------------------------------------------------------


def test_freeze_unfreeze_and_close_over_grpc(client: LedgerClient, token: str) -> None:
    account = client.create_account(currency="EUR")
    client.credit(account.name, 250, currency="EUR")
    request_id = str(uuid.uuid4())
    frozen = client.freeze_account(account.name, reason="KYC expired", request_id=request_id)
    assert (frozen.status, frozen.status_reason, frozen.balance.posted) == (2, "KYC expired", 250)
    assert frozen.status_changed_by.token == f"tokens/{token.split('_')[1]}"
    assert frozen.status_change_time == frozen.update_time
    assert not account.HasField("status_change_time") and not account.HasField("status_changed_by")
    assert client.get_account(account.name) == frozen
    # A retry answers what the first call did, byte for byte; another request with the
    # same request_id is refused.
    assert client.freeze_account(account.name, reason="KYC expired", request_id=request_id) == frozen
    with pytest.raises(LedgerError) as reused:
        client.freeze_account(account.name, reason="other", request_id=request_id)
    assert reused.value.reason == "REQUEST_ID_REUSED"

    with pytest.raises(LedgerError) as inactive:
        client.debit(account.name, 1, currency="EUR")
    assert (inactive.value.code, inactive.value.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ACCOUNT_NOT_ACTIVE",
    )
    assert client.unfreeze_account(account.name).status == 1

    with pytest.raises(LedgerError) as not_empty:
        client.close_account(account.name, reason="churned")
    assert (not_empty.value.code, not_empty.value.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ACCOUNT_NOT_EMPTY",
    )
    assert not_empty.value.error_metadata["posted"] == "250"
    client.debit(account.name, 250, currency="EUR")
    closed = client.close_account(account.name, reason="churned")
    assert (closed.status, closed.status_reason) == (3, "churned")

    changes = list(client.iter_account_status_changes(account.name, page_size=1))
    assert [(c.previous_status, c.status, c.reason) for c in changes] == [
        (account_pb2.ACCOUNT_STATUS_ACTIVE, account_pb2.ACCOUNT_STATUS_CLOSED, "churned"),
        (account_pb2.ACCOUNT_STATUS_FROZEN, account_pb2.ACCOUNT_STATUS_ACTIVE, ""),
        (account_pb2.ACCOUNT_STATUS_ACTIVE, account_pb2.ACCOUNT_STATUS_FROZEN, "KYC expired"),
    ]
    assert (changes[0].change_time, changes[0].changed_by) == (
        closed.status_change_time,
        closed.status_changed_by,
    )
    with pytest.raises(LedgerError) as missing:
        client.list_account_status_changes(f"accounts/{uuid.uuid4()}")
    assert missing.value.reason == "ACCOUNT_NOT_FOUND"

    with pytest.raises(LedgerError) as bad:
        client.freeze_account("accounts/nope", reason="\x01")
    assert bad.value.reason == "INVALID_REQUEST"
    assert sorted(v.field for v in bad.value.field_violations) == ["name", "reason"]


def test_accounts_list_by_status(book: Ledger) -> None:
    made = [open_account(book) for _ in range(5)]
    for account in made[1::2]:
        change(book, account, FROZEN)
    frozen, token = book.list_accounts(T, "", 1, "", status=FROZEN)
    rest, end = book.list_accounts(T, "", 10, token, status=FROZEN)
    assert [a.id for a in frozen + rest] == [made[1].id, made[3].id]
    assert end == ""
    active, _ = book.list_accounts(T, "", 10, "", status=ACTIVE)
    assert [a.id for a in active] == [made[0].id, made[2].id, made[4].id]
    assert len(book.list_accounts(T, "", 10, "")[0]) == 5
    # A page token is bound to its filters: another status's, or none, is refused.
    for other in (ACTIVE, None):
        assert refused(book.list_accounts, T, "", 10, token, status=other).reason == "INVALID_PAGE_TOKEN"


def test_accounts_list_by_status_over_grpc(client: LedgerClient) -> None:
    kept, frozen = client.create_account(currency="USD"), client.create_account(currency="USD")
    client.freeze_account(frozen.name)
    assert [a.name for a in client.iter_accounts(status="frozen")] == [frozen.name]
    assert [a.name for a in client.iter_accounts(status="ACCOUNT_STATUS_ACTIVE")] == [kept.name]
    assert client.list_accounts(status="closed").accounts == []
    with pytest.raises(ValueError, match="invalid status"):
        client.list_accounts(status="gone")


def test_an_unknown_status_filter_is_refused(client: LedgerClient, token: str) -> None:
    stub = account_service_pb2_grpc.AccountServiceStub(client.channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.ListAccounts(
            account_service_pb2.ListAccountsRequest(status=99),  # type: ignore[arg-type]
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
    err = LedgerError.from_rpc_error(info.value)
    assert (err.reason, [v.field for v in err.field_violations]) == ("INVALID_REQUEST", ["status"])


# -- UpdateAccount -------------------------------------------------------------------------


def test_a_credit_line_is_raised_and_lowered_as_far_as_it_is_drawn(book: Ledger, engine: Engine) -> None:
    account = open_account(book)
    assert refused(debit, book, account, 1).reason == "INSUFFICIENT_FUNDS"
    wider = book.update_account(T, account.id, AccountChanges(balance_floor=-500))
    assert isinstance(wider, Account) and wider.balance_floor == -500
    debit(book, account, 300)
    hold(book, account, 100)  # available is now -400
    err = refused(book.update_account, T, account.id, AccountChanges(balance_floor=-399))
    assert (err.reason, err.metadata["available"], err.metadata["balance_floor"]) == (
        "BALANCE_BELOW_FLOOR",
        "-400",
        "-399",
    )
    assert book.get_account(T, account.id).balance_floor == -500  # the refusal changed nothing
    narrower = book.update_account(T, account.id, AccountChanges(balance_floor=-400))
    assert isinstance(narrower, Account) and (narrower.balance_floor, narrower.available) == (-400, -400)
    assert refused(debit, book, account, 1).reason == "INSUFFICIENT_FUNDS"
    assert invariant_violations(engine) == []


def test_only_the_fields_given_change(book: Ledger, clock: Clock) -> None:
    account = book.create_account(T, NewAccount("cust-1", "USD", -10, {"tier": "gold"}))
    assert isinstance(account, Account)
    clock.advance(DAY)
    renamed = book.update_account(T, account.id, AccountChanges(external_ref="cust-2"))
    assert isinstance(renamed, Account)
    assert (renamed.external_ref, renamed.balance_floor, renamed.metadata) == (
        "cust-2",
        -10,
        {"tier": "gold"},
    )
    assert renamed.updated_at == clock.now and renamed == book.get_account(T, account.id)
    cleared = book.update_account(T, account.id, AccountChanges(metadata={}))
    assert isinstance(cleared, Account) and (cleared.metadata, cleared.external_ref) == ({}, "cust-2")
    assert [a.id for a in book.list_accounts(T, "cust-2", 10, "")[0]] == [account.id]


def test_bad_updates_name_their_fields_and_change_nothing(book: Ledger) -> None:
    account = open_account(book)
    bad = AccountChanges(external_ref="x" * 129, balance_floor=1, metadata={"": "v"})
    err = refused(book.update_account, T, account.id, bad)
    assert err.reason == "INVALID_REQUEST"
    assert [v.field for v in err.violations] == [
        "account.external_ref",
        "account.balance_floor",
        "account.metadata['']",
    ]
    closed = change(book, account, CLOSED)
    assert (
        refused(book.update_account, T, account.id, AccountChanges(external_ref="x")).reason
        == "ACCOUNT_NOT_ACTIVE"
    )
    assert book.get_account(T, account.id) == closed


def updates(ledger: Ledger, account: Account, page_size: int = 10, token: str = "") -> list[AccountUpdate]:
    found, _ = ledger.list_account_updates(T, account.id, page_size, token)
    return found


def test_every_update_that_changes_a_detail_is_kept_with_what_it_changed(book: Ledger, clock: Clock) -> None:
    account = book.create_account(T, NewAccount("cust-1", "USD", 0, {"tier": "gold"}))
    assert isinstance(account, Account) and updates(book, account) == []
    start = clock.now
    book.update_account(T, account.id, AccountChanges(balance_floor=-500), "credit line approved", OPS)
    clock.advance(DAY)
    # The values it already has: nothing changes, nothing is kept, updated_at stays.
    same = book.update_account(T, account.id, AccountChanges("cust-1", -500, {"tier": "gold"}), "again", OPS)
    assert isinstance(same, Account) and same.updated_at == start
    merged = AccountChanges(external_ref="cust-2", balance_floor=-500, metadata={})
    book.update_account(T, account.id, merged, "merged into cust-2", SUPPORT)
    debit(book, account, 400)
    # Refused: nothing kept.
    assert refused(book.update_account, T, account.id, AccountChanges(balance_floor=0)).reason == (
        "BALANCE_BELOW_FLOOR"
    )
    err = refused(book.update_account, T, account.id, AccountChanges(balance_floor=-450), "x" * 501)
    assert (err.reason, [v.field for v in err.violations]) == ("INVALID_REQUEST", ["reason"])
    assert updates(book, account) == [
        AccountUpdate(
            AccountChanges(external_ref="cust-1", metadata={"tier": "gold"}),
            AccountChanges(external_ref="cust-2", metadata={}),
            "merged into cust-2",
            start + DAY,
            SUPPORT,
        ),
        AccountUpdate(
            AccountChanges(balance_floor=0),
            AccountChanges(balance_floor=-500),
            "credit line approved",
            start,
            OPS,
        ),
    ]
    assert updates(book, account)[0].changed_fields == ["external_ref", "metadata"]
    # Pages follow each other without gaps; a token belongs to its account and history.
    first, token = book.list_account_updates(T, account.id, 1, "")
    rest, end = book.list_account_updates(T, account.id, 1, token)
    assert (first + rest, end) == (updates(book, account), "")
    other = open_account(book)
    assert refused(book.list_account_updates, T, other.id, 1, token).reason == "INVALID_PAGE_TOKEN"
    assert refused(book.list_status_changes, T, account.id, 1, token).reason == "INVALID_PAGE_TOKEN"
    assert refused(book.list_account_updates, "acme", account.id, 1, "").reason == "ACCOUNT_NOT_FOUND"


def test_update_account_over_grpc(client: LedgerClient, token: str) -> None:
    account = client.create_account(currency="USD", external_ref="a", metadata={"k": "v"})
    request_id = str(uuid.uuid4())
    updated = client.update_account(account.name, balance_floor=-1000, request_id=request_id)
    assert (updated.balance_floor, updated.external_ref, dict(updated.metadata)) == (-1000, "a", {"k": "v"})
    assert client.update_account(account.name, balance_floor=-1000, request_id=request_id) == updated
    client.debit(account.name, 600, "USD")
    with pytest.raises(LedgerError) as below:
        client.update_account(account.name, balance_floor=0)
    assert (below.value.code, below.value.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "BALANCE_BELOW_FLOOR",
    )

    stub = account_service_pb2_grpc.AccountServiceStub(client.channel)
    metadata = (("authorization", f"Bearer {token}"),)
    everything = account_service_pb2.UpdateAccountRequest(
        account=account_pb2.Account(name=account.name, external_ref="b", balance_floor=-600),
        update_mask=field_mask_pb2.FieldMask(paths=["*"]),
    )
    replaced = stub.UpdateAccount(everything, metadata=metadata, timeout=10).account
    assert (replaced.external_ref, replaced.balance_floor, dict(replaced.metadata)) == ("b", -600, {})
    for paths, problem in [([], "required"), (["currency", "status"], "cannot change 'currency'")]:
        request = account_service_pb2.UpdateAccountRequest(
            account=account_pb2.Account(name=account.name), update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
        with pytest.raises(grpc.RpcError) as info:
            stub.UpdateAccount(request, metadata=metadata, timeout=10)
        err = LedgerError.from_rpc_error(info.value)
        assert err.reason == "INVALID_REQUEST"
        assert {v.field for v in err.field_violations} == {"update_mask"}
        assert problem in err.field_violations[0].description
    assert client.get_account(account.name) == replaced


def test_account_updates_over_grpc(client: LedgerClient, token: str) -> None:
    account = client.create_account(currency="USD", external_ref="a", metadata={"k": "v"})
    request_id = str(uuid.uuid4())
    raised = client.update_account(
        account.name, balance_floor=-1000, reason="limit review", request_id=request_id
    )
    again = client.update_account(
        account.name, balance_floor=-1000, reason="limit review", request_id=request_id
    )
    assert again == raised  # a replay: kept once
    client.update_account(account.name, external_ref="a", metadata={"k": "w"})  # only metadata changed
    (changed, floor) = client.iter_account_updates(account.name)
    assert (list(floor.changed_fields.paths), floor.reason) == (["balance_floor"], "limit review")
    assert (floor.previous.balance_floor, floor.current.balance_floor) == (0, -1000)
    assert floor.updated_by.token == f"tokens/{token.split('_')[1]}"
    assert floor.update_time == raised.update_time
    assert list(changed.changed_fields.paths) == ["metadata"]
    assert (dict(changed.previous.metadata), dict(changed.current.metadata)) == ({"k": "v"}, {"k": "w"})
    assert (changed.previous.external_ref, changed.current.external_ref) == ("", "")  # unchanged: empty
    page = client.list_account_updates(account.name, page_size=1)
    assert (list(page.updates), bool(page.next_page_token)) == ([changed], True)
    for name, code in [
        ("accounts/" + str(uuid.uuid4()), grpc.StatusCode.NOT_FOUND),
        ("transactions/x", grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        with pytest.raises(LedgerError) as info:
            client.list_account_updates(name)
        assert info.value.code == code
