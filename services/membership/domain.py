"""Membership rules: tier ladders, qualification, progress, profile and consent checks.
Pure Python: no database, no gRPC."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date
from enum import IntEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.kit.errors import Violations

# Values mirror the proto enums of loyalty.membership.v1.


class QualificationMode(IntEnum):
    CUMULATIVE_SPEND = 1
    TRADE_COUNT = 2
    SPEND_OR_COUNT = 3  # Taobao: amount OR count
    GROWTH = 4  # by growth value (成长值) thresholds


class DowngradePolicy(IntEnum):
    NEVER = 1
    RECOMPUTE = 2
    DOWN_ONE_LEVEL = 3  # qualification only raises; an expired tier goes down one level (lifecycle.py)


class MemberStatus(IntEnum):
    ACTIVE = 1
    LEFT = 2


class OrderStatus(IntEnum):
    PAID = 1
    COMPLETED = 2  # 交易成功
    REFUNDED = 3


class TierChangeReason(IntEnum):
    JOINED = 1
    QUALIFIED = 2
    REFUNDED = 3
    MANUAL = 4
    REEVALUATED = 5
    LADDER_CHANGED = 6
    IMPORTED = 7
    EXPIRED = 8


class ProfileField(IntEnum):
    NAME = 1
    GENDER = 2
    PHONE = 3
    BIRTHDAY = 4
    REGION = 5


PROFILE_PATHS = {"name": ProfileField.NAME, "gender": ProfileField.GENDER, "phone": ProfileField.PHONE,
                 "birthday": ProfileField.BIRTHDAY, "region": ProfileField.REGION}

JOIN_CHANNEL_CRM_IMPORT = 9  # JoinChannel.JOIN_CHANNEL_CRM_IMPORT: members brought in by ImportMembers
MAX_TIERS = 20
MAX_NAME = 100
MAX_ID = 64
MAX_NOTE = 500
DEFAULT_TIME_ZONE = "Asia/Shanghai"
_PHONE = re.compile(r"^1[3-9][0-9]{9}$")  # ASCII digits only: \d would take any script's


@dataclass(frozen=True)
class Tier:
    level: int
    code: str
    name: str
    min_spend_fen: int
    min_trades: int
    discount_bp: int  # 10000 = full price
    points_rate_milli: int  # 1000 = 1 point per whole yuan
    benefits: tuple[str, ...] = ()
    min_growth: int = 0  # growth value, in QualificationMode.GROWTH


def uses(mode: QualificationMode) -> tuple[bool, bool, bool]:
    """Which measures the mode qualifies by: (spend, trades, growth)."""
    return (mode in (QualificationMode.CUMULATIVE_SPEND, QualificationMode.SPEND_OR_COUNT),
            mode in (QualificationMode.TRADE_COUNT, QualificationMode.SPEND_OR_COUNT),
            mode is QualificationMode.GROWTH)


def shown(tier: Tier, mode: QualificationMode) -> Tier:
    """The tier with only the thresholds the mode uses (the others play no part, so they read 0)."""
    spend, trades, growth = uses(mode)
    return replace(tier, min_spend_fen=tier.min_spend_fen if spend else 0, min_trades=tier.min_trades if trades else 0,
                   min_growth=tier.min_growth if growth else 0)


DEFAULT_MIN_GROWTH = (0, 1_000, 3_000, 10_000, 30_000)  # 1 growth per yuan: the spend ladder's steps


def default_tiers(mode: QualificationMode | None = None) -> tuple[Tier, ...]:
    """The 5-tier ladder a new program starts with (DOMAIN.md), with the thresholds of the
    program's mode only: cumulative spend of 0 / 1,000 / 3,000 / 10,000 / 30,000 yuan, 0 / 5 /
    10 / 20 / 50 trades, or growth value 0 / 1,000 / 3,000 / 10,000 / 30,000; rates 1 to 3 points
    per yuan. Without a mode, every threshold."""
    tiers = tuple(replace(t, min_growth=DEFAULT_MIN_GROWTH[t.level]) for t in _default_tiers())
    return tiers if mode is None else tuple(shown(t, mode) for t in tiers)


def _default_tiers() -> tuple[Tier, ...]:
    return (
        Tier(0, "regular", "普通会员", 0, 0, 10000, 1000, ("birthday gift",)),
        Tier(1, "silver", "银卡会员", 100_000, 5, 9500, 1500, ("birthday gift", "free shipping")),
        Tier(2, "gold", "金卡会员", 300_000, 10, 9000, 2000,
             ("birthday gift", "free shipping", "priority purchase")),
        Tier(3, "platinum", "白金会员", 1_000_000, 20, 8500, 2500,
             ("birthday gift", "free shipping", "priority purchase", "dedicated customer service")),
        Tier(4, "diamond", "钻石会员", 3_000_000, 50, 8000, 3000,
             ("birthday gift", "free shipping", "priority purchase", "dedicated customer service",
              "monthly lottery chance")),
    )


@dataclass(frozen=True)
class Progress:
    current: Tier
    next: Tier | None
    spend_missing_fen: int
    trades_missing: int
    progress_permille: int
    growth_missing: int = 0


@dataclass(frozen=True)
class Ladder:
    tiers: tuple[Tier, ...]
    mode: QualificationMode = QualificationMode.CUMULATIVE_SPEND
    policy: DowngradePolicy = DowngradePolicy.NEVER

    @property
    def top(self) -> int:
        return len(self.tiers) - 1

    def tier(self, level: int) -> Tier:
        return self.tiers[max(0, min(level, self.top))]

    def meets(self, tier: Tier, spend_fen: int, trades: int, growth: int = 0) -> bool:
        by_spend = spend_fen >= tier.min_spend_fen
        by_count = trades >= tier.min_trades
        if self.mode is QualificationMode.GROWTH:
            return growth >= tier.min_growth
        if self.mode is QualificationMode.CUMULATIVE_SPEND:
            return by_spend
        if self.mode is QualificationMode.TRADE_COUNT:
            return by_count
        return by_spend or by_count

    def qualified_level(self, spend_fen: int, trades: int, growth: int = 0) -> int:
        """The highest tier the figures qualify for."""
        level = 0
        for tier in self.tiers:
            if self.meets(tier, spend_fen, trades, growth):
                level = tier.level
        return level

    def evaluate(self, current: int, spend_fen: int, trades: int, growth: int = 0) -> int:
        """The tier after a qualification event: up when qualified; down only under RECOMPUTE
        (DOWN_ONE_LEVEL moves members down at tier expiry only, see rules.expiry_level)."""
        qualified = self.qualified_level(spend_fen, trades, growth)
        if self.policy is not DowngradePolicy.RECOMPUTE:
            return max(min(current, self.top), qualified)
        return qualified

    def progress(self, level: int, spend_fen: int, trades: int, growth: int = 0) -> Progress:
        current = self.tier(level)
        if current.level >= self.top:
            return Progress(current, None, 0, 0, 1000)
        nxt = self.tiers[current.level + 1]
        if self.mode is QualificationMode.GROWTH:
            return Progress(current, nxt, 0, 0, _ratio(growth, current.min_growth, nxt.min_growth),
                            max(0, nxt.min_growth - growth))
        uses_spend = self.mode is not QualificationMode.TRADE_COUNT
        uses_count = self.mode is not QualificationMode.CUMULATIVE_SPEND
        spend_missing = max(0, nxt.min_spend_fen - spend_fen) if uses_spend else 0
        trades_missing = max(0, nxt.min_trades - trades) if uses_count else 0
        ratios = []
        if uses_spend:
            ratios.append(_ratio(spend_fen, current.min_spend_fen, nxt.min_spend_fen))
        if uses_count:
            ratios.append(_ratio(trades, current.min_trades, nxt.min_trades))
        # Either measure suffices in SPEND_OR_COUNT, so the nearer one shows the progress.
        return Progress(current, nxt, spend_missing, trades_missing, max(ratios))


def _ratio(value: int, low: int, high: int) -> int:
    if high <= low:
        return 1000
    return max(0, min(1000, (value - low) * 1000 // (high - low)))


def validate_tiers(tiers: list[Tier], v: Violations, mode: QualificationMode, field_name: str = "tiers") -> None:
    """A ladder starts at 0 with no threshold and rises strictly by the measures the mode uses."""
    if not tiers:
        v.add(field_name, "at least one tier is required")
        return
    if len(tiers) > MAX_TIERS:
        v.add(field_name, f"at most {MAX_TIERS} tiers")
        return
    codes: set[str] = set()
    for i, tier in enumerate(tiers):
        at = f"{field_name}[{i}]"
        v.check(tier.level == i, f"{at}.level", f"must be {i}: levels are 0-based and in order")
        v.check(bool(re.fullmatch(r"[a-z0-9_-]{1,32}", tier.code)), f"{at}.code",
                "1-32 characters of a-z, 0-9, _ or -")
        v.check(tier.code not in codes, f"{at}.code", f"duplicate code {tier.code!r}")
        codes.add(tier.code)
        v.check(0 < len(tier.name) <= MAX_NAME, f"{at}.name", f"required, at most {MAX_NAME} characters")
        v.check(tier.min_spend_fen >= 0, f"{at}.min_spend_fen", "must not be negative")
        v.check(tier.min_trades >= 0, f"{at}.min_trades", "must not be negative")
        v.check(tier.min_growth >= 0, f"{at}.min_growth", "must not be negative")
        v.check(0 < tier.discount_bp <= 10000, f"{at}.discount_bp", "must be 1..10000 (10000 = full price)")
        v.check(0 <= tier.points_rate_milli <= 100_000, f"{at}.points_rate_milli", "must be 0..100000")
        v.check(len(tier.benefits) <= 50 and all(0 < len(b) <= MAX_NAME for b in tier.benefits),
                f"{at}.benefits", f"at most 50, each 1..{MAX_NAME} characters")
        if i == 0:
            v.check(tier.min_spend_fen == 0 and tier.min_trades == 0 and tier.min_growth == 0, f"{at}",
                    "the first tier has no threshold (min_spend_fen, min_trades and min_growth 0)")
            continue
        prev = tiers[i - 1]
        if mode is QualificationMode.GROWTH:
            v.check(tier.min_growth > prev.min_growth, f"{at}.min_growth", "must rise above the tier below")
            continue
        if mode is not QualificationMode.TRADE_COUNT:
            v.check(tier.min_spend_fen > prev.min_spend_fen, f"{at}.min_spend_fen", "must rise above the tier below")
        if mode is not QualificationMode.CUMULATIVE_SPEND:
            v.check(tier.min_trades > prev.min_trades, f"{at}.min_trades", "must rise above the tier below")


def validate_time_zone(name: str, v: Violations, field_name: str = "time_zone") -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        v.add(field_name, f"unknown time zone {name!r} (use an IANA name such as Asia/Shanghai)")


def normalize_phone(raw: str) -> str | None:
    """An 11-digit mainland mobile number, or None when malformed. Accepts +86/86 and spaces."""
    digits = re.sub(r"[\s-]", "", raw)
    if digits.startswith("+86"):
        digits = digits[3:]
    elif digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    return digits if _PHONE.match(digits) else None


def mask_phone(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:]


@dataclass
class ProfileInput:
    """Profile fields a request sets; None means "not given"."""

    name: str | None = None
    gender: int | None = None
    phone: str | None = None
    birthday: tuple[int, int, int] | None = None  # (year or 0, month, day)
    region: str | None = None
    given: set[ProfileField] = field(default_factory=set)


def validate_profile(profile: ProfileInput, consent: set[ProfileField], v: Violations, prefix: str = "profile") -> None:
    """Checks each given field's form, and that the buyer consented to it (PIPL)."""
    for f in profile.given:
        v.check(f in consent, f"{prefix}.{f.name.lower()}", "not among the consented fields (consent_fields)")
    if profile.name is not None:
        v.check(len(profile.name) <= MAX_NAME, f"{prefix}.name", f"at most {MAX_NAME} characters")
    if profile.gender is not None:
        v.check(profile.gender in (0, 1, 2), f"{prefix}.gender", "unknown gender")
    if profile.phone and normalize_phone(profile.phone) is None:
        v.add(f"{prefix}.phone", "not a mainland mobile number (11 digits starting with 1)")
    if profile.region is not None:
        v.check(len(profile.region) <= MAX_NAME, f"{prefix}.region", f"at most {MAX_NAME} characters")
    if profile.birthday is not None:
        year, month, day = profile.birthday
        try:
            # Leap year 2000 when the year is not given, so 29 February is a valid birthday.
            born = date(year or 2000, month, day)
            v.check(year == 0 or born <= date.today(), f"{prefix}.birthday", "in the future")
            v.check(year == 0 or year >= 1900, f"{prefix}.birthday", "year before 1900")
        except ValueError:
            v.add(f"{prefix}.birthday", "not a calendar date")
