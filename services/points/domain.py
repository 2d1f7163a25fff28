"""Points rules: default earn rules and multipliers, purchase points, expiry dates, caps and
streaks. Pure Python: no database, no gRPC."""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import IntEnum
from zoneinfo import ZoneInfo

# Values mirror the proto enums of loyalty.points.v1.


class EntryKind(IntEnum):
    EARN = 1
    SPEND = 2
    HOLD = 3
    CAPTURE = 4
    RELEASE = 5
    EXPIRE = 6
    ADJUST = 7
    CLAWBACK = 8  # 退换货扣除
    FORFEIT = 9


class Action(IntEnum):
    PURCHASE = 1
    JOIN = 2
    FOLLOW_SHOP = 3
    COMPLETE_PROFILE = 4
    DAILY_SIGN_IN = 5
    REVIEW = 6
    SHARE = 7
    INVITE_FRIEND = 8
    REFERRAL = 9
    BROWSE = 10
    SURVEY = 11
    DAILY_POOL = 12


class ExpiryPolicy(IntEnum):
    ROLLING_MONTHS = 1
    END_OF_NEXT_YEAR = 2
    NEVER = 3


class LeavePolicy(IntEnum):
    FORFEIT = 1
    KEEP = 2


class MultiplierKind(IntEnum):
    MEMBER_DAY = 1
    BIRTHDAY = 2
    CAMPAIGN = 3


class BirthdayWindow(IntEnum):
    DAY = 1
    WEEK = 2
    MONTH = 3


class HoldStatus(IntEnum):
    HELD = 1
    CAPTURED = 2
    RELEASED = 3


# Actions that earn once per member, whatever the caps say (固定获赠).
ONCE_ACTIONS = frozenset({Action.JOIN, Action.FOLLOW_SHOP, Action.COMPLETE_PROFILE})
# Actions that earn once per subject (the reviewed order, the invited friend, the survey).
SUBJECT_ACTIONS = frozenset({Action.REVIEW, Action.INVITE_FRIEND, Action.SURVEY})
# Actions a caller may report through RecordAction (the others come from events or settlement).
RECORDABLE = frozenset(Action) - {Action.PURCHASE, Action.REFERRAL, Action.DAILY_POOL}
MILLI = 1000


@dataclass(frozen=True)
class Caps:
    per_day: int = 0
    per_month: int = 0
    lifetime: int = 0


@dataclass(frozen=True)
class EarnRule:
    action: Action
    points: int
    enabled: bool = True
    caps: Caps = Caps()
    streak_days: int = 0
    streak_bonus: int = 0
    min_order_fen: int = 0
    multipliers_apply: bool = False

    @property
    def rule_id(self) -> str:
        return self.action.name.lower()


def default_rules() -> list[EarnRule]:
    """The rules a shop starts with (DOMAIN.md: 赚积分), all configurable."""
    return [
        EarnRule(Action.PURCHASE, 1, multipliers_apply=True),
        EarnRule(Action.JOIN, 100),
        EarnRule(Action.FOLLOW_SHOP, 20),
        EarnRule(Action.COMPLETE_PROFILE, 50),
        EarnRule(Action.DAILY_SIGN_IN, 5, streak_days=7, streak_bonus=20, multipliers_apply=True),
        EarnRule(Action.REVIEW, 10, caps=Caps(per_day=3)),
        EarnRule(Action.SHARE, 5, caps=Caps(per_day=3)),
        EarnRule(Action.INVITE_FRIEND, 20, caps=Caps(per_month=10)),
        EarnRule(Action.REFERRAL, 0),
        EarnRule(Action.BROWSE, 1, caps=Caps(per_day=5)),
        EarnRule(Action.SURVEY, 20),
    ]


@dataclass(frozen=True)
class Multiplier:
    multiplier_id: str
    name: str
    kind: MultiplierKind
    multiplier_milli: int
    day_of_month: int = 0
    weekday: int = 0  # 1 = Monday .. 7 = Sunday
    birthday_window: BirthdayWindow = BirthdayWindow.MONTH
    start_at: datetime | None = None  # naive UTC
    end_at: datetime | None = None
    actions: frozenset[Action] = field(default_factory=frozenset)

    def applies(self, action: Action, at_utc: datetime, local_day: date, birthday: tuple[int, int] | None) -> bool:
        if self.actions and action not in self.actions:
            return False
        if self.kind is MultiplierKind.MEMBER_DAY:
            return (self.day_of_month and local_day.day == self.day_of_month) or (
                self.weekday and local_day.isoweekday() == self.weekday)
        if self.kind is MultiplierKind.BIRTHDAY:
            return birthday is not None and in_birthday_window(local_day, birthday, self.birthday_window)
        return self.start_at is not None and self.end_at is not None and self.start_at <= at_utc < self.end_at


def default_multipliers() -> list[Multiplier]:
    """会员日/生日双倍积分: the 1st of each month, and the birthday month, double points."""
    return [
        Multiplier("member-day", "会员日双倍积分", MultiplierKind.MEMBER_DAY, 2000, day_of_month=1),
        Multiplier("birthday", "生日月双倍积分", MultiplierKind.BIRTHDAY, 2000, birthday_window=BirthdayWindow.MONTH),
    ]


def in_birthday_window(day: date, birthday: tuple[int, int], window: BirthdayWindow) -> bool:
    month, dom = birthday
    if window is BirthdayWindow.MONTH:
        return day.month == month
    # 29 February falls on 28 February in common years.
    this_year = date(day.year, month, min(dom, calendar.monthrange(day.year, month)[1]))
    if window is BirthdayWindow.DAY:
        return day == this_year
    return any(this_year + timedelta(days=k) == day for k in range(7)) or any(
        date(day.year - 1, month, min(dom, calendar.monthrange(day.year - 1, month)[1])) + timedelta(days=k) == day
        for k in range(7))


def best_multiplier(multipliers: list[Multiplier], action: Action, at_utc: datetime, zone: ZoneInfo,
                    birthday: tuple[int, int] | None) -> tuple[int, str]:
    """Stacking rule: the largest applicable multiplier applies; they never compound.
    Returns (multiplier_milli, multiplier_id), (1000, "") when none applies."""
    day = local_date(at_utc, zone)
    best, best_id = MILLI, ""
    for m in multipliers:
        if m.multiplier_milli > best and m.applies(action, at_utc, day, birthday):
            best, best_id = m.multiplier_milli, m.multiplier_id
    return best, best_id


def purchase_points(amount_fen: int, points_per_yuan: int, rate_milli: int, multiplier_milli: int) -> int:
    """Points per whole yuan (不满1元部分不累计) × tier rate × multiplier, floored once, in integers."""
    whole_yuan = max(0, amount_fen) // 100
    return whole_yuan * points_per_yuan * rate_milli * multiplier_milli // (MILLI * MILLI)


def local_date(at_utc: datetime, zone: ZoneInfo) -> date:
    return at_utc.replace(tzinfo=UTC).astimezone(zone).date()


def local_midnight_utc(day: date, zone: ZoneInfo) -> datetime:
    """The instant the shop-local `day` begins, as naive UTC."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC).replace(tzinfo=None)


def add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def expiry_for(earned_at_utc: datetime, zone: ZoneInfo, policy: ExpiryPolicy, months: int) -> datetime | None:
    """When a lot earned at `earned_at_utc` expires (naive UTC), or None for never.
    ROLLING_MONTHS: valid through the same day `months` later, so it expires at the local
    midnight that ends that day. END_OF_NEXT_YEAR: at the local midnight that begins the year
    after next."""
    earned_day = local_date(earned_at_utc, zone)
    if policy is ExpiryPolicy.NEVER:
        return None
    if policy is ExpiryPolicy.END_OF_NEXT_YEAR:
        return local_midnight_utc(date(earned_day.year + 2, 1, 1), zone)
    return local_midnight_utc(add_months(earned_day, months) + timedelta(days=1), zone)


def cap_periods(day: date) -> tuple[str, str, str]:
    """The counter keys of one occurrence: its day, its month, lifetime."""
    return f"d:{day.isoformat()}", f"m:{day.year:04d}-{day.month:02d}", "life"


def next_streak(last_day: date | None, streak: int, today: date) -> int:
    return streak + 1 if last_day is not None and today - last_day == timedelta(days=1) else 1


def clawback_points(earned: int, amount_fen: int, refunded_fen: int, points_per_yuan: int, rate_milli: int,
                    multiplier_milli: int, already_clawed: int) -> int:
    """What a refund takes back: what the order earned less what its remaining amount would have
    earned, less what earlier refunds took back."""
    keeps = purchase_points(amount_fen - refunded_fen, points_per_yuan, rate_milli, multiplier_milli)
    return max(0, earned - keeps - already_clawed)
