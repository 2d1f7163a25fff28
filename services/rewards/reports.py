"""Reports for operators: completed redemptions per reward and shop-local day, what they took in
points and cash, the stock left, the coupons issued in a period with what became of them, and each
campaign's reach and conversion, treated vs held out (reports_campaigns)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, case, func, select

from services.kit.errors import InvalidArgument
from services.kit.timeutil import utcnow
from services.kit.validation import require_shop
from services.rewards.domain import CouponState, RedemptionState, RewardStatus
from services.rewards.reports_campaigns import CampaignFigures, campaign_figures
from services.rewards.service import RewardsService
from services.rewards.tables import coupons, redemptions, rewards

DEFAULT_PERIOD = timedelta(days=30)
MAX_PERIOD = timedelta(days=366)


@dataclass(frozen=True)
class RedemptionDay:
    day: str
    reward_id: str
    reward_name: str
    redemptions: int
    quantity: int
    points: int
    cash_fen: int


@dataclass(frozen=True)
class Stock:
    reward_id: str
    name: str
    status: RewardStatus
    unlimited_stock: bool
    stock: int
    redeemed: int


@dataclass(frozen=True)
class CouponFigures:
    issued: int = 0
    used: int = 0
    expired: int = 0
    unused: int = 0
    revoked: int = 0

    @property
    def use_rate_bp(self) -> int:
        return self.used * 10_000 // self.issued if self.issued else 0


@dataclass(frozen=True)
class Report:
    shop_id: str
    start: datetime
    end: datetime
    days: list[RedemptionDay]
    stock: list[Stock]
    coupons: CouponFigures
    coupons_by_reward: list[tuple[str, str, CouponFigures]] = field(default_factory=list)
    campaigns: list[CampaignFigures] = field(default_factory=list)

    @property
    def points_consumed(self) -> int:
        return sum(d.points for d in self.days)

    @property
    def cash_fen(self) -> int:
        return sum(d.cash_fen for d in self.days)


def period(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """The report's period: [start, end), by default the 30 days before now; at most 366 days."""
    end = end or now
    start = start or end - DEFAULT_PERIOD
    if start >= end:
        raise InvalidArgument([("end_time", "must be after start_time")])
    if end - start > MAX_PERIOD:
        raise InvalidArgument([("start_time", "a report covers at most 366 days")])
    return start, end


def report(service: RewardsService, shop_id: str, start: datetime | None, end: datetime | None) -> Report:
    require_shop(shop_id)
    now = utcnow()
    start, end = period(start, end, now)
    zone = service.zones.get(shop_id)

    def read(conn: Connection) -> Report:
        names = dict(conn.execute(select(rewards.c.reward_id, rewards.c.name)
                                  .where(rewards.c.shop_id == shop_id)).all())
        # Grouped by the shop-local day in Python: the day of an instant depends on the zone's rules.
        totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        done = conn.execute(select(redemptions.c.reward_id, redemptions.c.completed_at, redemptions.c.quantity,
                                   redemptions.c.points, redemptions.c.cash_fen).where(
            redemptions.c.shop_id == shop_id, redemptions.c.state == int(RedemptionState.COMPLETED),
            redemptions.c.completed_at >= start, redemptions.c.completed_at < end).execution_options(yield_per=1000))
        for row in done:
            day = row.completed_at.replace(tzinfo=UTC).astimezone(zone).date().isoformat()
            figures = totals[(day, row.reward_id)]
            figures[0] += 1
            figures[1] += row.quantity
            figures[2] += row.points
            figures[3] += row.cash_fen
        days = [RedemptionDay(day, reward_id, names.get(reward_id, ""), *figures)
                for (day, reward_id), figures in sorted(totals.items())]
        stock = [Stock(r.reward_id, r.name, RewardStatus(r.status), r.unlimited_stock, r.stock, r.redeemed)
                 for r in conn.execute(select(rewards).where(rewards.c.shop_id == shop_id)
                                       .order_by(rewards.c.created_at, rewards.c.reward_id)).all()]
        # An unused coupon past its window counts as expired, as ListCoupons shows it, job or not.
        state, lapsed = coupons.c.state, coupons.c.valid_until <= now
        unused = int(CouponState.UNUSED)
        counts = [func.sum(case((condition, 1), else_=0)) for condition in (
            state == int(CouponState.USED), (state == int(CouponState.EXPIRED)) | ((state == unused) & lapsed),
            (state == unused) & ~lapsed, state == int(CouponState.REVOKED))]
        rows = conn.execute(select(coupons.c.reward_id, func.count(), *counts).where(
            coupons.c.shop_id == shop_id, coupons.c.issued_at >= start, coupons.c.issued_at < end)
            .group_by(coupons.c.reward_id).order_by(coupons.c.reward_id)).all()
        per_reward = [(r[0], names.get(r[0], ""), CouponFigures(*(int(n or 0) for n in r[1:]))) for r in rows]
        overall = CouponFigures(*(sum(getattr(f, name) for _, _, f in per_reward)
                                  for name in ("issued", "used", "expired", "unused", "revoked")))
        return Report(shop_id, start, end, days, stock, overall, per_reward,
                      campaign_figures(conn, shop_id, start, end, now))

    return service.db.read(read)
