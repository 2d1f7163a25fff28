"""The rewards vocabulary and rules, testable without a database: what a reward is, who may
redeem it now and why not, what a redemption costs, and when an issued coupon is valid.
The IntEnums mirror the proto enums of loyalty.rewards.v1 (a unit test holds them to it)."""

from __future__ import annotations

import calendar
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import IntEnum
from typing import Any
from zoneinfo import ZoneInfo

from services.rewards import reasons

DEFAULT_ZONE = "Asia/Shanghai"
MAX_QUANTITY = 99
MAX_POINTS_PRICE = 100_000_000
MAX_FEN = 10_000_000_000  # 一亿元
MAX_STOCK = 1_000_000_000
MAX_LIMIT = 10_000
MAX_TIER_LEVEL = 100
MAX_VALID_DAYS = 3_660
PAYMENT_WINDOW = timedelta(minutes=15)  # a points + cash redemption waits this long for its payment


class RewardKind(IntEnum):
    COUPON = 1
    GIFT = 2
    VIRTUAL = 3


class RewardStatus(IntEnum):
    ACTIVE = 1
    PAUSED = 2
    ARCHIVED = 3


class GiftClass(IntEnum):
    HIGH_VALUE = 1
    MID_VALUE = 2
    PARTICIPATION = 3


class VirtualKind(IntEnum):
    STORED_VALUE = 1
    DISCOUNT_CARD = 2
    MEMBERSHIP_CARD = 3
    FREE_TRIAL = 4


class RedemptionState(IntEnum):
    PENDING = 1
    AWAITING_PAYMENT = 2
    COMPLETED = 3
    FAILED = 4
    CANCELLED = 5


class CouponState(IntEnum):
    UNUSED = 1
    USED = 2
    EXPIRED = 3
    REVOKED = 4


class IssuanceJobState(IntEnum):
    """A job issuing coupons to a segment (IssueCouponsToSegment)."""

    RUNNING = 1
    DONE = 2
    FAILED = 3


class CouponSource(IntEnum):
    REDEMPTION = 1
    OPERATOR = 2
    BENEFIT_PACK = 3
    CAMPAIGN = 4
    LOTTERY = 5


@dataclass(frozen=True)
class CouponSpec:
    face_value_fen: int
    threshold_fen: int = 0
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    valid_days: int = 0


@dataclass(frozen=True)
class GiftSpec:
    gift_class: GiftClass = GiftClass.PARTICIPATION
    ship_with_next_order: bool = False


@dataclass(frozen=True)
class VirtualSpec:
    virtual_kind: VirtualKind
    top_up_fen: int = 0
    bonus_fen: int = 0
    discount_permille: int = 0
    valid_days: int = 0


Spec = CouponSpec | GiftSpec | VirtualSpec
SPEC_OF_KIND: dict[RewardKind, type] = {RewardKind.COUPON: CouponSpec, RewardKind.GIFT: GiftSpec,
                                        RewardKind.VIRTUAL: VirtualSpec}


def spec_to_json(spec: Spec) -> str:
    def plain(value: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime) else int(value) if isinstance(value, IntEnum) else value

    return json.dumps({k: plain(v) for k, v in asdict(spec).items()}, sort_keys=True)


def spec_from_json(kind: RewardKind, text: str) -> Spec:
    data = json.loads(text)
    if kind is RewardKind.COUPON:
        for key in ("valid_from", "valid_until"):
            data[key] = datetime.fromisoformat(data[key]) if data.get(key) else None
        return CouponSpec(**data)
    if kind is RewardKind.GIFT:
        return GiftSpec(GiftClass(data["gift_class"]), data["ship_with_next_order"])
    return VirtualSpec(**{**data, "virtual_kind": VirtualKind(data["virtual_kind"])})


@dataclass(frozen=True)
class Reward:
    shop_id: str
    reward_id: str
    name: str
    kind: RewardKind
    status: RewardStatus
    points_price: int
    spec: Spec
    description: str = ""
    cash_price_fen: int = 0
    min_tier_level: int = 0
    unlimited_stock: bool = False
    stock: int = 0
    redeemed: int = 0
    limit_per_member: int = 0
    monthly_limit_per_member: int = 0
    start_at: datetime | None = None
    end_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class MemberStanding:
    """What rewards knows of a member (from membership's events): None fields when unknown."""

    member_id: str
    tier_level: int = 0
    birth_month: int | None = None
    left: bool = False


@dataclass(frozen=True)
class Usage:
    """How many of one reward a member took: over their lifetime and in the current month."""

    lifetime: int = 0
    this_month: int = 0


@dataclass(frozen=True)
class Cost:
    points: int
    cash_fen: int


def cost_of(reward: Reward, quantity: int) -> Cost:
    return Cost(reward.points_price * quantity, reward.cash_price_fen * quantity)


@dataclass(frozen=True)
class Verdict:
    """Whether a member can redeem `quantity` of a reward now, and every reason why not."""

    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def redeemable(self) -> bool:
        return not self.reasons


def judge(reward: Reward, member: MemberStanding | None, usage: Usage, now: datetime, quantity: int = 1) -> Verdict:
    """Every reason `member` cannot redeem `quantity` of `reward` at `now` (none: they can).
    Points are not judged here: only points knows the balance (its Hold refuses)."""
    why: list[str] = []
    if reward.status is not RewardStatus.ACTIVE:
        why.append(reasons.NOT_ACTIVE)
    if reward.start_at is not None and now < reward.start_at:
        why.append(reasons.NOT_STARTED)
    if reward.end_at is not None and now >= reward.end_at:
        why.append(reasons.ENDED)
    if member is None or member.left:
        why.append(reasons.NOT_A_MEMBER)
    elif member.tier_level < reward.min_tier_level:
        why.append(reasons.TIER_TOO_LOW)
    if not reward.unlimited_stock and reward.stock < quantity:
        why.append(reasons.OUT_OF_STOCK)
    if reward.limit_per_member and usage.lifetime + quantity > reward.limit_per_member:
        why.append(reasons.LIMIT_REACHED)
    if reward.monthly_limit_per_member and usage.this_month + quantity > reward.monthly_limit_per_member:
        why.append(reasons.MONTHLY_LIMIT_REACHED)
    return Verdict(tuple(why))


def zone_of(name: str | None) -> ZoneInfo:
    return ZoneInfo(name or DEFAULT_ZONE)


def month_of(at_utc: datetime, zone: ZoneInfo) -> str:
    """The shop-local calendar month of an instant, "YYYY-MM" (the period of monthly limits)."""
    local = at_utc.replace(tzinfo=UTC).astimezone(zone)
    return f"{local.year:04d}-{local.month:02d}"


def _local_midnight_utc(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC).replace(tzinfo=None)


def coupon_window(spec: CouponSpec, issued_at: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """When a coupon issued at `issued_at` may be used: the spec's fixed window, or from issue
    through the end of the shop-local day `valid_days - 1` days later (valid_days 1 = today only)."""
    if spec.valid_days:
        issued_day = issued_at.replace(tzinfo=UTC).astimezone(zone).date()
        return issued_at, _local_midnight_utc(issued_day + timedelta(days=spec.valid_days), zone)
    assert spec.valid_until is not None  # a fixed window has an end (commands check it)
    return spec.valid_from or issued_at, spec.valid_until


def coupon_applies(face_value_fen: int, threshold_fen: int, order_amount_fen: int) -> bool:
    """满 threshold 减 face value: the order reaches the threshold and is worth at least the coupon."""
    return order_amount_fen >= max(threshold_fen, 1) and order_amount_fen >= face_value_fen


# ----- benefit packs (权益礼包) -------------------------------------------------------------------

MAX_PACK_ITEMS = 10
MAX_PACK_ITEM_QUANTITY = 10
PACKABLE = (RewardKind.COUPON, RewardKind.VIRTUAL)  # gifts are shipped by redemption, not packed


class PackTrigger(IntEnum):
    JOIN = 1
    MONTH_AFTER_JOIN = 2
    BIRTHDAY = 3
    MONTHLY = 4
    TIER_UPGRADE = 5
    GROWTH_MILESTONE = 6  # 阶段性奖励: membership's GrowthMilestoneReached, once per milestone


SCHEDULED_TRIGGERS = (PackTrigger.MONTH_AFTER_JOIN, PackTrigger.BIRTHDAY, PackTrigger.MONTHLY)


@dataclass(frozen=True)
class BenefitPack:
    shop_id: str
    pack_id: str
    name: str
    trigger: PackTrigger
    enabled: bool = True
    points: int = 0
    items: tuple[tuple[str, int], ...] = ()  # (reward_id, quantity)
    tier_levels: tuple[int, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def for_tier(self, level: int) -> bool:
        return not self.tier_levels or level in self.tier_levels


def pack_period(trigger: PackTrigger, at_utc: datetime, zone: ZoneInfo, *, tier_level: int = 0) -> str:
    """The period a pack is granted once in: once ever for joining, every year for birthdays,
    every shop-local month for monthly packs, once per tier reached."""
    if trigger is PackTrigger.JOIN:
        return "join"
    if trigger is PackTrigger.MONTH_AFTER_JOIN:
        return "month-after-join"
    if trigger is PackTrigger.TIER_UPGRADE:
        return f"tier-{tier_level}"
    month = month_of(at_utc, zone)
    return month[:4] if trigger is PackTrigger.BIRTHDAY else month


def month_after(joined_at_utc: datetime, zone: ZoneInfo) -> datetime:
    """When a member who joined at `joined_at_utc` completes their first month (入会满月): the
    same shop-local day a calendar month later (the month's last day when it is shorter)."""
    day = joined_at_utc.replace(tzinfo=UTC).astimezone(zone).date()
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return _local_midnight_utc(date(year, month, min(day.day, calendar.monthrange(year, month)[1])), zone)


def month_end(at_utc: datetime, zone: ZoneInfo) -> datetime:
    """The instant the shop-local month of `at_utc` ends (the next month's first local midnight)."""
    local = at_utc.replace(tzinfo=UTC).astimezone(zone).date()
    first_of_next = date(local.year + 1, 1, 1) if local.month == 12 else date(local.year, local.month + 1, 1)
    return _local_midnight_utc(first_of_next, zone)
