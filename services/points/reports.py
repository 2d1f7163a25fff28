"""Reports for the shop: points about to expire (积分到期提醒) and the points liability
(积分负债) with its flow per period and its expiry schedule. Reads only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, case, func, literal, select
from sqlalchemy.sql import ColumnElement

from services.kit.errors import InvalidArgument
from services.kit.timeutil import utcnow
from services.points import commands, domain
from services.points.domain import EntryKind
from services.points.program import load_program
from services.points.service import PointsService
from services.points.tables import accounts, ledger, lots
from services.points.views import total

# Which column of a period each kind of entry counts in; spends show as positive amounts spent,
# and a released hold gives back what it held.
_COLUMN = {EntryKind.EARN: "earned", EntryKind.SPEND: "spent", EntryKind.HOLD: "spent", EntryKind.RELEASE: "spent",
           EntryKind.EXPIRE: "expired", EntryKind.ADJUST: "adjusted", EntryKind.CLAWBACK: "adjusted",
           EntryKind.FORFEIT: "adjusted"}
MAX_REPORT_DAYS = 3700


@dataclass(frozen=True)
class ExpiringMember:
    member_id: str
    points: int
    first_expires_at: datetime


@dataclass
class Period:
    period: str  # shop-local "2026-11-23" or "2026-11"
    earned: int = 0
    spent: int = 0
    expired: int = 0
    adjusted: int = 0


@dataclass(frozen=True)
class Liability:
    shop_id: str
    outstanding: int
    value_fen: int
    members: int
    periods: list[Period]
    schedule: list[tuple[str, int]]  # (shop-local month, points expiring then)


def expiring(svc: PointsService, query: commands.ExpiringQuery) -> list[ExpiringMember]:
    """Members whose points expire within the window, by member id."""
    return svc.db.read(lambda conn: _expiring(svc, conn, query))


def liability(svc: PointsService, query: commands.LiabilityQuery) -> Liability:
    """What is outstanding and what it is worth, the flow per period, and the expiry schedule
    ahead, all by the shop's calendar."""
    return svc.db.read(lambda conn: _liability(svc, conn, query))


def _expiring(svc: PointsService, conn: Connection, query: commands.ExpiringQuery) -> list[ExpiringMember]:
    load_program(svc, query.shop_id, conn)
    now = utcnow()
    select_page = (select(lots.c.member_id, total(lots.c.remaining).label("points"),
                          func.min(lots.c.expires_at).label("first")).where(
        lots.c.shop_id == query.shop_id, lots.c.remaining > 0, lots.c.expires_at > now,
        lots.c.expires_at <= now + timedelta(days=query.within_days))
        .group_by(lots.c.member_id).order_by(lots.c.member_id).limit(query.limit))
    if query.after:
        select_page = select_page.where(lots.c.member_id > query.after)
    return [ExpiringMember(r.member_id, int(r.points), r.first) for r in conn.execute(select_page)]


def _liability(svc: PointsService, conn: Connection, query: commands.LiabilityQuery) -> Liability:
    program = load_program(svc, query.shop_id, conn)
    shop_id, zone, now = query.shop_id, program.zone, utcnow()
    today = domain.local_date(now, zone)
    if query.monthly:
        default_start = domain.local_midnight_utc(domain.add_months(today.replace(day=1), -11), zone)
    else:
        default_start = domain.local_midnight_utc(today - timedelta(days=29), zone)
    start = query.start or default_start
    end = query.end or domain.local_midnight_utc(today + timedelta(days=1), zone)
    if start >= end or (end - start).days > MAX_REPORT_DAYS:
        raise InvalidArgument([("end_time", "must be after start_time, within about ten years")])
    boundaries = _period_boundaries(start, end, zone, query.monthly)
    outstanding = conn.execute(select(total(accounts.c.available + accounts.c.held), func.count()).where(
        accounts.c.shop_id == shop_id, (accounts.c.available + accounts.c.held) > 0)).one()
    period = _bucket(ledger.c.created_at, boundaries)
    flows = conn.execute(select(period.label("p"), ledger.c.kind, total(ledger.c.amount)).where(
        ledger.c.shop_id == shop_id, ledger.c.created_at >= start, ledger.c.created_at < end)
        .group_by(period, ledger.c.kind)).all()
    periods = [Period(label) for label, _, _ in boundaries]
    for index, kind, amount in flows:
        name = _COLUMN.get(EntryKind(kind))
        if name is not None and index is not None:
            change = -amount if name in ("spent", "expired") else amount
            setattr(periods[index], name, getattr(periods[index], name) + change)
    schedule_bounds = _period_boundaries(now, domain.local_midnight_utc(
        domain.add_months(today.replace(day=1), 25), zone), zone, True)
    bucket = _bucket(lots.c.expires_at, schedule_bounds)
    ahead = conn.execute(select(bucket, total(lots.c.remaining)).where(
        lots.c.shop_id == shop_id, lots.c.remaining > 0, lots.c.expires_at > now).group_by(bucket)).all()
    schedule = {index: amount for index, amount in ahead if index is not None}
    points = int(outstanding[0])
    return Liability(shop_id, points, points * 100 // program.points_per_yuan, int(outstanding[1]), periods,
                     [(schedule_bounds[i][0], int(schedule[i])) for i in sorted(schedule)])


def _period_boundaries(start: datetime, end: datetime, zone: ZoneInfo, monthly: bool
                       ) -> list[tuple[str, datetime, datetime]]:
    """Shop-local days or months covering [start, end), as (label, utc start, utc end)."""
    day = domain.local_date(start, zone)
    first = day.replace(day=1) if monthly else day
    out = []
    while True:
        nxt = domain.add_months(first, 1) if monthly else first + timedelta(days=1)
        lo, hi = domain.local_midnight_utc(first, zone), domain.local_midnight_utc(nxt, zone)
        if lo >= end:
            return out
        out.append((first.strftime("%Y-%m") if monthly else first.isoformat(), max(lo, start), min(hi, end)))
        first = nxt


def _bucket(column: ColumnElement, boundaries: list[tuple[str, datetime, datetime]]) -> ColumnElement:
    """The index of the period a timestamp falls in, as one CASE."""
    if not boundaries:
        return literal(None)
    return case(*[((column >= lo) & (column < hi), i) for i, (_, lo, hi) in enumerate(boundaries)], else_=None)
