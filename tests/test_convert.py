"""The api layer's hand-written conversions agree with protobuf's own."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from ledger_server.api.convert import timestamp

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
