"""The five seed APIs (../shared/seeds/000..004), replayed through the Python client against
a real server on SQLite and Postgres: each seed's example request is expressed through
our API, and every field of its response is read back from ours with the right value.
docs/seeds.md is the mapping these tests check."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import grpc
import pytest
from ledger.v1 import transaction_pb2
from ledger_client import (
    LedgerClient,
    LedgerError,
    Reason,
    check_length,
    date_from_proto,
    datetime_from_proto,
    from_minor,
    from_signed_amount,
    hold_request,
    signed_transaction_request,
    to_minor,
    to_signed_amount,
    to_signed_balance,
    transaction_request,
)

from ledger_server.api.server import LedgerServer
from ledger_server.core.admin import Admin
from ledger_server.core.ledger import Ledger
from tests.conftest import TENANT

UTC = dt.UTC


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


def uuid_of(name: str, collection: str) -> str:
    """The id of a resource name (`transactions/{uuid}`), checked to be a UUID."""
    prefix, _, rest = name.partition("/")
    assert prefix == collection
    return str(uuid.UUID(rest))


def iso8601(ts: Any) -> str:
    """A Timestamp as seed 000 writes times: `2025-11-07T18:48:47+00:00`."""
    return datetime_from_proto(ts).replace(microsecond=0).isoformat()


def assert_recent(ts: Any, before: dt.datetime) -> None:
    """`ts` was set by the server during this test (between `before` and now)."""
    at = datetime_from_proto(ts)
    assert before - dt.timedelta(seconds=5) <= at <= now() + dt.timedelta(seconds=5)


def assert_consistent(client: LedgerClient) -> None:
    report = client.verify_ledger()
    assert list(report.violations) == []
    assert report.transactions_checked > 0


@pytest.fixture
def connect(server: LedgerServer) -> Iterator[Any]:
    """Open further clients (other tokens) on the test server; closed afterwards."""
    opened: list[LedgerClient] = []

    def open_client(token: str | None) -> LedgerClient:
        c = LedgerClient(f"127.0.0.1:{server.port}", token=token, timeout=20.0, max_attempts=1)
        opened.append(c)
        return c

    yield open_client
    for c in opened:
        c.close()


# -- seed 000: POST /customer-users/{user}/credit-transactions --------------------------


def test_seed_000_customer_user_credit_transaction(
    client: LedgerClient, ledger: Ledger, monkeypatch: pytest.MonkeyPatch, connect: Any
) -> None:
    user = "00000000-0000-4000-8000-000000000000"  # path parameter `user`
    account = client.create_account(currency="USD", external_ref=user).name
    before = now()

    # {"type": "credit", "amount": 100, "description": "...", "date": "2025-01-01"}
    body: dict[str, Any] = {
        "type": "credit",
        "amount": 100,
        "description": "Description of transaction",
        "date": "2025-01-01",
    }
    txn = client.create_transaction(
        account=account,
        direction=body["type"],
        amount=body["amount"],
        currency="USD",
        description=body["description"],
        posting_date=dt.date.fromisoformat(body["date"]),
    )
    # 201 data.*
    data: dict[str, Any] = {
        "type": transaction_pb2.Direction.Name(txn.direction).removeprefix("DIRECTION_").lower(),
        "amount": txn.amount,
        "description": txn.description or None,
        "user_id": client.get_account(txn.account).external_ref,
        "posting_date": (d.isoformat() if (d := date_from_proto(txn.posting_date)) else None),
        "created_at": iso8601(txn.create_time),
        "updated_at": iso8601(txn.update_time),
    }
    assert data["type"] == "credit"
    assert data["amount"] == 100
    assert data["description"] == "Description of transaction"
    assert data["user_id"] == user
    assert data["posting_date"] == "2025-01-01"
    assert_recent(txn.create_time, before)
    assert dt.datetime.fromisoformat(data["created_at"]).utcoffset() == dt.timedelta(0)
    assert data["updated_at"] == data["created_at"]  # a posted transaction never changes
    assert txn.status == transaction_pb2.TRANSACTION_STATUS_POSTED

    # A debit without description or date: description null, posting date today (UTC).
    debit = client.create_transaction(account=account, direction="debit", amount=40, currency="USD")
    assert (debit.direction, debit.description, debit.ending_balance) == (
        transaction_pb2.DIRECTION_DEBIT,
        "",
        60,
    )
    assert date_from_proto(debit.posting_date) in {before.date(), now().date()}

    # Dated backfill (the seed's `date` in the past), streamed as an import; balance by date.
    backfill = [
        transaction_request(
            account=account,
            direction="credit",
            amount=25,
            currency="USD",
            posting_date=dt.date(2024, 12, day),
        )
        for day in (30, 31)
    ]
    imported = client.import_transactions(backfill, chunk_size=1)
    assert (imported.posted_count, imported.replayed_count, imported.failed_count) == (2, 0, 0)
    again = client.import_transactions(backfill)  # resumed / retried: replayed, not posted twice
    assert (again.posted_count, again.replayed_count) == (0, 2)
    assert [r.transaction.name for r in again.results] == [r.transaction.name for r in imported.results]
    assert client.get_balance_as_of(account, posting_date=dt.date(2024, 12, 30)) == 25
    assert client.get_balance_as_of(account, posting_date=dt.date(2025, 1, 1)) == 150
    assert client.get_balance_as_of(account, time=before - dt.timedelta(seconds=1)) == 0
    assert client.get_account(account).balance.posted == 110

    # 422 {"status": "fail"} -> INVALID_ARGUMENT, ErrorInfo INVALID_REQUEST, BadRequest fields.
    with pytest.raises(LedgerError) as invalid:
        client.create_transaction(account=account, direction="credit", amount=-100, currency="USD")
    assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert invalid.value.reason == Reason.INVALID_REQUEST
    assert invalid.value.domain == "ledger.v1"
    assert [v.field for v in invalid.value.field_violations] == ["transaction.amount"]

    # 500 {"status": "error", "message", "code"} -> INTERNAL, ErrorInfo INTERNAL + incident.
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(ledger, "post_transaction", broken)
    with pytest.raises(LedgerError) as internal:
        client.credit(account, 100, "USD")
    assert internal.value.code == grpc.StatusCode.INTERNAL
    assert internal.value.reason == Reason.INTERNAL
    incident = internal.value.error_metadata["incident"]
    assert incident in internal.value.message
    assert "secret" not in internal.value.message
    monkeypatch.undo()

    # Security: Token.
    with pytest.raises(LedgerError) as anonymous:
        connect(None).credit(account, 100, "USD")
    assert (anonymous.value.code, anonymous.value.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_MISSING",
    )
    assert client.get_account(account).balance.posted == 110  # the refused calls changed nothing
    assert_consistent(client)


# -- seed 001: FinerWorks POST /v3/credit_transaction -----------------------------------


def test_seed_001_finerworks_credit_transaction(client: LedgerClient) -> None:
    body: dict[str, Any] = {
        "amount": Decimal("1.0"),  # JSON 1.0, parsed as a decimal, never a float
        "memo": "sample string 2",
        "widthdrawal": True,
        "order_id": 4,
        "account_id": 5,
    }
    account = client.create_account(currency="USD", external_ref=str(body["account_id"])).name
    client.credit(account, to_minor("3.00", "USD"), "USD", description="opening balance")
    (target,) = client.iter_accounts(external_ref=str(body["account_id"]))
    request_id = str(uuid.uuid4())

    txn = client.create_transaction(
        account=target.name,
        direction="debit" if body["widthdrawal"] else "credit",
        amount=to_minor(body["amount"], "USD"),
        currency="USD",
        description=check_length(body["memo"], 50, field="memo"),
        metadata={"order_id": str(body["order_id"]), "account_id": str(body["account_id"])},
        request_id=request_id,
    )
    # {"id", "balance", "message", "status": {"success", "status_code", "message", "reference_id"}}
    assert txn.name == f"transactions/{uuid_of(txn.name, 'transactions')}"  # id
    assert from_minor(txn.ending_balance, "USD") == Decimal("2.0")  # balance
    assert txn.description == "sample string 2"  # message: the memo
    assert txn.direction == transaction_pb2.DIRECTION_DEBIT
    assert txn.amount == 100
    assert dict(txn.metadata) == {"order_id": "4", "account_id": "5"}
    assert txn.status == transaction_pb2.TRANSACTION_STATUS_POSTED  # status.success (no LedgerError)
    # status.reference_id: the request_id; sending it again replays the same reply.
    replay = client.create_transaction(
        account=target.name,
        direction="debit",
        amount=100,
        currency="USD",
        description="sample string 2",
        metadata={"order_id": "4", "account_id": "5"},
        request_id=request_id,
    )
    assert replay == txn
    assert from_minor(client.get_account(target.name).balance.posted, "USD") == Decimal("2.00")

    # Not a withdrawal: a credit.
    deposit = client.create_transaction(
        account=target.name, direction="credit", amount=to_minor("0.50", "USD"), currency="USD"
    )
    assert from_minor(deposit.ending_balance, "USD") == Decimal("2.50")

    # memo max length 50: enforced by the caller (the ledger's own limit is 1000).
    with pytest.raises(ValueError, match="memo is at most 50 characters"):
        check_length("m" * 51, 50, field="memo")
    assert check_length("m" * 50, 50, field="memo") == "m" * 50
    # "This should always be a positive number."
    with pytest.raises(LedgerError) as negative:
        client.debit(target.name, to_minor("-1.0", "USD"), "USD")
    assert negative.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert_consistent(client)


# -- seed 002: POST /v1/balance_transactions (signed amounts) ---------------------------


def test_seed_002_signed_balance_transaction(client: LedgerClient) -> None:
    customer = "18f3a684-ad08-4d5b-91af-d7cbc3e447be"
    # In this convention a positive balance is what the customer owes: a credit line.
    balance = client.create_account(currency="usd", external_ref=customer, balance_floor=-100_000)
    assert balance.currency == "USD"
    before = now()

    body: dict[str, Any] = {"amount": 5000, "currency": "usd", "customer": customer}
    (account,) = client.iter_accounts(external_ref=body["customer"])
    direction, amount = from_signed_amount(body["amount"])
    txn = client.create_transaction(
        account=account.name, direction=direction, amount=amount, currency=body["currency"]
    )
    reply: dict[str, Any] = {
        "id": uuid_of(txn.name, "transactions"),
        "object": "balance_transaction",
        "amount": to_signed_amount(txn),
        "currency": txn.currency.lower(),
        "ending_balance_amount": to_signed_balance(txn.ending_balance),
        "transaction_type": transaction_pb2.TransactionKind.Name(txn.kind)
        .removeprefix("TRANSACTION_KIND_")
        .lower(),
        "balance": txn.account,
        "customer": client.get_account(txn.account).external_ref,
        "checkout": txn.metadata.get("checkout"),
        "created_at": txn.create_time.seconds,
        "updated_at": txn.update_time.seconds,
    }
    assert (txn.direction, txn.amount, txn.ending_balance) == (transaction_pb2.DIRECTION_DEBIT, 5000, -5000)
    assert reply["amount"] == 5000
    assert reply["currency"] == "usd" and txn.currency == "USD"
    assert reply["ending_balance_amount"] == 5000
    assert reply["transaction_type"] == "adjustment"
    assert reply["balance"] == account.name
    assert reply["customer"] == customer
    assert reply["checkout"] is None
    assert isinstance(reply["created_at"], int)
    assert int(before.timestamp()) - 5 <= reply["created_at"] <= int(now().timestamp()) + 5
    assert reply["updated_at"] == reply["created_at"]

    # A negative amount credits the customer: what they owe goes down.
    (credited,) = client.batch_create_transactions(
        [signed_transaction_request(account=account.name, amount=-2000, currency="usd")]
    )
    assert credited.transaction.direction == transaction_pb2.DIRECTION_CREDIT
    assert to_signed_amount(credited.transaction) == -2000
    assert to_signed_balance(credited.transaction.ending_balance) == 3000

    # applied_to_checkout: a debit of kind PURCHASE naming the checkout in metadata.
    direction, amount = from_signed_amount(1000)
    applied = client.create_transaction(
        account=account.name,
        direction=direction,
        amount=amount,
        currency="USD",
        kind="purchase",
        metadata={"checkout": "chk_1"},
    )
    assert (applied.kind, applied.metadata["checkout"]) == (
        transaction_pb2.TRANSACTION_KIND_PURCHASE,
        "chk_1",
    )
    assert to_signed_balance(client.get_account(account.name).balance.posted) == 4000
    with pytest.raises(ValueError):
        from_signed_amount(0)
    assert_consistent(client)


# -- seed 003: cents round-up transactions (lifecycle, batch, disputes) ------------------


def seed_003_status(client: LedgerClient, name: str) -> tuple[str, int]:
    """(status, refunded_amount) of a seed 003 transaction, read now from the ledger: a
    hold (draft / to_be_payed until captured), its capture, or a posted payment."""
    txn = client.get_transaction(name)
    if txn.type == transaction_pb2.TRANSACTION_TYPE_HOLD:
        if txn.status == transaction_pb2.TRANSACTION_STATUS_PENDING:
            return "to_be_payed", 0
        if txn.status == transaction_pb2.TRANSACTION_STATUS_VOIDED:
            return "failed", 0
        (capture,) = (
            t
            for t in client.iter_transactions(account=txn.account)
            if t.related_transaction == txn.name and t.type == transaction_pb2.TRANSACTION_TYPE_CAPTURE
        )
        txn = capture
    disputes = [
        t
        for t in client.iter_transactions(account=txn.account)
        if t.metadata.get("dispute_of") == txn.name and t.status == transaction_pb2.TRANSACTION_STATUS_PENDING
    ]
    if disputes:
        return "disputed", txn.refunded_amount
    if txn.status in (
        transaction_pb2.TRANSACTION_STATUS_PARTIALLY_REFUNDED,
        transaction_pb2.TRANSACTION_STATUS_REFUNDED,
    ):
        return "refunded", txn.refunded_amount
    return "paid", 0


def round_up(gateway_id: str, amount: int, external_id: str) -> dict[str, str | int]:
    """One CompanyRoundUpTransactionInput (the fields our API carries)."""
    return {"payment_gateway_id": gateway_id, "amount": amount, "currency": "EUR", "external_id": external_id}


def seed_003_metadata(item: dict[str, str | int], round_up_source_id: str) -> dict[str, str]:
    """The response fields that are the caller's: gateway, charity, donation, method."""
    return {
        "gateway_id": f"stripe_{item['payment_gateway_id']}",
        "charity_id": "charity-1",
        "cause": "clean-water",
        "donation_amount": str(item["amount"]),
        "donation_percentage": "3",
        "donation_currency": "EUR",
        "payment_method_id": "pm_1",
        "round_up_source_id": round_up_source_id,
    }


def seed_003_array_body(
    client: LedgerClient, account: str, source: str
) -> tuple[transaction_pb2.Transaction, transaction_pb2.Transaction]:
    """The body as an array -> BatchCreateTransactions: items that arrive already paid are
    debits, one still to be paid a hold, all in one call."""
    before = now()
    array = [round_up("pi_1", 1000, "rec-1"), round_up("pi_2", 250, "rec-2")]
    pending = round_up("pi_9", 300, "rec-9")
    results = client.batch_create_transactions(
        [
            transaction_request(
                account=account,
                direction="debit",
                amount=int(item["amount"]),
                currency=str(item["currency"]).lower(),
                kind="purchase",
                external_id=str(item["external_id"]),
                metadata=seed_003_metadata(item, source),
            )
            for item in array
        ]
        + [
            hold_request(
                account=account,
                amount=int(pending["amount"]),
                currency="eur",
                kind="purchase",
                external_id=str(pending["external_id"]),
                metadata=seed_003_metadata(pending, source),
            )
        ]
    )
    paid, small, to_be_payed = (r.transaction for r in results)
    assert [r.transaction.ending_balance for r in results] == [9000, 8750, 8750]
    assert seed_003_status(client, to_be_payed.name) == ("to_be_payed", 0)
    client.void_hold(to_be_payed.name)  # the payment failed
    assert seed_003_status(client, to_be_payed.name) == ("failed", 0)
    for txn, item in zip((paid, small), array, strict=True):
        uuid_of(txn.name, "transactions")  # cents id
        assert txn.amount == item["amount"] and txn.currency == "EUR"
        assert from_minor(txn.amount, "EUR") == Decimal(int(item["amount"])) / 100  # 1000 is 10.00 EUR
        assert txn.external_id == item["external_id"]  # reconciliation with the pre_transaction
        assert txn.metadata["gateway_id"] == f"stripe_{item['payment_gateway_id']}"
        assert txn.metadata["donation_amount"] == str(item["amount"])
        assert txn.metadata["payment_method_id"] == "pm_1"
        assert_recent(txn.create_time, before)
        assert seed_003_status(client, txn.name) == ("paid", 0)
    return paid, small


def seed_003_one_object(client: LedgerClient, account: str, source: str) -> None:
    """One object through its lifecycle: to_be_payed -> paid -> refunded (partial, full);
    and another one to_be_payed -> failed."""
    # draft / to_be_payed = a pending hold.
    hold = client.create_hold(
        account,
        500,
        "eur",
        external_id="rec-3",
        metadata=seed_003_metadata(round_up("pi_3", 500, "rec-3"), source),
    )
    assert (hold.type, hold.status) == (
        transaction_pb2.TRANSACTION_TYPE_HOLD,
        transaction_pb2.TRANSACTION_STATUS_PENDING,
    )
    assert (hold.amount, hold.currency, hold.external_id) == (500, "EUR", "rec-3")
    assert seed_003_status(client, hold.name) == ("to_be_payed", 0)
    balance = client.get_account(account).balance
    assert (balance.posted, balance.pending, balance.available) == (8750, 500, 8250)

    # paid = captured.
    captured = client.capture_hold(hold.name)
    assert (captured.hold.status, captured.hold.captured_amount) == (
        transaction_pb2.TRANSACTION_STATUS_CAPTURED,
        500,
    )
    capture = captured.capture
    assert (capture.type, capture.related_transaction, capture.amount) == (
        transaction_pb2.TRANSACTION_TYPE_CAPTURE,
        hold.name,
        500,
    )
    assert capture.metadata["gateway_id"] == "stripe_pi_3"
    assert capture.ending_balance == 8250
    assert datetime_from_proto(captured.hold.update_time) >= datetime_from_proto(hold.create_time)
    assert seed_003_status(client, hold.name) == ("paid", 0)

    # refunded + refunded amount: partial, then the rest.
    partial = client.refund(capture.name, amount=200, metadata={"gateway_refund_id": "re_1"})
    assert (partial.refund.type, partial.refund.direction, partial.refund.related_transaction) == (
        transaction_pb2.TRANSACTION_TYPE_REFUND,
        transaction_pb2.DIRECTION_CREDIT,
        capture.name,
    )
    assert (partial.original.status, partial.original.refunded_amount) == (
        transaction_pb2.TRANSACTION_STATUS_PARTIALLY_REFUNDED,
        200,
    )
    assert seed_003_status(client, hold.name) == ("refunded", 200)
    rest = client.refund(capture.name)
    assert rest.refund.amount == 300
    assert (rest.original.status, rest.original.refunded_amount) == (
        transaction_pb2.TRANSACTION_STATUS_REFUNDED,
        500,
    )
    assert seed_003_status(client, hold.name) == ("refunded", 500)
    with pytest.raises(LedgerError) as exhausted:
        client.refund(capture.name, amount=1)
    assert exhausted.value.reason == Reason.AMOUNT_EXCEEDS_REFUNDABLE
    assert client.get_account(account).balance.posted == 8750

    # failed = voided.
    doomed = client.create_hold(account, 700, "EUR", external_id="rec-4")
    failed = client.void_hold(doomed.name)
    assert failed.status == transaction_pb2.TRANSACTION_STATUS_VOIDED
    assert seed_003_status(client, failed.name) == ("failed", 0)
    with pytest.raises(LedgerError) as late:
        client.capture_hold(doomed.name)
    assert late.value.reason == Reason.HOLD_NOT_PENDING
    assert client.get_account(account).balance.available == 8750


def seed_003_disputes(
    client: LedgerClient, account: str, paid: transaction_pb2.Transaction, small: transaction_pb2.Transaction
) -> None:
    """disputed: a hold for the disputed amount with metadata dispute_of = the original;
    won -> VoidHold, lost -> CaptureHold."""
    dispute = client.create_hold(account, 1000, "EUR", metadata={"dispute_of": paid.name})
    assert seed_003_status(client, paid.name) == ("disputed", 0)
    assert client.get_account(account).balance.available == 7750
    client.void_hold(dispute.name)  # won
    assert seed_003_status(client, paid.name) == ("paid", 0)
    assert client.get_account(account).balance.posted == 8750

    dispute = client.create_hold(account, 250, "EUR", metadata={"dispute_of": small.name})
    assert seed_003_status(client, small.name) == ("disputed", 0)
    lost = client.capture_hold(dispute.name, description="dispute lost")
    assert lost.capture.metadata["dispute_of"] == small.name
    assert lost.capture.description == "dispute lost"
    assert seed_003_status(client, small.name) == ("paid", 0)
    assert client.get_account(account).balance.posted == 8500


def test_seed_003_round_up_transactions_lifecycle(client: LedgerClient, connect: Any) -> None:
    consumer_user_id = str(uuid.uuid4())
    round_up_source_id = str(uuid.uuid4())
    billable_address = {"line1": "1 Rue de Rivoli", "city": "Paris", "country": "FR"}
    account = client.create_account(
        currency="EUR",
        external_ref=consumer_user_id,
        metadata={
            "round_up_source_id": round_up_source_id,
            "name": "Ada",
            "email": "ada@example.com",
            "email_anonymized": "false",
            "phone_number": "+33100000000",
            "billable_address": json.dumps(billable_address),
        },
    ).name
    client.credit(account, 10_000, "EUR", kind="top_up")
    # Consumer user fields and billable address: the account.
    holder = client.get_account(account)
    assert holder.external_ref == consumer_user_id
    assert json.loads(holder.metadata["billable_address"]) == billable_address
    assert holder.metadata["email"] == "ada@example.com"

    paid, small = seed_003_array_body(client, account, round_up_source_id)
    seed_003_one_object(client, account, round_up_source_id)
    seed_003_disputes(client, account, paid, small)

    # 422 Invalid input -> INVALID_ARGUMENT naming the item; 401 -> UNAUTHENTICATED.
    bad = transaction_request(account=account, direction="debit", amount=1, currency="EUR")
    bad.transaction.amount = 0
    with pytest.raises(LedgerError) as invalid:
        client.batch_create_transactions(
            [transaction_request(account=account, direction="debit", amount=1, currency="EUR"), bad]
        )
    assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in invalid.value.field_violations] == ["requests[1].transaction.amount"]
    with pytest.raises(LedgerError) as unauthorized:
        connect("ltk_" + "0" * 32 + "_" + "A" * 43).get_account(account)
    assert unauthorized.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert client.get_account(account).balance.posted == 8500  # the refused calls changed nothing
    assert_consistent(client)


# -- seed 004: Spacebring POST /transactions/credits/v1 --------------------------------


def seed_004_scopes_and_networks(
    admin: Admin, connect: Any, member: str, transaction: str, company_ref: str
) -> None:
    """OAuth scope `transactions` = transactions:write; network id = tenant."""
    # Scopes: a token without transactions:write is refused and changes nothing.
    _, reader_secret = admin.create_token(TENANT, "reader", ["transactions:read"])
    with pytest.raises(LedgerError) as denied:
        connect(reader_secret).credit(member, 1, "CREDITS")
    assert (denied.value.code, denied.value.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        Reason.MISSING_SCOPE,
    )
    assert denied.value.error_metadata["required_scope"] == "transactions:write"
    # Another network (tenant) sees nothing of this one.
    admin.create_tenant("other-network", "Other network")
    _, other_secret = admin.create_token("other-network", "other", ["admin"])
    other = connect(other_secret)
    with pytest.raises(LedgerError) as foreign:
        other.get_transaction(transaction)
    assert (foreign.value.code, foreign.value.reason) == (
        grpc.StatusCode.NOT_FOUND,
        Reason.TRANSACTION_NOT_FOUND,
    )
    assert list(other.iter_accounts(external_ref=company_ref)) == []


def test_seed_004_expiring_credits_transfer_scopes_tenancy(
    client: LedgerClient, admin: Admin, connect: Any
) -> None:
    location_ref, membership_ref, company_ref = (str(uuid.uuid4()) for _ in range(3))
    user_ref, creator_ref, creator_membership = (str(uuid.uuid4()) for _ in range(3))
    # Network id -> tenant (the token's); OAuth scope `transactions` -> transactions:write.
    record, secret = admin.create_token(TENANT, f"user:{creator_ref}", ["transactions:write"])
    writer = connect(secret)

    company = client.create_account(
        currency="CREDITS",
        external_ref=company_ref,
        metadata={
            "legal_name": "Acme SARL",
            "title": "Acme",
            "tax_id": "FR123",
            "location_ref": location_ref,
        },
    )
    member = client.create_account(
        currency="CREDITS",
        external_ref=membership_ref,
        metadata={"user_ref": user_ref, "company_ref": company_ref, "location_ref": location_ref},
    )
    day_passes = client.create_account(currency="DAY_PASSES", external_ref=company_ref)
    client.credit(company.name, 100, "CREDITS", description="permanent plan credits")
    before = now()
    expires = (now() + dt.timedelta(days=30)).replace(microsecond=0)

    # {"transaction": {"amount": 123, "locationRef", "membershipRef", "companyRef", "description"}}
    body: dict[str, Any] = {
        "amount": 123,
        "locationRef": location_ref,
        "membershipRef": membership_ref,
        "companyRef": company_ref,
        "description": "monthly credits",
    }
    (target,) = (a for a in client.iter_accounts(external_ref=body["companyRef"]) if a.currency == "CREDITS")
    refs = {
        "location_ref": body["locationRef"],
        "membership_ref": body["membershipRef"],
        "company_ref": body["companyRef"],
        "user_ref": user_ref,
        "user_ref_creator": creator_ref,
        "membership_ref_creator": creator_membership,
    }
    txn = writer.credit(
        target.name,
        body["amount"],
        "CREDITS",
        description=body["description"],
        metadata=refs,
        expire_time=expires,
    )
    writer.credit(day_passes.name, 5, "DAY_PASSES", expire_time=expires)

    # Response transaction.*
    assert uuid_of(txn.name, "transactions")  # id
    assert txn.amount == 123
    assert txn.description == "monthly credits"
    assert_recent(txn.create_time, before)  # createDate
    assert txn.create_time.ToJsonString().endswith("Z")  # RFC 3339 like 2023-11-07T05:31:56Z
    assert datetime_from_proto(txn.expire_time) == expires
    for key in ("location_ref", "membership_ref", "company_ref", "user_ref", "user_ref_creator"):
        assert txn.metadata[key] == refs[key]
    assert txn.metadata["membership_ref_creator"] == creator_membership
    assert (txn.creator.token, txn.creator.token_name) == (f"tokens/{record.id}", f"user:{creator_ref}")
    # transaction.company: the company's account, with credits split expiring / permanent.
    held = client.get_account(txn.account)
    assert held.external_ref == company_ref  # company.id / companyRef
    assert held.metadata["legal_name"] == "Acme SARL"
    assert (held.balance.expiring, held.balance.permanent, held.balance.posted) == (123, 100, 223)
    assert [(e.amount, datetime_from_proto(e.expire_time)) for e in held.balance.next_expirations] == [
        (123, expires)
    ]
    assert client.get_account(day_passes.name).balance.expiring == 5  # company.dayPasses.expiring
    # userOwner / userRef: the member account's holder.
    assert client.get_account(member.name).metadata["user_ref"] == user_ref

    # Company -> member: a transfer; expiring credit moves first and keeps its expiry.
    transfer = writer.transfer(company.name, member.name, 50, "CREDITS", metadata=refs)
    assert transfer.type == transaction_pb2.TRANSACTION_TYPE_TRANSFER
    assert (transfer.account, transfer.counterparty_account) == (company.name, member.name)
    assert (transfer.ending_balance, transfer.counterparty_ending_balance) == (173, 50)
    company_balance = client.get_account(company.name).balance
    assert (company_balance.expiring, company_balance.permanent) == (73, 100)
    member_balance = client.get_account(member.name).balance
    assert (member_balance.expiring, member_balance.permanent, member_balance.posted) == (50, 0, 50)
    assert datetime_from_proto(member_balance.next_expirations[0].expire_time) == expires
    assert [t.name for t in client.iter_transactions(account=member.name)] == [transfer.name]
    assert client.get_balance_as_of(company.name, time=before) == 100  # before the expiring grant

    seed_004_scopes_and_networks(admin, connect, member.name, txn.name, company_ref)
    assert_consistent(client)
