"""A program's further rules, beside its ladder: the join threshold's parts beyond following the
shop, the join benefit the storefront shows, and tier validity (how long a tier reached holds,
and how many days ahead a coming downgrade is announced). Pure Python: no database, no gRPC.
Stored as one JSON column of the program (NULL: the defaults, which change nothing)."""

from __future__ import annotations

import calendar
import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time
from enum import IntEnum
from zoneinfo import ZoneInfo

from services.kit.errors import Violations
from services.membership.domain import DowngradePolicy

MAX_VALIDITY_MONTHS = 120
MAX_NOTICE_DAYS = 90
MAX_BENEFIT_TEXT = 200
MAX_JOIN_TRADES = 10_000
MAX_JOIN_SPEND_FEN = 10**13
MAX_CALL_TO_ACTION = 13  # characters, as the storefront module allows
CARD_IMAGE_SIZE = (702, 110)  # the module's background, in pixels
MAX_ORIGINS = 20
MAX_URL = 2048
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?")


class Combine(IntEnum):
    """Values of the proto's JoinThresholdCombine."""

    ALL = 1
    ANY = 2


class CardMode(IntEnum):
    """Values of the proto's CardMode (UNSPECIFIED is stored as SMART)."""

    SMART = 1
    CUSTOM = 2


class JoinRequirement(IntEnum):
    """Values of the proto's JoinRequirement."""

    FOLLOW = 1
    COMPLETED_TRADES = 2
    SPEND = 3


@dataclass(frozen=True)
class ProgramRules:
    join_min_trades: int = 0
    join_min_spend_fen: int = 0
    join_combine: Combine = Combine.ALL
    benefit_text: str = ""
    benefit_pack_id: str = ""
    validity_months: int = 0  # 0: a tier holds forever
    notice_days: int = 0  # 0: no TierExpiring notice
    # The storefront member module (店铺首页会员模块) and the origins its pages call from.
    card_mode: CardMode = CardMode.SMART
    card_call_to_action: str = ""
    card_image_url: str = ""
    card_image_size: tuple[int, int] = (0, 0)
    storefront_origins: tuple[str, ...] = ()

    @property
    def has_join_benefit(self) -> bool:
        return bool(self.benefit_text or self.benefit_pack_id)


def rules_json(rules: ProgramRules) -> str | None:
    return None if rules == ProgramRules() else json.dumps({k: int(v) if isinstance(v, IntEnum) else v
                                                           for k, v in asdict(rules).items()}, ensure_ascii=False)


def rules_from_json(raw: str | None) -> ProgramRules:
    if not raw:
        return ProgramRules()
    data = json.loads(raw)
    return ProgramRules(**{**data, "join_combine": Combine(data.get("join_combine", Combine.ALL)),
                           "card_mode": CardMode(data.get("card_mode", CardMode.SMART)),
                           "card_image_size": tuple(data.get("card_image_size", (0, 0))),
                           "storefront_origins": tuple(data.get("storefront_origins", ()))})


def validate_rules(rules: ProgramRules, v: Violations) -> None:
    v.check(0 <= rules.join_min_trades <= MAX_JOIN_TRADES, "join_threshold.min_completed_trades",
            f"must be 0..{MAX_JOIN_TRADES}")
    v.check(0 <= rules.join_min_spend_fen <= MAX_JOIN_SPEND_FEN, "join_threshold.min_spend_fen",
            f"must be 0..{MAX_JOIN_SPEND_FEN} fen")
    v.check(len(rules.benefit_text) <= MAX_BENEFIT_TEXT, "join_benefit.text",
            f"at most {MAX_BENEFIT_TEXT} characters")
    v.check(not rules.benefit_pack_id or bool(re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", rules.benefit_pack_id)),
            "join_benefit.pack_id", "1-64 characters of A-Z, a-z, 0-9, _ . : -")
    v.check(0 <= rules.validity_months <= MAX_VALIDITY_MONTHS, "tier_validity_months",
            f"must be 0..{MAX_VALIDITY_MONTHS} (0: tiers hold forever)")
    v.check(0 <= rules.notice_days <= MAX_NOTICE_DAYS, "downgrade_notice_days", f"must be 0..{MAX_NOTICE_DAYS}")
    validate_card(rules, v)
    v.check(len(rules.storefront_origins) <= MAX_ORIGINS, "storefront_origins", f"at most {MAX_ORIGINS} origins")
    for i, origin in enumerate(rules.storefront_origins):
        v.check(bool(_ORIGIN.fullmatch(origin)), f"storefront_origins[{i}]",
                "an origin: http(s)://host[:port], no path and no trailing slash")


def validate_card(rules: ProgramRules, v: Violations) -> None:
    """Custom mode needs its call to action (1-13 characters) and a 702x110 background image."""
    if rules.card_mode is not CardMode.CUSTOM:
        return
    text = rules.card_call_to_action
    v.check(1 <= len(text) <= MAX_CALL_TO_ACTION and text.strip() == text and text.isprintable(),
            "storefront_card.call_to_action",
            f"custom mode needs a call to action of 1-{MAX_CALL_TO_ACTION} printable characters")
    url = rules.card_image_url
    v.check(len(url) <= MAX_URL and bool(re.fullmatch(r"https?://[^\s\"'<>]+", url)),
            "storefront_card.background_image_url", "custom mode needs an http(s) URL of the background image")
    v.check(rules.card_image_size == CARD_IMAGE_SIZE, "storefront_card.background_image_width",
            "the background image must be {}x{} pixels".format(*CARD_IMAGE_SIZE))


# ----- the join decision ------------------------------------------------------------------------


@dataclass(frozen=True)
class JoinFacts:
    follows_shop: bool
    completed_trades: int
    spent_fen: int


def unmet_requirements(require_follow: bool, rules: ProgramRules, facts: JoinFacts) -> list[JoinRequirement]:
    """The parts of the threshold the facts do not meet; empty when the buyer may join. Only the
    parts set count: under ALL every one must be met, under ANY one met suffices (then none is
    reported unmet)."""
    parts = []
    if require_follow:
        parts.append((JoinRequirement.FOLLOW, facts.follows_shop))
    if rules.join_min_trades > 0:
        parts.append((JoinRequirement.COMPLETED_TRADES, facts.completed_trades >= rules.join_min_trades))
    if rules.join_min_spend_fen > 0:
        parts.append((JoinRequirement.SPEND, facts.spent_fen >= rules.join_min_spend_fen))
    unmet = [part for part, met in parts if not met]
    if rules.join_combine is Combine.ANY and len(unmet) < len(parts):
        return []
    return unmet


# ----- tier validity ----------------------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def local_midnight_utc(day: date, zone: ZoneInfo) -> datetime:
    """The instant the shop-local `day` begins, as naive UTC."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC).replace(tzinfo=None)


def local_date(at_utc: datetime, zone: ZoneInfo) -> date:
    return at_utc.replace(tzinfo=UTC).astimezone(zone).date()


def tier_expiry(rules: ProgramRules, zone: ZoneInfo, level: int, reached_at: datetime) -> datetime | None:
    """When a tier reached at `reached_at` (naive UTC) expires: at the shop-local midnight that
    ends the same day `validity_months` later. None for level 0 (nothing below it) or without
    validity."""
    if level <= 0 or rules.validity_months <= 0:
        return None
    last_day = add_months(local_date(reached_at, zone), rules.validity_months)
    return local_midnight_utc(date.fromordinal(last_day.toordinal() + 1), zone)


def period_start(rules: ProgramRules, zone: ZoneInfo, expires_at: datetime) -> datetime:
    """The start of the period whose figures re-qualify a tier expiring at `expires_at`: the
    shop-local day `validity_months` before its last day (so the day it was reached counts)."""
    last_day = date.fromordinal(local_date(expires_at, zone).toordinal() - 1)
    return local_midnight_utc(add_months(last_day, -rules.validity_months), zone)


def expiry_level(policy: DowngradePolicy, current: int, qualified: int) -> int:
    """The level at expiry, from the level the period's figures qualify for. NEVER keeps the tier
    (and renews it); DOWN_ONE_LEVEL goes down one level when the figures fall short (so never
    below what they qualify for); RECOMPUTE takes what they qualify for. lifecycle.expiry_level_sql
    is the same rule in SQL."""
    if policy is DowngradePolicy.NEVER:
        return max(current, qualified)
    if policy is DowngradePolicy.DOWN_ONE_LEVEL:
        return current if qualified >= current else current - 1
    return qualified
