"""What the member centre's rewards endpoints take and answer (see centre_models for the common
conventions): coupons, the points mall's offers, redemptions, lotteries and draws."""

from __future__ import annotations

from datetime import datetime

from loyalty.rewards.v1 import lottery_pb2 as lpb
from loyalty.rewards.v1 import rewards_service_pb2 as rpb
from pydantic import BaseModel, Field

from gateway.routes.centre_models import ID_PATTERN, KEY_PATTERN, when, word


class CouponOut(BaseModel):
    coupon_id: str
    reward_id: str
    name: str
    face_value_fen: int
    threshold_fen: int = Field(description="0: no threshold (无门槛).")
    valid_from: datetime | None
    valid_until: datetime | None
    status: str = Field(description="unused, used, expired, revoked")
    source: str
    issue_time: datetime | None
    use_time: datetime | None


def coupon_out(c: rpb.Coupon) -> CouponOut:
    return CouponOut(
        coupon_id=c.coupon_id, reward_id=c.reward_id, name=c.name, face_value_fen=c.face_value_fen,
        threshold_fen=c.threshold_fen, valid_from=when(c.valid_from), valid_until=when(c.valid_until),
        status=word(rpb.CouponState, c.state, "COUPON_STATE_"),
        source=word(rpb.CouponSource, c.source, "COUPON_SOURCE_"),
        issue_time=when(c.issue_time), use_time=when(c.use_time))


class CouponsPage(BaseModel):
    coupons: list[CouponOut]
    next_page_token: str | None


class OfferOut(BaseModel):
    """A reward of the points mall (积分商城), and whether the buyer can redeem it now."""

    reward_id: str
    name: str
    description: str
    kind: str = Field(description="coupon, gift, virtual")
    points_price: int
    cash_price_fen: int = Field(description="加钱购: cash on top of the points; 0 for points only.")
    min_tier_level: int
    stock: int | None = Field(description="Left in stock; None when unlimited.")
    face_value_fen: int | None = Field(description="Coupons: the face value.")
    threshold_fen: int | None = Field(description="Coupons: the threshold (0: none).")
    start_time: datetime | None
    end_time: datetime | None
    redeemable: bool
    why_not: list[str] = Field(description="Why it cannot be redeemed now: TIER_TOO_LOW, OUT_OF_STOCK, …")


def offer_out(o: rpb.RewardOffer) -> OfferOut:
    r = o.reward
    is_coupon = r.kind == rpb.REWARD_KIND_COUPON
    return OfferOut(
        reward_id=r.reward_id, name=r.name, description=r.description,
        kind=word(rpb.RewardKind, r.kind, "REWARD_KIND_"), points_price=r.points_price,
        cash_price_fen=r.cash_price_fen, min_tier_level=r.min_tier_level,
        stock=None if r.unlimited_stock else r.stock,
        face_value_fen=r.coupon.face_value_fen if is_coupon else None,
        threshold_fen=r.coupon.threshold_fen if is_coupon else None,
        start_time=when(r.start_time), end_time=when(r.end_time), redeemable=o.redeemable,
        why_not=list(o.unavailable_reasons))


class RewardsPage(BaseModel):
    rewards: list[OfferOut]
    next_page_token: str | None


class RedeemIn(BaseModel):
    reward_id: str = Field(pattern=ID_PATTERN)
    quantity: int = Field(1, ge=1, le=99)
    request_id: str | None = Field(None, pattern=KEY_PATTERN, description="Or the Idempotency-Key header.")


class RedemptionOut(BaseModel):
    redemption_id: str
    reward_id: str
    kind: str
    quantity: int
    points: int
    cash_fen: int
    state: str = Field(description="pending, awaiting_payment, completed, failed, cancelled")
    failure_reason: str | None
    coupon_ids: list[str]
    payment_deadline: datetime | None
    create_time: datetime | None
    complete_time: datetime | None


def redemption_out(r: rpb.Redemption) -> RedemptionOut:
    return RedemptionOut(
        redemption_id=r.redemption_id, reward_id=r.reward_id, kind=word(rpb.RewardKind, r.kind, "REWARD_KIND_"),
        quantity=r.quantity, points=r.points, cash_fen=r.cash_fen,
        state=word(rpb.RedemptionState, r.state, "REDEMPTION_STATE_"), failure_reason=r.failure_reason or None,
        coupon_ids=list(r.coupon_ids), payment_deadline=when(r.payment_deadline), create_time=when(r.create_time),
        complete_time=when(r.complete_time))


class PrizeOut(BaseModel):
    prize_id: str
    name: str
    kind: str = Field(description="points, coupon, gift, nothing")
    points: int
    probability_bp: int = Field(description="Chance in basis points (10000 = certain).")


class LotteryOut(BaseModel):
    """抽奖: a wheel (大转盘) or grid (九宫格) the buyer may draw from."""

    lottery_id: str
    name: str
    style: str
    cost_points: int
    free_draws_per_month: int
    start_time: datetime | None
    end_time: datetime | None
    prizes: list[PrizeOut]


def lottery_out(lo: lpb.Lottery) -> LotteryOut:
    return LotteryOut(
        lottery_id=lo.lottery_id, name=lo.name, style=word(lpb.LotteryStyle, lo.style, "LOTTERY_STYLE_"),
        cost_points=lo.cost_points, free_draws_per_month=lo.free_draws_per_month, start_time=when(lo.start_time),
        end_time=when(lo.end_time),
        prizes=[PrizeOut(prize_id=p.prize_id, name=p.name, kind=word(lpb.PrizeKind, p.kind, "PRIZE_KIND_"),
                         points=p.points, probability_bp=p.probability_bp) for p in lo.prizes])


class LotteriesOut(BaseModel):
    lotteries: list[LotteryOut]


class DrawIn(BaseModel):
    request_id: str | None = Field(None, pattern=KEY_PATTERN, description="Or the Idempotency-Key header.")


class DrawOut(BaseModel):
    draw_id: str
    lottery_id: str
    state: str = Field(description="pending, completed, failed")
    free: bool
    cost_points: int
    prize_id: str | None
    prize_name: str | None
    prize_kind: str | None
    points: int
    coupon_ids: list[str]
    failure_reason: str | None
    draw_time: datetime | None


def draw_out(d: lpb.LotteryDraw) -> DrawOut:
    return DrawOut(
        draw_id=d.draw_id, lottery_id=d.lottery_id, state=word(lpb.DrawState, d.state, "DRAW_STATE_"), free=d.free,
        cost_points=d.cost_points, prize_id=d.prize_id or None, prize_name=d.prize_name or None,
        prize_kind=word(lpb.PrizeKind, d.prize_kind, "PRIZE_KIND_") if d.prize_kind else None, points=d.points,
        coupon_ids=list(d.coupon_ids), failure_reason=d.failure_reason or None, draw_time=when(d.draw_time))
