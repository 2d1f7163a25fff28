"""Events as a consumer reads them: envelopes decoded, and what a service wrote to its outbox."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from google.protobuf.message import Message
from loyalty.common.v1 import envelope_pb2
from sqlalchemy import select

M = TypeVar("M", bound=Message)


def decode_event(raw: bytes, payload_type: type[M]) -> tuple[envelope_pb2.EventEnvelope, M]:
    """An envelope as published, and its payload unpacked as `payload_type`."""
    envelope = envelope_pb2.EventEnvelope.FromString(raw)
    payload = payload_type()
    if not envelope.payload.Unpack(payload):
        raise AssertionError(f"event {envelope.id} is a {envelope.type}, not a {payload_type.DESCRIPTOR.full_name}")
    return envelope, payload


def outbox_envelopes(db: Any, shop_id: str, payload_type: type[Message]) -> list[bytes]:
    """The envelopes of one type a service wrote to its outbox for one shop, oldest first."""
    table = db.kit.outbox
    rows = db.read(lambda c: c.execute(select(table.c.envelope).where(
        table.c.shop_id == shop_id, table.c.event_type == payload_type.DESCRIPTOR.full_name)
        .order_by(table.c.id)).all())
    return [row.envelope for row in rows]


def outbox_events(db: Any, shop_id: str, payload_type: type[M]) -> list[M]:
    """The payloads of one type a service wrote to its outbox for one shop, oldest first."""
    return [decode_event(raw, payload_type)[1] for raw in outbox_envelopes(db, shop_id, payload_type)]


def membership_envelope(payload: Message, shop_id: str) -> bytes:
    """An envelope of membership's, as its outbox relay publishes it, for a test that delivers an
    event membership itself would no longer send (a completion dated beyond its bounds)."""
    envelope = envelope_pb2.EventEnvelope(id=str(uuid.uuid4()), type=payload.DESCRIPTOR.full_name, shop_id=shop_id,
                                          producer="membership")
    envelope.occurred_at.GetCurrentTime()
    envelope.payload.Pack(payload)
    return envelope.SerializeToString()
