"""Member facts: a projection of membership's, points' and rewards' events (through the inbox,
each event applied once, one member's events in order), never of their tables. Lifetime figures
are kept on the member's row; each completed order is kept dated, so windowed conditions are
counted when a rule runs and stay true as time passes with no new event."""

from __future__ import annotations

from datetime import datetime

from loyalty.common.v1 import envelope_pb2
from loyalty.membership.v1 import events_pb2 as membership_events
from loyalty.points.v1 import events_pb2 as points_events
from loyalty.points.v1 import points_service_pb2 as points_pb2
from loyalty.rewards.v1 import events_pb2 as rewards_events
from sqlalchemy import Connection, and_, case, delete, func, select, update
from sqlalchemy.engine import Row

from services.kit.bus import Bus
from services.kit.events import EventConsumer
from services.kit.storage import Database, UnitOfWork, dialect_insert, insert_ignoring, upsert
from services.kit.timeutil import from_timestamp, utcnow
from services.membership import client as membership_client
from services.segments.tables import member_categories, member_facts, member_orders, member_tags, programs, rfm_scores

CONSUMER = "segments"
PROFILE_FACTS = frozenset({"birthday", "gender", "region"})  # the profile fields segments keeps


def _key(shop_id: str, member_id: str) -> object:
    return and_(member_facts.c.shop_id == shop_id, member_facts.c.member_id == member_id)


def _change(uow: UnitOfWork, shop_id: str, member_id: str, **values: object) -> None:
    uow.conn.execute(update(member_facts).where(_key(shop_id, member_id)).values(updated_at=utcnow(), **values))


def _latest(column: object, at: datetime) -> object:
    """The later of the column and `at` (NULL counts as never)."""
    return case((column.is_(None), at), (column < at, at), else_=column)


def _earliest(column: object, at: datetime) -> object:
    return case((column.is_(None), at), (column > at, at), else_=column)


def program_changed(uow: UnitOfWork, e: membership_events.ProgramChanged) -> None:
    upsert(uow.conn, programs, {"shop_id": e.shop_id, "time_zone": e.time_zone or "Asia/Shanghai",
                                "updated_at": utcnow()}, keys=("shop_id",))


def _profile_values(profile: membership_client.ProfileFacts, given: set[str]) -> dict[str, object]:
    """The columns of the profile fields named in `given` (NULL where the member gave none)."""
    values: dict[str, object] = {}
    if "birthday" in given:
        values["birth_month"] = profile.birth_month or None
    if "gender" in given:
        values["gender"] = profile.gender or None
    if "region" in given:
        values["region"] = profile.region or None
    return values


def member_joined(uow: UnitOfWork, e: membership_events.MemberJoined,
                  profile: membership_client.ProfileFacts) -> None:
    at = from_timestamp(e.joined_at, utcnow())
    upsert(uow.conn, member_facts, {
        "shop_id": e.shop_id, "member_id": e.member_id, "left_at": None, "joined_at": at,
        "join_channel": int(e.join_channel), "referrer_member_id": e.referrer_member_id,
        "tier_level": e.tier_level, "birth_month": profile.birth_month or None, "gender": profile.gender or None,
        "region": profile.region or None, "shares": 0, "points_balance": 0,
        "first_purchase_at": None, "last_purchase_at": None, "last_activity_at": None, "trades": 0,
        "spend_fen": 0, "refunds": 0, "referrals": 0, "units": 0, "promoted_trades": 0, "updated_at": utcnow()},
        keys=("shop_id", "member_id"))
    if e.referrer_member_id and e.referrer_member_id != e.member_id:
        uow.conn.execute(update(member_facts).where(_key(e.shop_id, e.referrer_member_id))
                         .values(referrals=member_facts.c.referrals + 1))


def profile_changed(uow: UnitOfWork, e: membership_events.ProfileUpdated,
                    profile: membership_client.ProfileFacts) -> None:
    """The birth month, gender and region the event names as changed, as membership keeps them now."""
    _change(uow, e.shop_id, e.member_id, **_profile_values(profile, set(e.changed_fields)))


def member_left(uow: UnitOfWork, e: membership_events.MemberLeft) -> None:
    """No rule selects a member who left; nothing personal of them is kept (birth month, gender,
    region, tags, categories bought, RFM scores)."""
    _change(uow, e.shop_id, e.member_id, left_at=from_timestamp(e.left_at, utcnow()), birth_month=None,
            gender=None, region=None)
    for table in (member_tags, member_categories):
        uow.conn.execute(delete(table).where(table.c.shop_id == e.shop_id, table.c.member_id == e.member_id))
    uow.conn.execute(delete(rfm_scores).where(rfm_scores.c.shop_id == e.shop_id, rfm_scores.c.member_id == e.member_id))


def order_completed(uow: UnitOfWork, e: membership_events.OrderCompleted) -> None:
    """The trade and its details: units, whether a promotion applied, the categories bought."""
    at = from_timestamp(e.completed_at, utcnow())
    units = sum(line.quantity for line in e.lines)
    promoted = e.coupon_applied or e.campaign_applied
    new = uow.conn.execute(insert_ignoring(uow.conn, member_orders, ["shop_id", "order_id"]).values(
        shop_id=e.shop_id, order_id=e.order_id, member_id=e.member_id, completed_at=at, amount_fen=e.amount_fen,
        refunded_fen=0, refunds=0, fully_refunded=False, units=units, coupon_applied=e.coupon_applied,
        campaign_applied=e.campaign_applied)).rowcount
    if not new:
        return
    c = member_facts.c
    _change(uow, e.shop_id, e.member_id, trades=c.trades + 1, spend_fen=c.spend_fen + e.amount_fen,
            units=c.units + units, promoted_trades=c.promoted_trades + (1 if promoted else 0),
            first_purchase_at=_earliest(c.first_purchase_at, at), last_purchase_at=_latest(c.last_purchase_at, at),
            last_activity_at=_latest(c.last_activity_at, at))
    for category_id in sorted({line.category_id for line in e.lines if line.category_id}):
        statement = dialect_insert(uow.conn, member_categories).values(
            shop_id=e.shop_id, member_id=e.member_id, category_id=category_id, trades=1, last_bought_at=at)
        uow.conn.execute(statement.on_conflict_do_update(
            index_elements=["shop_id", "member_id", "category_id"],
            set_={"trades": member_categories.c.trades + 1,
                  "last_bought_at": _latest(member_categories.c.last_bought_at, at)}))


def order_refunded(uow: UnitOfWork, e: membership_events.OrderRefunded) -> None:
    """A refund after completion takes its amount off the spend; a full refund takes the trade (and
    its units and promotion with it, so units / trades and promoted / trades stay ratios of the
    trades that count)."""
    if not e.after_completion:
        return
    key = and_(member_orders.c.shop_id == e.shop_id, member_orders.c.order_id == e.order_id)
    order: Row | None = uow.conn.execute(select(member_orders).where(key)).first()
    if order is None:
        return
    refunded = min(order.amount_fen, max(order.refunded_fen, e.total_refunded_fen))
    taken = refunded - order.refunded_fen
    fully = e.fully_refunded or refunded >= order.amount_fen
    uow.conn.execute(update(member_orders).where(key).values(
        refunded_fen=refunded, refunds=order.refunds + 1, fully_refunded=fully))
    c = member_facts.c
    gone = fully and not order.fully_refunded  # the trade no longer counts, nor do its details
    promoted = order.coupon_applied or order.campaign_applied
    _change(uow, e.shop_id, order.member_id, spend_fen=func.max(c.spend_fen - taken, 0)
            if uow.conn.dialect.name == "sqlite" else func.greatest(c.spend_fen - taken, 0),
            refunds=c.refunds + 1, trades=c.trades - (1 if gone else 0), units=c.units - (order.units if gone else 0),
            promoted_trades=c.promoted_trades - (1 if gone and promoted else 0))


def tier_changed(uow: UnitOfWork, e: membership_events.TierChanged) -> None:
    _change(uow, e.shop_id, e.member_id, tier_level=e.to_level)


def balance_changed(uow: UnitOfWork, shop_id: str, member_id: str, balance_after: int) -> None:
    _change(uow, shop_id, member_id, points_balance=balance_after)


def active(uow: UnitOfWork, shop_id: str, member_id: str, at: datetime, *, shared: bool = False) -> None:
    """An activity at `at`; a share (分享) is counted too."""
    c = member_facts.c
    counted = {"shares": c.shares + 1} if shared else {}
    _change(uow, shop_id, member_id, last_activity_at=_latest(c.last_activity_at, at), **counted)


def get_facts(conn: Connection, shop_id: str, member_id: str) -> tuple[Row, list[str], list[str]] | None:
    """The member's facts, tag ids and categories bought, or None when segments never heard of them."""
    row = conn.execute(select(member_facts).where(_key(shop_id, member_id))).first()
    if row is None:
        return None
    tag_ids = [r.tag_id for r in conn.execute(select(member_tags.c.tag_id).where(
        member_tags.c.shop_id == shop_id, member_tags.c.member_id == member_id).order_by(member_tags.c.tag_id))]
    category_ids = [r.category_id for r in conn.execute(select(member_categories.c.category_id).where(
        member_categories.c.shop_id == shop_id, member_categories.c.member_id == member_id)
        .order_by(member_categories.c.category_id))]
    return row, tag_ids, category_ids


def consumers(db: Database, bus: Bus, membership: membership_client.Client, *, workers: int = 4,
              per_transaction: int = 50) -> list[EventConsumer]:
    """Segments' consumers of membership's, points' and rewards' streams. The birth month, gender
    and region are read from membership (one GetMember) when an event says one was given or
    changed: the bus carries no personal value."""

    def read_profile(shop_id: str, member_id: str, given: set[str]) -> membership_client.ProfileFacts:
        found = membership_client.profile_facts(membership, shop_id, member_id) if given else None
        if found is None:
            return membership_client.ProfileFacts()
        return membership_client.ProfileFacts(birth_month=found.birth_month if "birthday" in given else 0,
                                              gender=found.gender if "gender" in given else 0,
                                              region=found.region if "region" in given else "")

    def joined(uow: UnitOfWork, e: membership_events.MemberJoined, _: envelope_pb2.EventEnvelope) -> None:
        given = {name for name, flag in (("birthday", e.birthday_given), ("gender", e.gender_given),
                                         ("region", e.region_given)) if flag}
        member_joined(uow, e, read_profile(e.shop_id, e.member_id, given))

    def profile(uow: UnitOfWork, e: membership_events.ProfileUpdated, _: envelope_pb2.EventEnvelope) -> None:
        changed = set(e.changed_fields) & PROFILE_FACTS
        if changed:
            profile_changed(uow, e, read_profile(e.shop_id, e.member_id, changed))

    def now_or(ts: object) -> datetime:
        return from_timestamp(ts, utcnow())

    of_membership = EventConsumer(db, bus, consumer=CONSUMER, producer="membership", handlers={
        membership_events.ProgramChanged: lambda uow, e, _: program_changed(uow, e),
        membership_events.MemberJoined: joined,
        membership_events.ProfileUpdated: profile,
        membership_events.MemberLeft: lambda uow, e, _: member_left(uow, e),
        membership_events.OrderCompleted: lambda uow, e, _: order_completed(uow, e),
        membership_events.OrderRefunded: lambda uow, e, _: order_refunded(uow, e),
        membership_events.TierChanged: lambda uow, e, _: tier_changed(uow, e),
    }, workers=workers, per_transaction=per_transaction)

    def balance(uow: UnitOfWork, e: object, _: envelope_pb2.EventEnvelope) -> None:
        balance_changed(uow, e.shop_id, e.member_id, e.balance_after)

    def action(uow: UnitOfWork, e: points_events.ActionRecorded, _: envelope_pb2.EventEnvelope) -> None:
        active(uow, e.shop_id, e.member_id, now_or(e.occurred_at), shared=e.action == points_pb2.ACTION_SHARE)

    of_points = EventConsumer(db, bus, consumer=CONSUMER, producer="points", handlers={
        points_events.PointsEarned: balance, points_events.PointsSpent: balance,
        points_events.PointsExpired: balance, points_events.PointsAdjusted: balance,
        points_events.ActionRecorded: action,
    }, workers=workers, per_transaction=per_transaction)

    def redeemed(uow: UnitOfWork, e: rewards_events.RewardRedeemed, _: envelope_pb2.EventEnvelope) -> None:
        active(uow, e.shop_id, e.member_id, now_or(e.redeemed_at))

    of_rewards = EventConsumer(db, bus, consumer=CONSUMER, producer="rewards", handlers={
        rewards_events.RewardRedeemed: redeemed,
    }, workers=workers, per_transaction=per_transaction)
    return [of_membership, of_points, of_rewards]
