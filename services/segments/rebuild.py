"""RebuildFacts: a shop's member facts rebuilt from membership's history (ExportMembers and
ExportOrders, both streamed), for a new deployment of segments or after a bug in the projection.

It writes what the events would have written, in batches: each member's row (membership's
columns; points' — balance, activity, shares — are kept as they are, a new row starts them at
zero), each completed order, the categories bought; then it recomputes every member's lifetime
figures from the orders set-wise. Running it again gives the same facts (orders are keyed by
their id, figures are recomputed, not added), and an event the consumer applies meanwhile finds
its order there already (applied once). Members segments has heard of but membership has not
(none, unless a database was restored from elsewhere) are left alone."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loyalty.membership.v1 import membership_service_pb2 as mpb
from sqlalchemy import Connection, and_, case, delete, func, select, update

from services.kit.storage import Database, batches, dialect_insert
from services.kit.timeutil import from_timestamp, utcnow
from services.membership import client as membership_client
from services.segments.tables import member_categories, member_facts, member_orders

BATCH = 1000
STREAM_TIMEOUT_SECONDS = 3600.0  # a whole shop's history, read as it comes

# member_facts columns that membership's events set (the others come from points and rewards).
_MEMBERSHIP_COLUMNS = ("left_at", "joined_at", "join_channel", "referrer_member_id", "tier_level", "birth_month",
                       "gender", "region", "updated_at")
_ORDER_COLUMNS = ("member_id", "completed_at", "amount_fen", "refunded_fen", "refunds", "fully_refunded", "units",
                  "coupon_applied", "campaign_applied")


@dataclass(frozen=True)
class Rebuilt:
    members: int
    orders: int


def rebuild(db: Database, membership: membership_client.Client, shop_id: str) -> Rebuilt:
    members = _members(db, membership, shop_id)
    orders = _orders(db, membership, shop_id)
    db.transact(lambda uow: _recompute(uow.conn, shop_id))
    return Rebuilt(members, orders)


def _bulk_upsert(conn: Connection, table: Any, rows: list[dict[str, Any]], keys: tuple[str, ...],
                 columns: tuple[str, ...]) -> None:
    statement = dialect_insert(conn, table).values(rows)
    conn.execute(statement.on_conflict_do_update(index_elements=list(keys),
                                                 set_={name: statement.excluded[name] for name in columns}))


def _member_row(m: mpb.Member, now: datetime) -> dict[str, Any]:
    """What MemberJoined / ProfileUpdated / TierChanged / MemberLeft would have left in the row."""
    active = m.status == mpb.MEMBER_STATUS_ACTIVE
    profile = m.profile
    return {
        "shop_id": m.shop_id, "member_id": m.member_id,
        "left_at": None if active else from_timestamp(m.leave_time, now),
        "joined_at": from_timestamp(m.join_time, now), "join_channel": int(m.join_channel),
        "referrer_member_id": m.referrer_member_id, "tier_level": m.tier_level,
        "birth_month": profile.birthday.month if active and profile.HasField("birthday") and profile.birthday.month
        else None,
        "gender": int(profile.gender) if active and profile.gender else None,
        "region": profile.region[:64] if active and profile.region else None,
        "points_balance": 0, "first_purchase_at": None, "last_purchase_at": None, "last_activity_at": None,
        "trades": 0, "spend_fen": 0, "refunds": 0, "referrals": 0, "units": 0, "promoted_trades": 0, "shares": 0,
        "updated_at": now}


def _members(db: Database, membership: membership_client.Client, shop_id: str) -> int:
    count = 0
    exported = membership.stream("ExportMembers", mpb.ExportMembersRequest(shop_id=shop_id, include_left=True),
                                 timeout=STREAM_TIMEOUT_SECONDS)
    for batch in batches(exported, BATCH):
        now = utcnow()
        rows = [_member_row(m, now) for m in batch]
        db.transact(lambda uow, rows=rows: _bulk_upsert(uow.conn, member_facts, rows, ("shop_id", "member_id"),
                                                        _MEMBERSHIP_COLUMNS))
        count += len(rows)
    return count


def _orders(db: Database, membership: membership_client.Client, shop_id: str) -> int:
    """Every completed order, then the categories bought (replaced: counted from the orders)."""
    count = 0
    categories: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, None])
    exported = membership.stream("ExportOrders", mpb.ExportOrdersRequest(shop_id=shop_id),
                                 timeout=STREAM_TIMEOUT_SECONDS)
    for batch in batches(exported, BATCH):
        now = utcnow()
        rows = []
        for o in batch:
            completed_at = from_timestamp(o.complete_time, now)
            rows.append({
                "shop_id": shop_id, "order_id": o.order_id, "member_id": o.member_id, "completed_at": completed_at,
                "amount_fen": o.amount_fen, "refunded_fen": min(o.amount_fen, o.refunded_fen),
                "refunds": o.refunds_after_completion,
                "fully_refunded": o.status == mpb.ORDER_STATUS_REFUNDED or o.refunded_fen >= o.amount_fen > 0,
                "units": sum(line.quantity for line in o.lines), "coupon_applied": o.coupon_applied,
                "campaign_applied": o.campaign_applied})
            for category_id in {line.category_id for line in o.lines if line.category_id}:
                bought = categories[(o.member_id, category_id)]
                bought[0] += 1
                bought[1] = completed_at if bought[1] is None else max(bought[1], completed_at)
        db.transact(lambda uow, rows=rows: _bulk_upsert(uow.conn, member_orders, rows, ("shop_id", "order_id"),
                                                        _ORDER_COLUMNS))
        count += len(rows)

    def replace_categories(conn: Connection) -> None:
        conn.execute(delete(member_categories).where(member_categories.c.shop_id == shop_id))
        rows = [{"shop_id": shop_id, "member_id": member_id, "category_id": category_id, "trades": trades,
                 "last_bought_at": last} for (member_id, category_id), (trades, last) in categories.items()]
        for batch in batches(rows, BATCH):
            conn.execute(dialect_insert(conn, member_categories).values(batch))
        # Nothing personal is kept of a member who left.
        left = select(member_facts.c.member_id).where(member_facts.c.shop_id == shop_id,
                                                       member_facts.c.left_at.is_not(None))
        conn.execute(delete(member_categories).where(member_categories.c.shop_id == shop_id,
                                                     member_categories.c.member_id.in_(left)))

    db.transact(lambda uow: replace_categories(uow.conn))
    return count


def _recompute(conn: Connection, shop_id: str) -> None:
    """Each member's lifetime figures from their orders, and referrals from the members, set-wise
    (what the events add up to)."""
    o, f = member_orders.c, member_facts.c
    mine = and_(o.shop_id == f.shop_id, o.member_id == f.member_id)

    def of_orders(expression: Any, default: Any = 0) -> Any:
        return func.coalesce(select(expression).where(mine).scalar_subquery(), default)

    r = member_facts.alias("r")
    referred = select(func.count()).where(r.c.shop_id == f.shop_id, r.c.referrer_member_id == f.member_id,
                                          r.c.member_id != f.member_id).scalar_subquery()
    last_purchase = select(func.max(o.completed_at)).where(mine).scalar_subquery()
    conn.execute(update(member_facts).where(f.shop_id == shop_id).values(
        trades=of_orders(func.sum(case((o.fully_refunded, 0), else_=1))),
        spend_fen=of_orders(func.sum(o.amount_fen - o.refunded_fen)),
        refunds=of_orders(func.sum(o.refunds)),
        # A full refund takes the trade's units and promotion with it (facts.order_refunded).
        units=of_orders(func.sum(case((o.fully_refunded, 0), else_=o.units))),
        promoted_trades=of_orders(func.sum(case((o.fully_refunded, 0),
                                                (o.coupon_applied | o.campaign_applied, 1), else_=0))),
        first_purchase_at=select(func.min(o.completed_at)).where(mine).scalar_subquery(),
        last_purchase_at=last_purchase,
        last_activity_at=case((f.last_activity_at.is_(None), last_purchase),
                              (last_purchase.is_(None), f.last_activity_at),
                              (last_purchase > f.last_activity_at, last_purchase), else_=f.last_activity_at),
        referrals=referred, updated_at=utcnow()))
