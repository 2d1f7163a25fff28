"""UTC time at the edges: naive UTC datetimes in storage, Timestamps on the wire."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from services.kit.errors import InvalidArgument


def utcnow() -> datetime:
    """Naive UTC, the form every table stores."""
    return datetime.now(UTC).replace(tzinfo=None)


_EPOCH = datetime(1970, 1, 1)


def to_timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    # Integer arithmetic: protobuf's FromDatetime is slow Python, and this runs on every answer.
    delta = value - _EPOCH
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)


_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799  # 0001-01-01 .. 9999-12-31


def from_timestamp(ts: Timestamp, default: datetime | None = None, *, field: str = "time") -> datetime | None:
    """A set Timestamp as naive UTC; an unset one (0) gives `default`; one outside the calendar
    is INVALID_ARGUMENT on `field`."""
    if ts.seconds == 0 and ts.nanos == 0:
        return default
    if not (_MIN_SECONDS <= ts.seconds <= _MAX_SECONDS and 0 <= ts.nanos < 1_000_000_000):
        raise InvalidArgument([(field, "not a valid timestamp (years 1 to 9999)")])
    return ts.ToDatetime(tzinfo=UTC).replace(tzinfo=None)
