"""What rewards knows of shops and members, kept from membership's events (never from its
tables, never by calling it on the hot path): each shop's time zone, each member's tier, birth
month and whether they left. Each event applies once, through the inbox."""

from __future__ import annotations

from datetime import datetime

from loyalty.common.v1 import envelope_pb2
from loyalty.membership.v1 import events_pb2 as membership_events
from sqlalchemy import Connection, select, update

from services.kit.bus import Bus
from services.kit.events import EventConsumer
from services.kit.storage import Database, UnitOfWork, upsert
from services.kit.timeutil import from_timestamp, utcnow
from services.membership import client as membership_client
from services.rewards import campaigns, orders, packs
from services.rewards.domain import MemberStanding
from services.rewards.service import RewardsService
from services.rewards.tables import members, programs

CONSUMER = "rewards"


def standing(conn: Connection, shop_id: str, member_id: str) -> MemberStanding | None:
    """The member as rewards knows them, or None if it never heard of them."""
    row = conn.execute(select(members.c.tier_level, members.c.birth_month, members.c.left_at).where(
        members.c.shop_id == shop_id, members.c.member_id == member_id)).first()
    if row is None:
        return None
    return MemberStanding(member_id, row.tier_level, row.birth_month, row.left_at is not None)


def program_changed(service: RewardsService, uow: UnitOfWork, shop_id: str, time_zone: str) -> None:
    upsert(uow.conn, programs, {"shop_id": shop_id, "time_zone": time_zone, "updated_at": utcnow()},
           keys=("shop_id",))
    service.zones.invalidate(uow, shop_id)


def joined(uow: UnitOfWork, shop_id: str, member_id: str, tier_level: int, birth_month: int, at: datetime) -> None:
    upsert(uow.conn, members, {"shop_id": shop_id, "member_id": member_id, "tier_level": tier_level,
                               "birth_month": birth_month or None, "joined_at": at, "left_at": None,
                               "updated_at": utcnow()}, keys=("shop_id", "member_id"))


def _change(uow: UnitOfWork, shop_id: str, member_id: str, **values: object) -> None:
    uow.conn.execute(update(members).where(members.c.shop_id == shop_id, members.c.member_id == member_id)
                     .values(updated_at=utcnow(), **values))


def membership_consumer(db: Database, bus: Bus, service: RewardsService, membership: membership_client.Client, *,
                        workers: int = 4, per_transaction: int = 50) -> EventConsumer:
    """Rewards' consumer of membership's stream. The birth month (birthday packs) is read from
    membership when an event says it was given or changed: the bus carries no personal value."""

    def birth_month(shop_id: str, member_id: str) -> int:
        found = membership_client.birthday(membership, shop_id, member_id)
        return found[0] if found else 0

    def on_program(uow: UnitOfWork, e: membership_events.ProgramChanged, _: envelope_pb2.EventEnvelope) -> None:
        program_changed(service, uow, e.shop_id, e.time_zone)
        campaigns.ladder_changed(uow, e)

    def on_joined(uow: UnitOfWork, e: membership_events.MemberJoined, _: envelope_pb2.EventEnvelope) -> None:
        at = from_timestamp(e.joined_at, utcnow())
        month = birth_month(e.shop_id, e.member_id) if e.birthday_given else 0
        joined(uow, e.shop_id, e.member_id, e.tier_level, month, at)
        packs.on_joined(service, uow, e.shop_id, e.member_id, imported=e.imported, at=at)

    def on_profile(uow: UnitOfWork, e: membership_events.ProfileUpdated, _: envelope_pb2.EventEnvelope) -> None:
        if "birthday" in e.changed_fields:
            _change(uow, e.shop_id, e.member_id, birth_month=birth_month(e.shop_id, e.member_id) or None)

    def on_tier(uow: UnitOfWork, e: membership_events.TierChanged, _: envelope_pb2.EventEnvelope) -> None:
        _change(uow, e.shop_id, e.member_id, tier_level=e.to_level)
        packs.on_tier_changed(service, uow, e.shop_id, e.member_id, e.from_level, e.to_level,
                              from_timestamp(e.changed_at, utcnow()))

    def on_left(uow: UnitOfWork, e: membership_events.MemberLeft, _: envelope_pb2.EventEnvelope) -> None:
        # The birth month goes with the member: rewards keeps nothing personal of who left.
        _change(uow, e.shop_id, e.member_id, left_at=from_timestamp(e.left_at, utcnow()), birth_month=None)

    def on_order(uow: UnitOfWork, e: membership_events.OrderCompleted, _: envelope_pb2.EventEnvelope) -> None:
        campaigns.order_completed(service, uow, e)
        orders.order_completed(uow, e)  # the facts of campaigns' conversion in the report

    return EventConsumer(db, bus, consumer=CONSUMER, producer="membership", handlers={
        membership_events.ProgramChanged: on_program,
        membership_events.MemberJoined: on_joined,
        membership_events.ProfileUpdated: on_profile,
        membership_events.TierChanged: on_tier,
        membership_events.MemberLeft: on_left,
        membership_events.OrderCompleted: on_order,
        membership_events.OrderRefunded: lambda uow, e, _: orders.order_refunded(uow, e),
        membership_events.GrowthMilestoneReached: lambda uow, e, _: packs.on_growth_milestone(
            service, uow, e.shop_id, e.member_id, e.threshold, e.pack_id, e.tier_level,
            from_timestamp(e.reached_at, utcnow())),
    }, workers=workers, per_transaction=per_transaction)
