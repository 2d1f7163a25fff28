"""Growth value rules (growth_rules.py) and the growth qualification mode (domain.py), pure."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from loyalty.membership.v1 import membership_service_pb2 as pb

from services.kit.errors import Violations
from services.membership import growth_rules
from services.membership.domain import Ladder, QualificationMode, default_tiers, validate_tiers
from services.membership.growth_decay import months_before
from services.membership.growth_rules import (
    DecayKind,
    GrowthRule,
    GrowthSettings,
    GrowthSource,
    Milestone,
    cap_periods,
    capped,
    default_rules,
    spend_growth,
)

DAY = date(2026, 11, 26)


@pytest.mark.parametrize(("twin", "proto", "prefix"), [
    (GrowthSource, pb.GrowthSource, "GROWTH_SOURCE_"), (DecayKind, pb.GrowthDecayKind, "GROWTH_DECAY_KIND_"),
    (QualificationMode, pb.QualificationMode, "QUALIFICATION_MODE_")])
def test_the_domain_enums_mirror_the_proto(twin: type, proto: object, prefix: str) -> None:
    wire = {name.removeprefix(prefix): number for name, number in proto.items() if number}  # type: ignore[attr-defined]
    assert wire == {member.name: int(member) for member in twin}


def test_spend_gives_growth_per_whole_yuan() -> None:
    assert spend_growth(default_rules()[GrowthSource.SPEND], 12_399) == 123
    assert spend_growth(GrowthRule(GrowthSource.SPEND, 2), 99) == 0


def counts_after(rule: GrowthRule, occurrences: list[tuple[date, str]]) -> int:
    """How many of the occurrences the rule's caps let through."""
    counts: dict[str, int] = {}
    given = 0
    for day, subject in occurrences:
        if capped(rule, counts, day, subject):
            continue
        given += 1
        for period in cap_periods(day, subject):
            counts[period] = counts.get(period, 0) + 1
    return given


def test_daily_monthly_lifetime_and_subject_caps() -> None:
    rules = default_rules()
    assert counts_after(rules[GrowthSource.SIGN_IN], [(DAY, ""), (DAY, ""), (date(2026, 11, 27), "")]) == 2
    reviews = [(DAY, f"o{i}") for i in range(5)] + [(date(2026, 11, 27), "o0"), (date(2026, 11, 27), "o9")]
    assert counts_after(rules[GrowthSource.REVIEW], reviews) == 4  # 3 that day; o0 again gives nothing
    invites = [(date(2026, 11, d), f"f{d}") for d in range(1, 13)] + [(date(2026, 12, 1), "f99")]
    assert counts_after(rules[GrowthSource.INVITE], invites) == 11  # 10 a month
    assert counts_after(rules[GrowthSource.FOLLOW], [(DAY, ""), (date(2027, 1, 1), "")]) == 1


def test_milestones_crossed_by_a_rise() -> None:
    settings = GrowthSettings(default_rules(), milestones=(Milestone(100), Milestone(500, "p")))
    assert settings.reached(0, 99) == []
    assert settings.reached(99, 100) == [Milestone(100)]
    assert settings.reached(0, 1000) == [Milestone(100), Milestone(500, "p")]


def test_invalid_settings_are_field_violations() -> None:
    v = Violations()
    growth_rules.validate(GrowthSettings({GrowthSource.DECAY: GrowthRule(GrowthSource.DECAY, -1)},
                                         growth_rules.Decay(DecayKind.EXPIRE_AFTER_MONTHS, 0),
                                         (Milestone(0), Milestone(0))), v)
    fields = {f for f, _ in v.items}
    assert {"growth_rules.rules[0].source", "growth_rules.rules[0].growth", "growth_rules.decay.months",
            "growth_rules.milestones[0].threshold", "growth_rules.milestones[1].threshold"} <= fields


def test_the_growth_mode_qualifies_by_growth_only() -> None:
    ladder = Ladder(default_tiers(QualificationMode.GROWTH), QualificationMode.GROWTH)
    assert ladder.qualified_level(10**12, 10**6, 999) == 0
    assert ladder.qualified_level(0, 0, 3_000) == 2
    progress = ladder.progress(1, 0, 0, 2_000)
    assert (progress.growth_missing, progress.spend_missing_fen, progress.progress_permille) == (1_000, 0, 500)
    v = Violations()
    validate_tiers(list(default_tiers()), v, QualificationMode.GROWTH)
    assert not v.items


def test_a_default_ladder_carries_only_its_modes_thresholds() -> None:
    spend = default_tiers(QualificationMode.CUMULATIVE_SPEND)
    assert all(t.min_trades == 0 and t.min_growth == 0 for t in spend) and spend[1].min_spend_fen == 100_000
    both = default_tiers(QualificationMode.SPEND_OR_COUNT)
    assert both[1].min_trades == 5 and both[1].min_growth == 0


def test_months_before_clamps_to_the_months_end() -> None:
    assert months_before(datetime(2026, 3, 31, 8), 1) == datetime(2026, 2, 28, 8)
    assert months_before(datetime(2026, 1, 15), 12) == datetime(2025, 1, 15)
    assert months_before(datetime(2024, 3, 30), 1) == datetime(2024, 2, 29)
