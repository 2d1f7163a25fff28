"""Reports (数据运营) over the facts segments keeps: members now (count, active, tagged, tiers, trades,
join channels), sales per shop-local day or month (new members; new vs returning buyers' orders,
sales, 连带率 and 客单价) and the repurchase rate over a window. Every figure is an SQL aggregate;
Python only shapes the few grouped rows.

Days and months are the shop's (programs.time_zone): each period's UTC start comes from zoneinfo
(right across daylight saving changes) and rows are bucketed by a CASE over those instants, the
same SQL on SQLite and PostgreSQL. The CASE is a binary search, so a row costs a handful of
comparisons even over 366 days.

Definitions (the proto's): a trade is a completed order not fully refunded, its sales the amount
less refunds. A new buyer of a period (新客) is one whose first trade ever falls in it; the other
buyers of the period are returning (老客). New members are those who joined in the period (whether
or not they left since); the member report counts only members who have not left."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, Connection, Integer, and_, case, cast, exists, func, literal, select, text
from sqlalchemy.sql import ColumnElement

from services.kit.timeutil import utcnow
from services.segments.commands_reports import (
    Granularity,
    MemberReportQuery,
    RepurchaseQuery,
    SalesReportQuery,
)
from services.segments.service import SegmentsService
from services.segments.tables import member_facts, member_orders, member_tags

mf = member_facts.c
mo = member_orders.c


@dataclass(frozen=True)
class MemberReport:
    shop_id: str
    members: int
    active_members: int
    tagged_members: int
    tiers: list[tuple[int, int]]  # (tier level, members), by level
    with_no_trade: int
    with_one_trade: int
    with_more_trades: int
    join_channels: list[tuple[int, int]]  # (JoinChannel value, members), by value
    at: datetime


@dataclass(frozen=True)
class BuyerFigures:
    buyers: int = 0
    orders: int = 0
    sales_fen: int = 0
    units: int = 0

    @property
    def average_order_fen(self) -> int:
        """客单价: sales per buyer, rounded down to the fen."""
        return self.sales_fen // self.buyers if self.buyers else 0

    @property
    def units_per_order(self) -> float:
        """连带率: units per order."""
        return self.units / self.orders if self.orders else 0.0


@dataclass
class SalesPeriod:
    period: str  # YYYY-MM-DD or YYYY-MM, shop-local
    new_members: int = 0
    new_buyers: BuyerFigures = field(default_factory=BuyerFigures)
    returning_buyers: BuyerFigures = field(default_factory=BuyerFigures)


@dataclass(frozen=True)
class SalesReport:
    shop_id: str
    time_zone: str
    periods: list[SalesPeriod]


@dataclass(frozen=True)
class Repurchase:
    shop_id: str
    window_days: int
    buyers: int
    repeat_buyers: int

    @property
    def rate_bp(self) -> int:
        """repeat buyers / buyers in basis points, rounded down."""
        return self.repeat_buyers * 10_000 // self.buyers if self.buyers else 0


def _int(value: object) -> int:
    return int(value or 0)


def _count_if(condition: ColumnElement[bool]) -> ColumnElement:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


# ----- members now -------------------------------------------------------------------------------------


def member_report(service: SegmentsService, query: MemberReportQuery) -> MemberReport:
    now = utcnow()
    since = now - timedelta(days=query.days)
    shop = and_(mf.shop_id == query.shop_id, mf.left_at.is_(None))
    tagged = exists(select(member_tags.c.member_id).where(
        member_tags.c.shop_id == mf.shop_id, member_tags.c.member_id == mf.member_id).correlate(member_facts))

    def read(conn: Connection) -> MemberReport:
        totals = conn.execute(select(
            func.count(), _count_if(mf.last_activity_at >= since), _count_if(tagged), _count_if(mf.trades <= 0),
            _count_if(mf.trades == 1), _count_if(mf.trades >= 2)).where(shop)).one()
        tiers = conn.execute(select(mf.tier_level, func.count()).where(shop)
                             .group_by(mf.tier_level).order_by(mf.tier_level)).all()
        channels = conn.execute(select(mf.join_channel, func.count()).where(shop)
                                .group_by(mf.join_channel).order_by(mf.join_channel)).all()
        members, active, tagged_members, none, one, more = (_int(x) for x in totals)
        return MemberReport(query.shop_id, members, active, tagged_members,
                            [(int(level), int(n)) for level, n in tiers], none, one, more,
                            [(int(channel), int(n)) for channel, n in channels], now)

    return service.db.read(read)


# ----- sales per period ------------------------------------------------------------------------------------


def _local_midnight_utc(day: date, zone: ZoneInfo) -> datetime:
    """The instant the shop-local `day` begins, as naive UTC."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC).replace(tzinfo=None)


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def periods_of(start: date, end: date, granularity: Granularity, zone: ZoneInfo) -> list[tuple[str, datetime]]:
    """The shop-local days or months covering start..end (both included) as (label, UTC start),
    and a last ("", UTC end of `end`). The first and last months are cut to the dates asked."""
    out: list[tuple[str, datetime]] = []
    day = start
    while day <= end:
        if granularity is Granularity.DAY:
            label, following = day.isoformat(), day + timedelta(days=1)
        else:
            label, following = day.strftime("%Y-%m"), _next_month(day)
        out.append((label, _local_midnight_utc(day, zone)))
        day = following
    out.append(("", _local_midnight_utc(end + timedelta(days=1), zone)))
    return out


def bucket(column: ColumnElement, starts: list[datetime]) -> ColumnElement:
    """The index i of the period with starts[i] <= column < starts[i + 1], for a column within
    [starts[0], starts[-1]) (callers filter the rest), as a binary search of nested CASEs."""

    def node(lo: int, hi: int) -> ColumnElement:
        if hi - lo == 1:
            return literal(lo, Integer)
        mid = (lo + hi) // 2
        return case((column < starts[mid], node(lo, mid)), else_=node(mid, hi))

    return node(0, len(starts) - 1)


def sales_report(service: SegmentsService, query: SalesReportQuery) -> SalesReport:
    zone = service.zones.get(query.shop_id)
    bounds = periods_of(query.start, query.end, query.granularity, zone)
    starts = [at for _, at in bounds]
    first, last = starts[0], starts[-1]
    periods = [SalesPeriod(label) for label, _ in bounds[:-1]]

    joined = select(bucket(mf.joined_at, starts).label("period")).where(
        mf.shop_id == query.shop_id, mf.joined_at >= first, mf.joined_at < last).subquery()
    new_members = select(joined.c.period, func.count()).group_by(joined.c.period)

    in_range = and_(mo.shop_id == query.shop_id, mo.fully_refunded.is_(False), mo.completed_at >= first,
                    mo.completed_at < last)
    earlier = member_orders.alias("earlier")
    firsts = select(earlier.c.member_id, func.min(earlier.c.completed_at).label("first_at")).where(
        earlier.c.shop_id == query.shop_id, earlier.c.fully_refunded.is_(False), earlier.c.completed_at < last,
        earlier.c.member_id.in_(select(mo.member_id).where(in_range).correlate(None))).group_by(earlier.c.member_id).subquery()
    trades = select(mo.member_id, (mo.amount_fen - mo.refunded_fen).label("sales"), mo.units,
                    bucket(mo.completed_at, starts).label("period"), firsts.c.first_at).join_from(
        member_orders, firsts, firsts.c.member_id == mo.member_id).where(in_range).subquery()
    # The order's own period when the buyer's first trade lies in it (first_at <= completed_at).
    is_new = case((and_(trades.c.first_at >= first, bucket(trades.c.first_at, starts) == trades.c.period), 1),
                  else_=0).label("is_new")
    kinds = select(trades.c.period, trades.c.member_id, trades.c.sales, trades.c.units, is_new).subquery()
    figures = select(kinds.c.period, kinds.c.is_new, func.count(func.distinct(kinds.c.member_id)), func.count(),
                     cast(func.sum(kinds.c.sales), BigInteger), cast(func.sum(kinds.c.units), BigInteger)
                     ).group_by(kinds.c.period, kinds.c.is_new)

    def read(conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            # JIT-compiling the CASE of a year of days takes seconds, far longer than the query runs.
            conn.execute(text("SET LOCAL jit = off"))
        for index, n in conn.execute(new_members):
            periods[index].new_members = int(n)
        for index, new, buyers, orders, sales, units in conn.execute(figures):
            found = BuyerFigures(int(buyers), int(orders), _int(sales), _int(units))
            if new:
                periods[index].new_buyers = found
            else:
                periods[index].returning_buyers = found

    service.db.read(read)
    return SalesReport(query.shop_id, zone.key, periods)


# ----- repurchase --------------------------------------------------------------------------------------------


def repurchase(service: SegmentsService, query: RepurchaseQuery) -> Repurchase:
    since = utcnow() - timedelta(days=query.window_days)
    per_buyer = select(mo.member_id, func.count().label("trades")).where(
        mo.shop_id == query.shop_id, mo.fully_refunded.is_(False), mo.completed_at >= since,
    ).group_by(mo.member_id).subquery()
    counted = select(func.count(), _count_if(per_buyer.c.trades >= 2)).select_from(per_buyer)
    buyers, repeat = service.db.read(lambda conn: conn.execute(counted).one())
    return Repurchase(query.shop_id, query.window_days, _int(buyers), _int(repeat))
