"""The api layer's hand-written conversions agree with protobuf's own."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2
from hypothesis import given
from hypothesis import strategies as st
from ledger.v1 import transaction_pb2

from ledger_server.api.convert import (
    account_pb,
    account_update_pb,
    status_change_pb,
    timestamp,
    transaction_pb,
)
from ledger_server.core.admin import MAX_TOKEN_NAME
from ledger_server.core.model import (
    Account,
    AccountChanges,
    AccountStatus,
    AccountUpdate,
    Creator,
    Direction,
    Expiration,
    StatusChange,
    Transaction,
    TransactionKind,
    TransactionStatus,
    TransactionType,
)
from ledger_server.core.validation import MAX_REASON
from ledger_server.store.rows import account_size, account_update_size, status_change_size, transaction_size

OFFSETS = st.sampled_from(
    [dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(-dt.timedelta(hours=8))]
)


@given(st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=OFFSETS))
def test_timestamp_of_an_aware_time_is_fromdatetime(t: dt.datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(t)
    assert timestamp(t) == expected


@given(st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999999)))
def test_a_naive_time_is_utc_as_in_fromdatetime(t: dt.datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(t)
    assert timestamp(t) == expected


TIMES = st.datetimes(
    min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)
)
TEXT = st.text(max_size=8)


def _time(t: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(t)
    return ts


@given(
    st.builds(
        Transaction,
        id=st.uuids().map(str),
        tenant_id=TEXT,
        account_id=st.uuids().map(str),
        direction=st.sampled_from(Direction),
        amount=st.integers(1, 2**63 - 1),
        currency=TEXT,
        kind=st.sampled_from(TransactionKind),
        description=TEXT,
        posting_date=st.dates(),
        external_id=TEXT,
        metadata=st.dictionaries(TEXT, TEXT, max_size=3),
        status=st.sampled_from(TransactionStatus),
        ending_balance=st.integers(-(2**63), 2**63 - 1),
        created_at=TIMES,
        updated_at=TIMES,
        creator=st.none() | st.builds(Creator, TEXT, TEXT),
        type=st.sampled_from(TransactionType),
        expires_at=st.none() | TIMES,
        counterparty_id=st.just("") | st.uuids().map(str),
        related_id=st.just("") | st.uuids().map(str),
        refunded_amount=st.integers(0, 2**63 - 1),
        captured_amount=st.integers(0, 2**63 - 1),
    )
)
def test_transaction_pb_sub_messages_are_protobuf_s_own_conversions(t: Transaction) -> None:
    """transaction_pb fills its sub-messages in place (faster than building each and
    handing it to the constructor): each is what protobuf's own conversion makes, and
    present exactly when the constructor would have it."""
    built = transaction_pb(t)
    date = t.posting_date
    assert built.posting_date == date_pb2.Date(year=date.year, month=date.month, day=date.day)
    assert (built.create_time, built.update_time) == (_time(t.created_at), _time(t.updated_at))
    assert built.HasField("expire_time") == (t.expires_at is not None)
    if t.expires_at is not None:
        assert built.expire_time == _time(t.expires_at)
    assert built.HasField("creator") == (t.creator is not None)
    if t.creator is not None:
        assert (built.creator.token, built.creator.token_name) == (
            f"tokens/{t.creator.token_id}",
            t.creator.token_name,
        )
    assert dict(built.metadata) == t.metadata
    assert transaction_pb2.Transaction.FromString(built.SerializeToString()) == built


@given(TIMES, TIMES)
def test_account_pb_times_are_fromdatetime(created: dt.datetime, updated: dt.datetime) -> None:
    account = Account("a", "t", "ref", "USD", 0, AccountStatus.ACTIVE, {}, 5, 1, created, updated)
    built = account_pb(account)
    assert (built.create_time, built.update_time) == (_time(created), _time(updated))


# The largest text each field admits, in characters that take 4 bytes in UTF-8.
WIDE = "\U0001f600"
UUID = "0193c8a0-0000-7000-8000-000000000001"
BIG_METADATA = {f"k{i:02d}".ljust(40, WIDE): WIDE * 500 for i in range(50)}
TOKEN = Creator("f" * 32, WIDE * MAX_TOKEN_NAME)
WHEN = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)


@pytest.mark.parametrize("metadata", [{}, BIG_METADATA], ids=["no metadata", "full metadata"])
def test_a_page_item_s_size_bounds_its_reply_size(metadata: dict[str, str]) -> None:
    """List pages are cut by rows.account_size / transaction_size / status_change_size /
    account_update_size (core/paging.py): each must be at least the item's size in the reply, with every field
    at its largest."""
    expirations = tuple(Expiration(2**63 - 1, WHEN) for i in range(10))
    # (Negative int64s take the most bytes, 10; every balance is one or the largest.)
    account = Account(
        UUID, "t", WIDE * 128, "C" * 16, -(2**63), AccountStatus.FROZEN, metadata, -(2**62), 2**62,
        WHEN, WHEN, -1, expirations, WIDE * MAX_REASON, WHEN, TOKEN,
    )  # fmt: skip
    transaction = Transaction(
        UUID, "t", UUID, Direction.DEBIT, 2**63 - 1, "C" * 16, TransactionKind.PURCHASE, WIDE * 1000,
        dt.date(9999, 12, 31), WIDE * 128, metadata, TransactionStatus.PARTIALLY_REFUNDED, -(2**63),
        WHEN, WHEN, TOKEN, TransactionType.TRANSFER, WHEN, UUID, -(2**63), UUID, 2**63 - 1, 2**63 - 1,
    )  # fmt: skip
    framing = 5  # a repeated field's tag and length
    assert account_size(account) >= account_pb(account).ByteSize() + framing
    assert transaction_size(transaction) >= transaction_pb(transaction).ByteSize() + framing
    change = StatusChange(AccountStatus.FROZEN, AccountStatus.CLOSED, WIDE * MAX_REASON, WHEN, TOKEN)
    assert status_change_size(change) >= status_change_pb(change).ByteSize() + framing
    details = AccountChanges(WIDE * 128, -(2**63), metadata)
    update = AccountUpdate(details, details, WIDE * MAX_REASON, WHEN, TOKEN)
    assert account_update_size(update) >= account_update_pb(update).ByteSize() + framing
