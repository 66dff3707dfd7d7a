"""How the store keeps times: integer microseconds since the Unix epoch, exact both ways."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from ledger_server.store.rows import EPOCH, from_micros, to_micros

FIRST, LAST = dt.datetime(1, 1, 2, tzinfo=dt.UTC), dt.datetime(9999, 12, 30, tzinfo=dt.UTC)
AWARE = st.datetimes(
    min_value=FIRST.replace(tzinfo=None), max_value=LAST.replace(tzinfo=None), timezones=st.just(dt.UTC)
)


@given(AWARE)
def test_a_time_survives_the_round_trip_to_the_microsecond(t: dt.datetime) -> None:
    us = to_micros(t)
    assert us == (t - EPOCH) // dt.timedelta(microseconds=1)
    assert from_micros(us) == t and from_micros(us).tzinfo is dt.UTC


@given(st.integers(min_value=to_micros(FIRST), max_value=to_micros(LAST)))
def test_microseconds_survive_the_round_trip(us: int) -> None:
    assert to_micros(from_micros(us)) == us
    assert from_micros(us) == EPOCH + dt.timedelta(microseconds=us)
