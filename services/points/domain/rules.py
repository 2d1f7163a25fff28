"""A shop's points program, earn rules and multipliers: their defaults, their limits, and how
multipliers apply (会员日/生日/活动). Pure Python."""

from __future__ import annotations

import calendar
import dataclasses
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from services.kit.errors import Violations
from services.points.domain.dates import local_date
from services.points.domain.enums import Action, BirthdayWindow, ExpiryPolicy, LeavePolicy, MultiplierKind

MILLI = 1000
MAX_POINTS = 10**12
MAX_HOLD_SECONDS = 7 * 24 * 3600
MAX_RULE_POINTS = 1_000_000
DEFAULT_TIME_ZONE = "Asia/Shanghai"

# What an update mask may name (AIP-134), relative to the resource.
PROGRAM_PATHS = ("expiry_policy", "expiry_months", "points_per_yuan", "leave_policy", "daily_pool_points",
                 "default_hold_ttl_seconds")
CAPS_PATHS = ("caps.per_day", "caps.per_month", "caps.lifetime")
RULE_PATHS = ("enabled", "points", "caps", *CAPS_PATHS, "streak_days", "streak_bonus", "min_order_fen",
              "multipliers_apply")


@dataclass(frozen=True)
class Program:
    shop_id: str
    time_zone: str
    expiry_policy: ExpiryPolicy
    expiry_months: int
    points_per_yuan: int
    leave_policy: LeavePolicy
    daily_pool_points: int
    default_hold_ttl_seconds: int

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def updated(self, changes: dict[str, object]) -> Program:
        """This program with `changes` (settings by name), refused unless within the limits."""
        program = dataclasses.replace(self, **changes)
        v = Violations()
        v.check(program.expiry_policy is not ExpiryPolicy.ROLLING_MONTHS or 1 <= program.expiry_months <= 120,
                "program.expiry_months", "must be 1..120 for rolling expiry")
        v.check(1 <= program.points_per_yuan <= 1_000_000, "program.points_per_yuan", "must be 1..1000000")
        v.check(0 <= program.daily_pool_points <= MAX_POINTS, "program.daily_pool_points", "must not be negative")
        v.check(0 < program.default_hold_ttl_seconds <= MAX_HOLD_SECONDS, "program.default_hold_ttl_seconds",
                f"must be 1..{MAX_HOLD_SECONDS}")
        v.raise_if_any()
        return program


def default_program(shop_id: str, time_zone: str = "") -> Program:
    """The program a shop starts with: points valid twelve months, 100 points to the yuan."""
    return Program(shop_id, time_zone or DEFAULT_TIME_ZONE, ExpiryPolicy.ROLLING_MONTHS, 12, 100,
                   LeavePolicy.FORFEIT, 0, 900)


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

    def updated(self, changes: dict[str, object]) -> EarnRule:
        """This rule with `changes` (settings by name; caps.per_day and its siblings too), refused
        unless within the limits."""
        caps = {path.removeprefix("caps."): value for path, value in changes.items() if path.startswith("caps.")}
        plain = {path: value for path, value in changes.items() if not path.startswith("caps.")}
        rule = dataclasses.replace(self, **plain)
        if caps:
            rule = dataclasses.replace(rule, caps=dataclasses.replace(rule.caps, **caps))
        rule.check()
        return rule

    def check(self) -> None:
        v = Violations()
        v.check(self.action is not Action.DAILY_POOL, "rule.action", "the daily pool is set on the program")
        v.check(0 <= self.points <= MAX_RULE_POINTS, "rule.points", f"must be 0..{MAX_RULE_POINTS}")
        for name in ("per_day", "per_month", "lifetime"):
            v.check(getattr(self.caps, name) >= 0, f"rule.caps.{name}", "must not be negative")
        v.check(self.streak_days >= 0, "rule.streak_days", "must not be negative")
        v.check(0 <= self.streak_bonus <= MAX_RULE_POINTS, "rule.streak_bonus", f"must be 0..{MAX_RULE_POINTS}")
        v.check(self.min_order_fen >= 0, "rule.min_order_fen", "must not be negative")
        v.raise_if_any()


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


def starting_rule(action: Action) -> EarnRule:
    """What an update of a rule the shop does not have yet starts from."""
    return next((r for r in default_rules() if r.action is action), EarnRule(action, 0))


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

    def check(self) -> None:
        v = Violations()
        v.check(0 < len(self.name) <= 100, "multiplier.name", "required, at most 100 characters")
        v.check(1000 < self.multiplier_milli <= 10_000, "multiplier.multiplier_milli",
                "must be 1001..10000 (×1..×10)")
        if self.kind is MultiplierKind.MEMBER_DAY:
            v.check((1 <= self.day_of_month <= 31) != (1 <= self.weekday <= 7), "multiplier.day_of_month",
                    "a member day is either a day of the month (1-31) or a weekday (1-7)")
        elif self.kind is MultiplierKind.CAMPAIGN:
            v.check(self.start_at is not None and self.end_at is not None and self.start_at < self.end_at,
                    "multiplier.end_time", "a campaign needs start_time before end_time")
        v.raise_if_any()

    def applies(self, action: Action, at_utc: datetime, local_day: date, birthday: tuple[int, int] | None) -> bool:
        if self.actions and action not in self.actions:
            return False
        if self.kind is MultiplierKind.MEMBER_DAY:
            return bool((self.day_of_month and local_day.day == self.day_of_month) or (
                self.weekday and local_day.isoweekday() == self.weekday))
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
