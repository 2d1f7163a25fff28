"""UTC time at the edges: naive UTC datetimes in storage, Timestamps on the wire."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def utcnow() -> datetime:
    """Naive UTC, the form every table stores."""
    return datetime.now(UTC).replace(tzinfo=None)


def to_timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.replace(tzinfo=UTC) if value.tzinfo is None else value)
    return ts


def from_timestamp(ts: Timestamp, default: datetime | None = None) -> datetime | None:
    """A set Timestamp as naive UTC; an unset one (0) gives `default`."""
    if ts.seconds == 0 and ts.nanos == 0:
        return default
    return ts.ToDatetime(tzinfo=UTC).replace(tzinfo=None)
