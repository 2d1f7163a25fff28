"""Growth value (成长值) rules, pure Python: what each source gives under which caps, the decay
policy, milestones, and which points action counts as which growth source.

Defaults (a shop without settings has these): 1 growth per whole yuan of completed spend; sign-in
5, once a day; review 10, at most 3 a day (each review subject once); share 2, at most 3 a day;
profile completed 20, once; follow 10, once; invite 20, at most 10 a month. No decay, no
milestones."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date
from enum import IntEnum

from services.kit.errors import Violations

MAX_GROWTH = 10**12
MAX_MILESTONES = 20


class GrowthSource(IntEnum):
    """Mirrors loyalty.membership.v1.GrowthSource."""

    SPEND = 1
    SIGN_IN = 2
    REVIEW = 3
    SHARE = 4
    PROFILE_COMPLETED = 5
    FOLLOW = 6
    INVITE = 7
    ADJUSTMENT = 8
    REFUND = 9
    DECAY = 10


RULED = (GrowthSource.SPEND, GrowthSource.SIGN_IN, GrowthSource.REVIEW, GrowthSource.SHARE,
         GrowthSource.PROFILE_COMPLETED, GrowthSource.FOLLOW, GrowthSource.INVITE)

# points' Action (loyalty.points.v1.Action) -> the growth source it counts as. Actions not here
# (browse, survey, the daily pool…) give no growth.
ACTION_SOURCES = {3: GrowthSource.FOLLOW, 4: GrowthSource.PROFILE_COMPLETED, 5: GrowthSource.SIGN_IN,
                  6: GrowthSource.REVIEW, 7: GrowthSource.SHARE, 8: GrowthSource.INVITE}


class DecayKind(IntEnum):
    NONE = 1
    EXPIRE_AFTER_MONTHS = 2  # growth earned more than N months ago no longer counts
    PERCENT_PER_IDLE_MONTH = 3  # −N% for every full month without growth earned


@dataclass(frozen=True)
class GrowthRule:
    source: GrowthSource
    growth: int  # per occurrence; SPEND: per whole yuan
    daily_cap: int = 0  # 0: none
    monthly_cap: int = 0
    lifetime_cap: int = 0


@dataclass(frozen=True)
class Decay:
    kind: DecayKind = DecayKind.NONE
    months: int = 0
    percent: int = 0


@dataclass(frozen=True)
class Milestone:
    threshold: int
    pack_id: str = ""


@dataclass(frozen=True)
class GrowthSettings:
    rules: dict[GrowthSource, GrowthRule]
    decay: Decay = Decay()
    milestones: tuple[Milestone, ...] = ()

    def reached(self, before: int, after: int) -> list[Milestone]:
        """The milestones a rise from `before` to `after` crosses."""
        return [m for m in self.milestones if before < m.threshold <= after]


def default_rules() -> dict[GrowthSource, GrowthRule]:
    rules = (GrowthRule(GrowthSource.SPEND, 1), GrowthRule(GrowthSource.SIGN_IN, 5, daily_cap=1),
             GrowthRule(GrowthSource.REVIEW, 10, daily_cap=3), GrowthRule(GrowthSource.SHARE, 2, daily_cap=3),
             GrowthRule(GrowthSource.PROFILE_COMPLETED, 20, lifetime_cap=1),
             GrowthRule(GrowthSource.FOLLOW, 10, lifetime_cap=1), GrowthRule(GrowthSource.INVITE, 20, monthly_cap=10))
    return {r.source: r for r in rules}


def default_settings() -> GrowthSettings:
    return GrowthSettings(default_rules())


def spend_growth(rule: GrowthRule, amount_fen: int) -> int:
    """Growth for completed spend: per whole yuan."""
    return max(0, amount_fen) // 100 * rule.growth


def cap_periods(day: date, subject: str) -> list[str]:
    """The counters one occurrence on `day` counts in (see tables.growth_counts)."""
    periods = [f"d:{day.isoformat()}", f"m:{day.year:04d}-{day.month:02d}", "all"]
    return periods + [f"s:{subject}"] if subject else periods


def capped(rule: GrowthRule, counts: dict[str, int], day: date, subject: str) -> bool:
    """Whether the occurrence is over one of the rule's caps (or repeats a subject)."""
    if subject and counts.get(f"s:{subject}", 0) > 0:
        return True
    daily, monthly, lifetime = cap_periods(day, "")
    for cap, period in ((rule.daily_cap, daily), (rule.monthly_cap, monthly), (rule.lifetime_cap, lifetime)):
        if cap and counts.get(period, 0) >= cap:
            return True
    return False


def validate(settings: GrowthSettings, v: Violations, prefix: str = "growth_rules") -> None:
    for i, rule in enumerate(settings.rules.values()):
        at = f"{prefix}.rules[{i}]"
        v.check(rule.source in RULED, f"{at}.source", "must be one of the earning sources (SPEND … INVITE)")
        v.check(0 <= rule.growth <= 1_000_000, f"{at}.growth", "must be 0..1000000")
        for name in ("daily_cap", "monthly_cap", "lifetime_cap"):
            v.check(0 <= getattr(rule, name) <= 1_000_000, f"{at}.{name}", "must be 0..1000000 (0: no cap)")
    d = settings.decay
    if d.kind is DecayKind.EXPIRE_AFTER_MONTHS:
        v.check(1 <= d.months <= 120, f"{prefix}.decay.months", "must be 1..120")
    elif d.kind is DecayKind.PERCENT_PER_IDLE_MONTH:
        v.check(1 <= d.percent <= 100, f"{prefix}.decay.percent", "must be 1..100")
    v.check(len(settings.milestones) <= MAX_MILESTONES, f"{prefix}.milestones", f"at most {MAX_MILESTONES}")
    seen: set[int] = set()
    for i, m in enumerate(settings.milestones):
        at = f"{prefix}.milestones[{i}]"
        v.check(0 < m.threshold <= MAX_GROWTH, f"{at}.threshold", f"must be 1..{MAX_GROWTH}")
        v.check(m.threshold not in seen, f"{at}.threshold", "duplicate threshold")
        v.check(len(m.pack_id) <= 64, f"{at}.pack_id", "at most 64 characters")
        seen.add(m.threshold)


def rules_json(rules: dict[GrowthSource, GrowthRule]) -> str:
    return json.dumps([{**asdict(r), "source": int(r.source)} for r in rules.values()])


def rules_from_json(raw: str) -> dict[GrowthSource, GrowthRule]:
    rules = default_rules()  # a source the stored rules lack keeps its default
    for r in json.loads(raw):
        rule = GrowthRule(**{**r, "source": GrowthSource(r["source"])})
        rules[rule.source] = rule
    return rules


def milestones_json(milestones: tuple[Milestone, ...]) -> str:
    return json.dumps([asdict(m) for m in milestones])


def milestones_from_json(raw: str) -> tuple[Milestone, ...]:
    return tuple(sorted((Milestone(**m) for m in json.loads(raw)), key=lambda m: m.threshold))
