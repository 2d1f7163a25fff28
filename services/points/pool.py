"""The daily pool (每日瓜分积分): members join a shop-local day's pool, and once the day is over
the pool is split evenly among them, once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import Connection, func, insert, select
from sqlalchemy.exc import IntegrityError

from services.kit.errors import FailedPrecondition, InvalidArgument
from services.kit.storage import UnitOfWork
from services.kit.timeutil import utcnow
from services.points import commands, domain, ledger, reasons
from services.points.domain import Action, Source
from services.points.program import load_program
from services.points.service import PointsService
from services.points.tables import pool_entries, pool_settlements, programs


@dataclass(frozen=True)
class PoolJoined:
    day: str
    participants: int


@dataclass(frozen=True)
class PoolSettled:
    day: str
    participants: int
    points_each: int
    already_settled: bool


def join_pool(svc: PointsService, uow: UnitOfWork, cmd: commands.JoinPool) -> PoolJoined:
    """Joins today's pool (joining twice is harmless)."""
    program = load_program(svc, cmd.shop_id, uow.conn)
    if program.daily_pool_points <= 0:
        raise FailedPrecondition("the shop has no daily pool", reason=reasons.NO_DAILY_POOL,
                                 subject=f"shop/{cmd.shop_id}")
    acct = ledger.lock(uow, cmd.shop_id, cmd.member_id)
    acct.refuse_if_closed()
    day = domain.local_date(utcnow(), program.zone).isoformat()
    try:
        with uow.conn.begin_nested():
            uow.conn.execute(insert(pool_entries), {"shop_id": cmd.shop_id, "day": day, "member_id": cmd.member_id})
    except IntegrityError:
        pass  # joined already today
    count = uow.conn.execute(select(func.count()).where(pool_entries.c.shop_id == cmd.shop_id,
                                                        pool_entries.c.day == day)).scalar()
    return PoolJoined(day, int(count))


def settle_pool(svc: PointsService, uow: UnitOfWork, cmd: commands.SettlePool) -> PoolSettled:
    """Splits the pool evenly among the day's participants, once; the remainder below one point
    each is not paid out."""
    program = load_program(svc, cmd.shop_id, uow.conn)
    shop_id = cmd.shop_id
    today = domain.local_date(utcnow(), program.zone)
    if cmd.day:
        if date.fromisoformat(cmd.day) > today:
            raise InvalidArgument([("day", "a day to come cannot be settled")])
        day = cmd.day
    else:
        day = (today - timedelta(days=1)).isoformat()
    done = uow.conn.execute(select(pool_settlements).where(pool_settlements.c.shop_id == shop_id,
                                                           pool_settlements.c.day == day)).first()
    if done is not None:
        return PoolSettled(day, done.participants, done.points_each, True)
    members = [r[0] for r in uow.conn.execute(select(pool_entries.c.member_id).where(
        pool_entries.c.shop_id == shop_id, pool_entries.c.day == day).order_by(pool_entries.c.member_id))]
    each = program.daily_pool_points // len(members) if members else 0
    now = utcnow()
    try:
        with uow.conn.begin_nested():
            uow.conn.execute(insert(pool_settlements), {"shop_id": shop_id, "day": day, "participants": len(members),
                                                        "points_each": each, "settled_at": now})
    except IntegrityError:  # settled concurrently
        return PoolSettled(day, len(members), each, True)
    if each > 0:
        for member_id in members:
            acct = ledger.lock(uow, shop_id, member_id)
            if not acct.closed:
                ledger.earn_points(uow, program, acct, each, Source(action=int(Action.DAILY_POOL),
                                                                    reference=f"daily-pool:{day}"), now)
                ledger.save(svc, uow, acct)
    return PoolSettled(day, len(members), each, False)


def shops_with_pools(conn: Connection) -> list[str]:
    return [r[0] for r in conn.execute(select(programs.c.shop_id).where(programs.c.daily_pool_points > 0))]
