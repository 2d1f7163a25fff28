"""Timestamps on the wire: to_timestamp is integer arithmetic, and must agree with protobuf's own
conversion for every instant a table can hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from services.kit.timeutil import from_timestamp, to_timestamp


def protobufs_own(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.replace(tzinfo=UTC) if value.tzinfo is None else value)
    return ts


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_naive_utc_converts_as_protobuf_does_and_back(value: datetime) -> None:
    assert to_timestamp(value) == protobufs_own(value)
    if value != datetime(1970, 1, 1):  # the epoch itself reads as "unset"
        assert from_timestamp(to_timestamp(value)) == value


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)),
       st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_aware_datetimes_are_taken_as_the_instant_they_name(value: datetime, offset_minutes: int) -> None:
    aware = value.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    assert to_timestamp(aware) == protobufs_own(aware)
