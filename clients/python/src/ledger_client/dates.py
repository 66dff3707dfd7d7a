"""Conversion between :class:`datetime.date` and ``google.type.Date`` (posting dates), and
between aware :class:`datetime.datetime` and ``google.protobuf.Timestamp`` (expiry times,
``as of`` times, create and update times)."""

from __future__ import annotations

import datetime

from google.protobuf import timestamp_pb2
from google.type import date_pb2

__all__ = ["date_from_proto", "date_to_proto", "datetime_from_proto", "timestamp_to_proto"]

# datetime.UTC needs Python 3.11; the client supports 3.10.
_UTC = datetime.timezone.utc


def date_to_proto(value: datetime.date) -> date_pb2.Date:
    """A full calendar date as a ``google.type.Date``.

    A :class:`datetime.datetime` is refused (TypeError): posting dates are UTC calendar
    dates, and silently dropping the time and time zone of a datetime picks the wrong
    day for part of the world. Pass ``dt.astimezone(datetime.timezone.utc).date()``.
    """
    if isinstance(value, datetime.datetime):
        raise TypeError("expected a datetime.date, not a datetime; convert it to a UTC date first")
    if not isinstance(value, datetime.date):
        raise TypeError(f"expected a datetime.date, not {type(value).__name__}")
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def date_from_proto(value: date_pb2.Date) -> datetime.date | None:
    """The :class:`datetime.date` of a ``google.type.Date``, or None when it is unset
    (all zero). A partial date (no year, or no day) raises ValueError."""
    if value.year == 0 and value.month == 0 and value.day == 0:
        return None
    if value.year == 0 or value.month == 0 or value.day == 0:
        raise ValueError(f"not a full date: year={value.year} month={value.month} day={value.day}")
    return datetime.date(value.year, value.month, value.day)


def timestamp_to_proto(value: datetime.datetime) -> timestamp_pb2.Timestamp:
    """An aware :class:`datetime.datetime` as a ``google.protobuf.Timestamp``.

    A naive datetime is refused (ValueError): the ledger compares instants, and a naive
    value would be read as UTC on one machine and as local time on another. Pass
    ``datetime.datetime.now(datetime.timezone.utc)`` or attach a ``tzinfo``.
    """
    if not isinstance(value, datetime.datetime):
        raise TypeError(f"expected an aware datetime.datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("expected an aware datetime (with a tzinfo such as datetime.timezone.utc)")
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(_UTC))
    return ts


def datetime_from_proto(value: timestamp_pb2.Timestamp) -> datetime.datetime:
    """The aware UTC :class:`datetime.datetime` of a ``google.protobuf.Timestamp``
    (``txn.create_time``, ``txn.expire_time``...). An unset message field reads as the
    Unix epoch: check ``msg.HasField("expire_time")`` first where that matters."""
    return value.ToDatetime(tzinfo=_UTC)
