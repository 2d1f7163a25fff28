"""What callers ask of the points service, as plain data the servicer builds from requests (and
the event consumer from membership's events). Constructing one checks its ids and fields, so
every handler receives a well-formed request: this is the one layer that validates input."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from services.kit.errors import Violations
from services.kit.timeutil import utcnow
from services.kit.validation import check_ids
from services.points.domain import MAX_HOLD_SECONDS, MAX_POINTS, RECORDABLE, SUBJECT_ACTIONS, Action, Multiplier, Source

MAX_RULE_ID = 32
MAX_SOURCE_ID = 64
MAX_OPERATOR = 100
MAX_REASON = 500
MAX_SUBJECT = 64
LATE_ACTIONS = timedelta(days=31)  # late reports are accepted for a while; older ones would re-earn caps
EARLY_ACTIONS = timedelta(minutes=5)  # clocks differ a little
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _is_day(text: str) -> bool:
    if not _DAY.fullmatch(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _check_points(v: Violations, points: int) -> None:
    v.check(0 < points <= MAX_POINTS, "points", f"must be 1..{MAX_POINTS}")


def _check_source(v: Violations, s: Source) -> None:
    for name in ("order_id", "redemption_id", "reference"):
        v.check(len(getattr(s, name)) <= MAX_SOURCE_ID, f"source.{name}", f"at most {MAX_SOURCE_ID} characters")
    v.check(len(s.operator) <= MAX_OPERATOR, "source.operator", f"at most {MAX_OPERATOR} characters")
    v.check(len(s.reason) <= MAX_REASON, "source.reason", f"at most {MAX_REASON} characters")
    v.check(len(s.rule_id) <= MAX_RULE_ID, "source.rule_id", f"at most {MAX_RULE_ID} characters")
    v.check(len(s.multiplier_id) <= MAX_SOURCE_ID, "source.multiplier_id", f"at most {MAX_SOURCE_ID} characters")


# ----- the program --------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdateProgram:
    """Changes the named settings (domain.PROGRAM_PATHS) of the shop's points program."""

    shop_id: str
    changes: dict[str, object]

    def __post_init__(self) -> None:
        check_ids(self.shop_id).raise_if_any()


@dataclass(frozen=True)
class UpsertRule:
    """Changes the named settings (domain.RULE_PATHS) of the shop's rule for one action."""

    shop_id: str
    action: Action
    changes: dict[str, object]

    def __post_init__(self) -> None:
        check_ids(self.shop_id).raise_if_any()


@dataclass(frozen=True)
class CreateMultiplier:
    shop_id: str
    multiplier: Multiplier

    def __post_init__(self) -> None:
        check_ids(self.shop_id).raise_if_any()


@dataclass(frozen=True)
class DeleteMultiplier:
    shop_id: str
    multiplier_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id, multiplier_id=self.multiplier_id).raise_if_any()


# ----- earning and the ledger -----------------------------------------------------------------------


@dataclass(frozen=True)
class Earn:
    """A grant from another system (a lottery win, a campaign's gift)."""

    shop_id: str
    member_id: str
    points: int
    source: Source

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, member_id=self.member_id)
        _check_points(v, self.points)
        _check_source(v, self.source)
        v.raise_if_any()


@dataclass(frozen=True)
class Adjust:
    """An operator's correction, signed, with who and why."""

    shop_id: str
    member_id: str
    points: int
    operator: str
    reason: str

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, member_id=self.member_id)
        v.check(self.points != 0 and abs(self.points) <= MAX_POINTS, "points",
                f"must be non-zero, at most {MAX_POINTS}")
        v.check(0 < len(self.operator.strip()) <= MAX_OPERATOR, "operator",
                f"required, at most {MAX_OPERATOR} characters")
        v.check(0 < len(self.reason.strip()) <= MAX_REASON, "reason", f"required, at most {MAX_REASON} characters")
        v.raise_if_any()


@dataclass(frozen=True)
class RecordAction:
    """An action the shop rewards (sign-in, review, share…), at `at` (naive UTC)."""

    shop_id: str
    member_id: str
    action: Action
    subject: str
    at: datetime

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, member_id=self.member_id)
        v.check(self.action in RECORDABLE, "action", "not an action to record (purchases come from orders)")
        v.check(self.action not in SUBJECT_ACTIONS or bool(self.subject), "subject",
                "required for this action (the reviewed order, the invited friend, the survey)")
        v.check(len(self.subject) <= MAX_SUBJECT, "subject", f"at most {MAX_SUBJECT} characters")
        now = utcnow()
        v.check(now - LATE_ACTIONS <= self.at <= now + EARLY_ACTIONS, "occur_time",
                "must be within the last 31 days, not in the future")
        v.raise_if_any()


# ----- spending ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spend:
    shop_id: str
    member_id: str
    points: int
    source: Source

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, member_id=self.member_id)
        _check_points(v, self.points)
        _check_source(v, self.source)
        v.raise_if_any()


@dataclass(frozen=True)
class Hold:
    """Two-phase spend, phase one; `ttl_seconds` 0 takes the program's default."""

    shop_id: str
    member_id: str
    points: int
    ttl_seconds: int
    source: Source

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, member_id=self.member_id)
        _check_points(v, self.points)
        v.check(0 <= self.ttl_seconds <= MAX_HOLD_SECONDS, "ttl_seconds",
                f"must be 0..{MAX_HOLD_SECONDS} (0: default)")
        _check_source(v, self.source)
        v.raise_if_any()


@dataclass(frozen=True)
class CaptureHold:
    shop_id: str
    hold_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id, hold_id=self.hold_id).raise_if_any()


@dataclass(frozen=True)
class ReleaseHold:
    shop_id: str
    hold_id: str
    reason: str = "released"

    def __post_init__(self) -> None:
        check_ids(self.shop_id, hold_id=self.hold_id).raise_if_any()


# ----- expiry and the daily pool --------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpireShop:
    """积分过期: expires the shop's lots due at `as_of` (naive UTC)."""

    shop_id: str
    as_of: datetime

    def __post_init__(self) -> None:
        check_ids(self.shop_id).raise_if_any()


@dataclass(frozen=True)
class JoinPool:
    shop_id: str
    member_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id, member_id=self.member_id).raise_if_any()


@dataclass(frozen=True)
class SettlePool:
    """Settles a shop-local day's pool ("2026-11-23"); "" is yesterday."""

    shop_id: str
    day: str = ""

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        if self.day:
            v.check(_is_day(self.day), "day", "a date such as 2026-11-23")
        v.raise_if_any()


# ----- what membership's events ask (trusted: they come from the suite's own producer) -----------------


@dataclass(frozen=True)
class OpenProgram:
    shop_id: str
    time_zone: str


@dataclass(frozen=True)
class OpenAccount:
    shop_id: str
    member_id: str
    referrer_member_id: str
    birth_month: int
    birth_day: int
    imported: bool
    at: datetime


@dataclass(frozen=True)
class SetBirthday:
    shop_id: str
    member_id: str
    birth_month: int
    birth_day: int


@dataclass(frozen=True)
class CreditPurchase:
    """A completed order: purchase points, and on a first purchase the referral reward."""

    shop_id: str
    order_id: str
    member_id: str
    amount_fen: int
    rate_milli: int
    completed_at: datetime
    first_order: bool
    referrer_member_id: str
    birth_month: int
    birth_day: int


@dataclass(frozen=True)
class ClawBack:
    """A refund after completion (退换货扣除)."""

    shop_id: str
    order_id: str
    order_amount_fen: int
    total_refunded_fen: int
    at: datetime


@dataclass(frozen=True)
class CloseAccount:
    shop_id: str
    member_id: str
    at: datetime


# ----- reads ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerQuery:
    """One page of a member's ledger, newest first: `limit` entries before `before_id`."""

    shop_id: str
    member_id: str
    limit: int
    before_id: int | None = None
    kinds: tuple[int, ...] = ()
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        check_ids(self.shop_id, member_id=self.member_id).raise_if_any()


@dataclass(frozen=True)
class ExpiringQuery:
    """积分到期提醒: members whose points expire within `within_days`, by member id after `after`."""

    shop_id: str
    within_days: int
    limit: int
    after: str | None = None

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        v.check(0 < self.within_days <= 366, "within_days", "must be 1..366")
        v.raise_if_any()


@dataclass(frozen=True)
class LiabilityQuery:
    """积分负债 over [start, end) by shop-local day or month; None takes the default period."""

    shop_id: str
    monthly: bool
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        check_ids(self.shop_id).raise_if_any()


@dataclass(frozen=True)
class MemberQuery:
    shop_id: str
    member_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id, member_id=self.member_id).raise_if_any()


@dataclass(frozen=True)
class ShopQuery:
    shop_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id).raise_if_any()
