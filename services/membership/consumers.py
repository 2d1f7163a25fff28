"""What membership does with points' events, each applied once through the inbox: an action a
storefront reported to points (RecordAction) counts toward the member's growth value. The action
is reported once, to points; its ActionRecorded reaches membership whether or not it earned
points, so neither side misses one."""

from __future__ import annotations

from loyalty.common.v1 import envelope_pb2
from loyalty.points.v1 import events_pb2 as points_events

from services.kit.bus import Bus
from services.kit.events import EventConsumer
from services.kit.storage import UnitOfWork
from services.kit.timeutil import from_timestamp, utcnow
from services.membership import growth
from services.membership.context import Membership

CONSUMER = "membership"


def points_consumer(ctx: Membership, bus: Bus, *, workers: int = 4, per_transaction: int = 50) -> EventConsumer:
    """Membership's consumer of points' stream."""

    def action_recorded(uow: UnitOfWork, e: points_events.ActionRecorded, _: envelope_pb2.EventEnvelope) -> None:
        growth.record_action(ctx, uow, e.shop_id, e.member_id, e.action, e.subject,
                             from_timestamp(e.occurred_at, utcnow()))

    return EventConsumer(ctx.db, bus, consumer=CONSUMER, producer="points",
                         handlers={points_events.ActionRecorded: action_recorded},
                         workers=workers, per_transaction=per_transaction)
