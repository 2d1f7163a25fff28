"""The pure rules of the tier lifecycle and the join decision (services/membership/rules.py)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from services.kit.errors import Violations
from services.membership.domain import DowngradePolicy
from services.membership.rules import (
    Combine,
    JoinFacts,
    JoinRequirement,
    ProgramRules,
    expiry_level,
    period_start,
    rules_from_json,
    rules_json,
    tier_expiry,
    unmet_requirements,
    validate_rules,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_unmet_parts_under_all_and_any() -> None:
    rules = ProgramRules(join_min_trades=2, join_min_spend_fen=500)
    none = JoinFacts(False, 0, 0)
    assert unmet_requirements(True, rules, none) == [JoinRequirement.FOLLOW, JoinRequirement.COMPLETED_TRADES,
                                                     JoinRequirement.SPEND]
    assert unmet_requirements(True, rules, JoinFacts(True, 2, 499)) == [JoinRequirement.SPEND]
    any_rules = ProgramRules(join_min_trades=2, join_min_spend_fen=500, join_combine=Combine.ANY)
    assert unmet_requirements(True, any_rules, JoinFacts(False, 0, 500)) == []
    assert unmet_requirements(False, ProgramRules(), none) == []  # no part: anyone joins


def test_a_tier_holds_through_the_same_day_months_later_in_the_shops_zone() -> None:
    rules = ProgramRules(validity_months=1)
    reached = datetime(2026, 1, 31, 10, 0)  # 18:00 on 31 January in Shanghai
    expires = tier_expiry(rules, SHANGHAI, 2, reached)
    assert expires == datetime(2026, 2, 28, 16, 0)  # 1 March 00:00 in Shanghai: valid through 28 February
    assert period_start(rules, SHANGHAI, expires) <= reached
    assert tier_expiry(rules, SHANGHAI, 0, reached) is None  # nothing below level 0
    assert tier_expiry(ProgramRules(), SHANGHAI, 2, reached) is None  # no validity: forever


@pytest.mark.parametrize(("policy", "current", "qualified", "level"), [
    (DowngradePolicy.NEVER, 3, 1, 3), (DowngradePolicy.NEVER, 1, 2, 2),
    (DowngradePolicy.DOWN_ONE_LEVEL, 3, 1, 2), (DowngradePolicy.DOWN_ONE_LEVEL, 3, 3, 3),
    (DowngradePolicy.DOWN_ONE_LEVEL, 1, 0, 0),
    (DowngradePolicy.RECOMPUTE, 3, 1, 1), (DowngradePolicy.RECOMPUTE, 3, 0, 0)])
def test_the_level_at_expiry_by_policy(policy: DowngradePolicy, current: int, qualified: int, level: int) -> None:
    assert expiry_level(policy, current, qualified) == level


def test_rules_round_trip_and_defaults_are_stored_as_null() -> None:
    rules = ProgramRules(1, 2, Combine.ANY, "gift", "pk_1", 12, 14)
    assert rules_from_json(rules_json(rules)) == rules
    assert rules_json(ProgramRules()) is None and rules_from_json(None) == ProgramRules()


def test_rules_are_checked() -> None:
    v = Violations()
    validate_rules(ProgramRules(join_min_trades=-1, validity_months=121, notice_days=-1, benefit_pack_id="a b"), v)
    assert {f for f, _ in v.items} >= {"join_threshold.min_completed_trades", "tier_validity_months",
                                       "downgrade_notice_days", "join_benefit.pack_id"}
