"""积分过期: lots past their date are written off, a shop at a time, in set-based SQL. (A
member's own overdue lots are also swept before any spend of theirs decides: ledger.sweep_expired.)"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from loyalty.points.v1 import events_pb2
from sqlalchemy import Connection, and_, exists, func, insert, literal, select, update

from services.kit.cache import invalidate_on_commit
from services.kit.storage import UnitOfWork
from services.kit.timeutil import to_timestamp
from services.points import commands
from services.points.domain import EntryKind
from services.points.program import load_program
from services.points.service import PointsService
from services.points.tables import accounts, ledger, lots
from services.points.views import balance_key, total

EVENTS_PER_STATEMENT = 1000


@dataclass(frozen=True)
class Expired:
    members: int
    lots: int
    points: int


def shops_with_due_lots(conn: Connection, as_of: datetime) -> list[str]:
    return [r[0] for r in conn.execute(
        select(lots.c.shop_id).where(lots.c.expires_at <= as_of, lots.c.remaining > 0).distinct())]


def expire_shop(svc: PointsService, uow: UnitOfWork, cmd: commands.ExpireShop) -> Expired:
    """One EXPIRE entry per member, the balances and the lots updated by a statement each."""
    load_program(svc, cmd.shop_id, uow.conn)
    shop_id, as_of = cmd.shop_id, cmd.as_of
    due = and_(lots.c.shop_id == shop_id, lots.c.expires_at <= as_of, lots.c.remaining > 0)
    per_member = (select(lots.c.member_id, total(lots.c.remaining).label("points"),
                         func.count().label("lots")).where(due).group_by(lots.c.member_id).subquery())
    member_of = and_(accounts.c.shop_id == shop_id, accounts.c.member_id == per_member.c.member_id)
    member_due = and_(due, lots.c.member_id == accounts.c.member_id)
    if not svc.db.is_sqlite:
        # One expiry run per shop at a time; then lock the accounts, as every spend does, and
        # only then read what is due, so that what a concurrent spend swept is not counted.
        uow.conn.execute(select(func.pg_advisory_xact_lock(func.hashtext("points-expire:" + shop_id))))
        uow.conn.execute(select(accounts.c.member_id).where(accounts.c.shop_id == shop_id, exists().where(
            member_due)).order_by(accounts.c.member_id).with_for_update()).all()
    moved = uow.conn.execute(
        select(per_member.c.member_id, per_member.c.points, per_member.c.lots,
               (accounts.c.available - per_member.c.points).label("balance_after"))
        .join(accounts, member_of).order_by(per_member.c.member_id)).all()
    if not moved:
        return Expired(0, 0, 0)
    blank = literal("")
    uow.conn.execute(insert(ledger).from_select(
        ["shop_id", "member_id", "kind", "amount", "held_delta", "balance_after", "order_id", "action", "rule_id",
         "multiplier_id", "redemption_id", "hold_id", "operator", "reason", "reference", "created_at"],
        select(literal(shop_id), per_member.c.member_id, literal(int(EntryKind.EXPIRE)), -per_member.c.points,
               literal(0), accounts.c.available - per_member.c.points, blank, literal(0), blank, blank, blank,
               blank, blank, literal("expired"), blank, literal(as_of)).join(accounts, member_of)))
    uow.conn.execute(update(accounts).where(accounts.c.shop_id == shop_id, exists().where(member_due)).values(
        available=accounts.c.available - select(total(lots.c.remaining)).where(member_due).scalar_subquery()))
    uow.conn.execute(update(lots).where(due).values(remaining=0))
    occurred = to_timestamp(as_of)
    for i in range(0, len(moved), EVENTS_PER_STATEMENT):
        uow.emit_many(shop_id, [events_pb2.PointsExpired(shop_id=shop_id, member_id=m.member_id, points=m.points,
                                                         balance_after=m.balance_after, occurred_at=occurred)
                                for m in moved[i:i + EVENTS_PER_STATEMENT]])
    invalidate_on_commit(uow, svc.cache, [balance_key(shop_id, m.member_id) for m in moved])
    return Expired(len(moved), sum(m.lots for m in moved), sum(m.points for m in moved))
