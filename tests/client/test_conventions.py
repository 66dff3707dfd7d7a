"""Pure helpers of ledger_client: signed amounts (seed 002's convention), caller-side
length limits (seed 001's memo), Timestamp conversion, and the argument checks the new
client methods make before sending anything."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ledger.v1 import transaction_pb2, transaction_service_pb2
from ledger_client import (
    LedgerClient,
    check_length,
    datetime_from_proto,
    from_signed_amount,
    signed_transaction_request,
    timestamp_to_proto,
    to_signed_amount,
    to_signed_balance,
    transaction_request,
)
from ledger_client.money import INT64_MAX

ACCOUNT = "accounts/0b7c8a52-3d43-4d2e-9a57-5a0f0c1d3b11"
CREDIT, DEBIT = transaction_pb2.DIRECTION_CREDIT, transaction_pb2.DIRECTION_DEBIT


# -- signed amounts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signed", "expected"),
    [(-2000, (CREDIT, 2000)), (5000, (DEBIT, 5000)), (-1, (CREDIT, 1)), (INT64_MAX, (DEBIT, INT64_MAX))],
)
def test_from_signed_amount(signed: int, expected: tuple[int, int]) -> None:
    assert from_signed_amount(signed) == expected


@pytest.mark.parametrize("bad", [0, INT64_MAX + 1, -(INT64_MAX + 1)])
def test_from_signed_amount_refuses_zero_and_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError):
        from_signed_amount(bad)


@pytest.mark.parametrize("bad", [1.5, "5", True, None])
def test_from_signed_amount_refuses_non_ints(bad: object) -> None:
    with pytest.raises(TypeError):
        from_signed_amount(bad)  # type: ignore[arg-type]


@given(st.integers(min_value=-INT64_MAX, max_value=INT64_MAX).filter(bool))
def test_signed_amount_round_trips(signed: int) -> None:
    direction, amount = from_signed_amount(signed)
    assert amount > 0
    txn = transaction_pb2.Transaction(direction=direction, amount=amount)
    assert to_signed_amount(txn) == signed


def test_to_signed_amount_needs_a_direction() -> None:
    with pytest.raises(ValueError, match="no direction"):
        to_signed_amount(transaction_pb2.Transaction(name="transactions/x", amount=5))


def test_signed_balance_is_what_the_customer_owes() -> None:
    assert to_signed_balance(-5000) == 5000  # the ledger lent 5000: the customer owes it
    assert to_signed_balance(3000) == -3000  # the customer holds 3000 of credit
    assert to_signed_balance(0) == 0
    with pytest.raises(TypeError):
        to_signed_balance("1")  # type: ignore[arg-type]


def test_signed_transaction_request() -> None:
    request = signed_transaction_request(
        account=ACCOUNT, amount=-2000, currency="usd", description="goodwill", metadata={"k": "v"}
    )
    assert request.transaction.direction == CREDIT
    assert request.transaction.amount == 2000
    assert request.transaction.currency == "usd"
    assert request.transaction.description == "goodwill"
    assert dict(request.transaction.metadata) == {"k": "v"}
    assert request.request_id  # a fresh UUID
    debit = signed_transaction_request(account=ACCOUNT, amount=5000, currency="USD", kind="purchase")
    assert (debit.transaction.direction, debit.transaction.amount) == (DEBIT, 5000)
    assert debit.transaction.kind == transaction_pb2.TRANSACTION_KIND_PURCHASE
    with pytest.raises(ValueError):
        signed_transaction_request(account=ACCOUNT, amount=0, currency="USD")


# -- caller-side length limits -----------------------------------------------------------


def test_check_length() -> None:
    assert check_length("m" * 50, 50, field="memo") == "m" * 50
    assert check_length("", 50) == ""
    with pytest.raises(ValueError, match=r"memo is at most 50 characters \(got 51\)"):
        check_length("m" * 51, 50, field="memo")
    with pytest.raises(ValueError, match="description"):
        check_length("ab", 1)
    with pytest.raises(TypeError):
        check_length(None, 50)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        check_length("a", -1)


# -- timestamps --------------------------------------------------------------------------


def test_timestamp_round_trip_is_utc() -> None:
    paris = dt.timezone(dt.timedelta(hours=2))
    at = dt.datetime(2025, 6, 1, 14, 30, 15, 123456, tzinfo=paris)
    ts = timestamp_to_proto(at)
    assert ts.ToJsonString() == "2025-06-01T12:30:15.123456Z"
    back = datetime_from_proto(ts)
    assert back == at and back.utcoffset() == dt.timedelta(0)


def test_timestamp_refuses_naive_and_dates() -> None:
    with pytest.raises(ValueError, match="aware"):
        timestamp_to_proto(dt.datetime(2025, 1, 1))
    with pytest.raises(TypeError):
        timestamp_to_proto(dt.date(2025, 1, 1))  # type: ignore[arg-type]


# -- expire_time on requests -------------------------------------------------------------


def test_transaction_request_carries_expire_time_on_credits_only() -> None:
    at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    request = transaction_request(
        account=ACCOUNT, direction="credit", amount=1, currency="USD", expire_time=at
    )
    assert request.transaction.HasField("expire_time")
    assert datetime_from_proto(request.transaction.expire_time) == at
    plain = transaction_request(account=ACCOUNT, direction="credit", amount=1, currency="USD")
    assert not plain.transaction.HasField("expire_time")
    with pytest.raises(ValueError, match="only a credit can expire"):
        transaction_request(account=ACCOUNT, direction="debit", amount=1, currency="USD", expire_time=at)


# -- argument checks made before anything is sent ----------------------------------------


@pytest.fixture
def offline() -> Iterator[LedgerClient]:
    """A client whose channel is never used: each call below fails its checks first."""
    with LedgerClient("127.0.0.1:9", timeout=1.0, max_attempts=1) as c:
        yield c


def test_import_requires_request_ids_and_a_valid_chunk_size(offline: LedgerClient) -> None:
    keyed = transaction_request(account=ACCOUNT, direction="credit", amount=1, currency="USD")
    unkeyed = transaction_service_pb2.CreateTransactionRequest()
    unkeyed.CopyFrom(keyed)
    unkeyed.request_id = ""
    with pytest.raises(ValueError, match="item 1 has no request_id"):
        offline.import_transactions([keyed, unkeyed])
    malformed = transaction_service_pb2.CreateTransactionRequest()
    malformed.CopyFrom(keyed)
    malformed.request_id = "not-a-uuid"
    with pytest.raises(ValueError, match="UUID"):
        offline.import_transactions([malformed])
    for size in (0, 1001):
        with pytest.raises(ValueError, match="chunk_size"):
            offline.import_transactions([keyed], chunk_size=size)
    with pytest.raises(TypeError):
        offline.import_transactions([keyed.transaction])  # type: ignore[list-item]


def test_balance_as_of_needs_exactly_one_point(offline: LedgerClient) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        offline.get_balance_as_of(ACCOUNT)
    with pytest.raises(ValueError, match="exactly one"):
        offline.get_balance_as_of(ACCOUNT, time=dt.datetime.now(dt.UTC), posting_date=dt.date(2025, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        offline.get_balance_as_of(ACCOUNT, time=dt.datetime(2025, 1, 1))


def test_new_mutations_check_their_arguments(offline: LedgerClient) -> None:
    hold = "transactions/0b7c8a52-3d43-4d2e-9a57-5a0f0c1d3b12"
    with pytest.raises(TypeError, match="to_minor"):
        offline.create_hold(ACCOUNT, 1.5, "USD")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aware"):
        offline.create_hold(ACCOUNT, 1, "USD", expire_time=dt.datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="UUID"):
        offline.capture_hold(hold, request_id="nope")
    with pytest.raises(ValueError, match="UUID"):
        offline.void_hold(hold, request_id="nope")
    with pytest.raises(TypeError):
        offline.refund(hold, amount="5")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        offline.transfer(ACCOUNT, ACCOUNT, 2.0, "USD")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only a credit can expire"):
        offline.create_transaction(
            account=ACCOUNT,
            direction="debit",
            amount=1,
            currency="USD",
            expire_time=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        )
