"""The tier ladder rules of services/membership/domain.py (DOMAIN.md, "Tiers"). Pure: no I/O."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.kit.errors import Violations
from services.membership.domain import (
    DowngradePolicy,
    Ladder,
    QualificationMode,
    Tier,
    default_tiers,
    validate_tiers,
)

YUAN = 100  # fen per yuan
REGULAR, SILVER, GOLD, PLATINUM, DIAMOND = range(5)
SPEND = QualificationMode.CUMULATIVE_SPEND
COUNT = QualificationMode.TRADE_COUNT
EITHER = QualificationMode.SPEND_OR_COUNT


def ladder(mode: QualificationMode = SPEND, policy: DowngradePolicy = DowngradePolicy.NEVER) -> Ladder:
    return Ladder(default_tiers(), mode, policy)


def violations(tiers: list[Tier], mode: QualificationMode = SPEND) -> list[str]:
    v = Violations()
    validate_tiers(tiers, v, mode)
    return [field for field, _ in v.items]


# --- the default ladder ---------------------------------------------------------------------------


def test_default_ladder_has_five_tiers_numbered_from_zero():
    tiers = default_tiers()
    assert [t.level for t in tiers] == [0, 1, 2, 3, 4]
    assert [t.code for t in tiers] == ["regular", "silver", "gold", "platinum", "diamond"]


def test_default_thresholds_are_0_1000_3000_10000_30000_yuan_in_fen():
    assert [t.min_spend_fen for t in default_tiers()] == [0, 1_000 * YUAN, 3_000 * YUAN, 10_000 * YUAN,
                                                         30_000 * YUAN]


def test_default_points_rates_are_1_to_3_points_per_yuan():
    assert [t.points_rate_milli for t in default_tiers()] == [1000, 1500, 2000, 2500, 3000]


def test_default_regular_tier_pays_full_price_and_discounts_deepen_upwards():
    discounts = [t.discount_bp for t in default_tiers()]
    assert discounts[0] == 10000
    assert discounts == sorted(discounts, reverse=True)


@pytest.mark.parametrize("mode", list(QualificationMode))
def test_default_ladder_is_valid_in_every_mode(mode):
    assert violations(list(default_tiers()), mode) == []


def test_ladder_defaults_to_cumulative_spend_and_never_downgrading():
    plain = Ladder(default_tiers())
    assert plain.mode is SPEND
    assert plain.policy is DowngradePolicy.NEVER
    assert plain.top == DIAMOND


# --- qualified_level at the boundaries ------------------------------------------------------------


def test_99999_fen_is_still_regular():
    assert ladder().qualified_level(99_999, 0) == REGULAR


def test_100000_fen_is_silver():
    assert ladder().qualified_level(100_000, 0) == SILVER


@pytest.mark.parametrize(("threshold_fen", "level"), [
    (100_000, SILVER), (300_000, GOLD), (1_000_000, PLATINUM), (3_000_000, DIAMOND),
])
def test_spend_exactly_at_a_threshold_qualifies_and_one_fen_below_does_not(threshold_fen, level):
    assert ladder().qualified_level(threshold_fen, 0) == level
    assert ladder().qualified_level(threshold_fen - 1, 0) == level - 1


def test_zero_spend_is_regular():
    assert ladder().qualified_level(0, 0) == REGULAR


def test_spend_far_above_the_top_threshold_stays_diamond():
    assert ladder().qualified_level(10**12, 0) == DIAMOND


# --- qualification modes ----------------------------------------------------------------------------


def test_cumulative_spend_mode_ignores_trade_count():
    assert ladder(SPEND).qualified_level(0, 1_000) == REGULAR


def test_trade_count_mode_ignores_spend():
    assert ladder(COUNT).qualified_level(10**9, 0) == REGULAR


@pytest.mark.parametrize(("trades", "level"), [
    (4, REGULAR), (5, SILVER), (9, SILVER), (10, GOLD), (19, GOLD),
    (20, PLATINUM), (49, PLATINUM), (50, DIAMOND),
])
def test_trade_count_mode_qualifies_on_trades_at_each_boundary(trades, level):
    assert ladder(COUNT).qualified_level(0, trades) == level


def test_spend_or_count_qualifies_by_spend_alone():
    assert ladder(EITHER).qualified_level(300_000, 0) == GOLD


def test_spend_or_count_qualifies_by_trade_count_alone():
    assert ladder(EITHER).qualified_level(0, 5) == SILVER


def test_spend_or_count_takes_the_higher_of_the_two_measures():
    # Spend reaches silver, trades reach platinum: either measure suffices, so platinum.
    assert ladder(EITHER).qualified_level(100_000, 20) == PLATINUM
    # Spend reaches diamond, trades only silver.
    assert ladder(EITHER).qualified_level(3_000_000, 5) == DIAMOND


def test_spend_or_count_just_below_both_thresholds_stays_below():
    assert ladder(EITHER).qualified_level(99_999, 4) == REGULAR


# --- evaluate and the downgrade policy ------------------------------------------------------------


def test_evaluate_upgrades_when_a_threshold_is_crossed_under_never():
    assert ladder(policy=DowngradePolicy.NEVER).evaluate(SILVER, 300_000, 0) == GOLD


def test_evaluate_never_keeps_the_current_tier_when_spend_falls_below_it():
    # A refund takes a gold member back under the silver threshold: NEVER keeps gold.
    assert ladder(policy=DowngradePolicy.NEVER).evaluate(GOLD, 50_000, 0) == GOLD


def test_evaluate_never_keeps_a_manually_raised_tier_without_qualification():
    assert ladder(policy=DowngradePolicy.NEVER).evaluate(DIAMOND, 0, 0) == DIAMOND


def test_evaluate_never_clamps_a_level_above_the_top_to_the_top():
    # A ladder shrank under a member: their stored level no longer exists.
    assert ladder(policy=DowngradePolicy.NEVER).evaluate(9, 0, 0) == DIAMOND


def test_evaluate_recompute_upgrades_when_qualified():
    assert ladder(policy=DowngradePolicy.RECOMPUTE).evaluate(REGULAR, 1_000_000, 0) == PLATINUM


def test_evaluate_recompute_downgrades_when_spend_falls_below_the_current_tier():
    assert ladder(policy=DowngradePolicy.RECOMPUTE).evaluate(GOLD, 99_999, 0) == REGULAR


def test_evaluate_recompute_keeps_the_tier_when_still_qualified():
    assert ladder(policy=DowngradePolicy.RECOMPUTE).evaluate(GOLD, 300_000, 0) == GOLD


# --- progress to the next tier --------------------------------------------------------------------


def test_progress_of_a_new_regular_member_is_zero_towards_silver():
    p = ladder().progress(REGULAR, 0, 0)
    assert p.current.code == "regular"
    assert p.next is not None and p.next.code == "silver"
    assert p.spend_missing_fen == 100_000
    assert p.progress_permille == 0


def test_progress_reports_missing_spend_and_permille_halfway():
    p = ladder().progress(REGULAR, 50_000, 0)
    assert p.spend_missing_fen == 50_000
    assert p.progress_permille == 500


def test_progress_permille_is_measured_from_the_current_threshold():
    # Silver (1,000 yuan) to gold (3,000 yuan): 2,000 yuan spent is halfway.
    p = ladder().progress(SILVER, 200_000, 0)
    assert p.next is not None and p.next.code == "gold"
    assert p.spend_missing_fen == 100_000
    assert p.progress_permille == 500


def test_progress_permille_rounds_down():
    p = ladder().progress(REGULAR, 99_999, 0)
    assert p.spend_missing_fen == 1
    assert p.progress_permille == 999


def test_progress_in_spend_mode_reports_no_missing_trades():
    assert ladder(SPEND).progress(REGULAR, 0, 0).trades_missing == 0


def test_progress_in_trade_count_mode_reports_missing_trades_and_no_missing_spend():
    p = ladder(COUNT).progress(SILVER, 0, 7)
    assert p.trades_missing == 3
    assert p.spend_missing_fen == 0
    assert p.progress_permille == 400  # 2 of the 5 trades between silver (5) and gold (10)


def test_progress_in_spend_or_count_shows_the_nearer_measure():
    # Spend is 10% of the way to silver, trades 80% (4 of 5): the nearer one shows.
    p = ladder(EITHER).progress(REGULAR, 10_000, 4)
    assert p.spend_missing_fen == 90_000
    assert p.trades_missing == 1
    assert p.progress_permille == 800


def test_progress_is_capped_at_1000_and_zero_missing_when_already_past_the_next_threshold():
    p = ladder().progress(REGULAR, 500_000, 0)
    assert p.spend_missing_fen == 0
    assert p.progress_permille == 1000


def test_progress_is_zero_not_negative_when_spend_is_below_the_kept_tier():
    # NEVER kept a gold member whose spend has since dropped.
    p = ladder().progress(GOLD, 0, 0)
    assert p.next is not None and p.next.code == "platinum"
    assert p.spend_missing_fen == 1_000_000
    assert p.progress_permille == 0


def test_top_tier_has_no_next_tier_and_full_progress():
    p = ladder().progress(DIAMOND, 0, 0)
    assert p.current.code == "diamond"
    assert p.next is None
    assert (p.spend_missing_fen, p.trades_missing, p.progress_permille) == (0, 0, 1000)


def test_progress_beyond_the_top_level_is_treated_as_the_top_tier():
    p = ladder().progress(DIAMOND + 3, 0, 0)
    assert p.current.code == "diamond"
    assert p.next is None
    assert p.progress_permille == 1000


# --- validate_tiers -------------------------------------------------------------------------------


def test_empty_ladder_is_rejected_on_the_tiers_field():
    assert violations([]) == ["tiers"]


def test_empty_ladder_uses_the_given_field_name():
    v = Violations()
    validate_tiers([], v, SPEND, field_name="config.tiers")
    assert [f for f, _ in v.items] == ["config.tiers"]


def test_more_than_twenty_tiers_is_rejected():
    tiers = [Tier(i, f"t{i}", f"T{i}", i * 100, i, 10000, 1000) for i in range(21)]
    assert violations(tiers) == ["tiers"]


def test_first_tier_with_a_spend_threshold_is_rejected():
    tiers = list(default_tiers())
    tiers[0] = replace(tiers[0], min_spend_fen=1)
    assert violations(tiers) == ["tiers[0]"]


def test_first_tier_with_a_trade_threshold_is_rejected():
    tiers = list(default_tiers())
    tiers[0] = replace(tiers[0], min_trades=1)
    assert violations(tiers) == ["tiers[0]"]


def test_spend_thresholds_that_do_not_rise_are_rejected():
    tiers = list(default_tiers())
    tiers[2] = replace(tiers[2], min_spend_fen=tiers[1].min_spend_fen)
    assert violations(tiers) == ["tiers[2].min_spend_fen"]


def test_falling_spend_threshold_is_rejected():
    tiers = list(default_tiers())
    tiers[3] = replace(tiers[3], min_spend_fen=200_000)
    assert violations(tiers) == ["tiers[3].min_spend_fen"]


def test_trade_thresholds_need_not_rise_in_spend_mode():
    tiers = list(default_tiers())
    tiers[2] = replace(tiers[2], min_trades=tiers[1].min_trades)
    assert violations(tiers, SPEND) == []


def test_trade_thresholds_must_rise_in_trade_count_mode():
    tiers = list(default_tiers())
    tiers[2] = replace(tiers[2], min_trades=tiers[1].min_trades)
    assert violations(tiers, COUNT) == ["tiers[2].min_trades"]


def test_spend_thresholds_need_not_rise_in_trade_count_mode():
    tiers = list(default_tiers())
    tiers[2] = replace(tiers[2], min_spend_fen=tiers[1].min_spend_fen)
    assert violations(tiers, COUNT) == []


def test_spend_or_count_mode_needs_both_measures_to_rise():
    tiers = list(default_tiers())
    tiers[1] = replace(tiers[1], min_spend_fen=0, min_trades=0)
    assert violations(tiers, EITHER) == ["tiers[1].min_spend_fen", "tiers[1].min_trades"]


def test_duplicate_code_is_reported_on_the_second_occurrence():
    tiers = list(default_tiers())
    tiers[3] = replace(tiers[3], code="silver")
    assert violations(tiers) == ["tiers[3].code"]


def test_levels_out_of_order_are_rejected():
    tiers = list(default_tiers())
    tiers[1] = replace(tiers[1], level=2)
    assert violations(tiers) == ["tiers[1].level"]


def test_code_with_capitals_is_rejected():
    tiers = list(default_tiers())
    tiers[1] = replace(tiers[1], code="Silver")
    assert violations(tiers) == ["tiers[1].code"]


@pytest.mark.parametrize("discount_bp", [0, -1, 10001])
def test_discount_outside_1_to_10000_is_rejected(discount_bp):
    tiers = list(default_tiers())
    tiers[1] = replace(tiers[1], discount_bp=discount_bp)
    assert violations(tiers) == ["tiers[1].discount_bp"]


@pytest.mark.parametrize("discount_bp", [1, 10000])
def test_discount_at_the_bounds_is_accepted(discount_bp):
    tiers = list(default_tiers())
    tiers[1] = replace(tiers[1], discount_bp=discount_bp)
    assert violations(tiers) == []


def test_every_problem_in_a_ladder_is_reported_at_once():
    tiers = list(default_tiers())
    tiers[0] = replace(tiers[0], min_spend_fen=5)
    tiers[2] = replace(tiers[2], code="silver", discount_bp=0)
    assert violations(tiers) == ["tiers[0]", "tiers[2].code", "tiers[2].discount_bp"]


# --- properties -----------------------------------------------------------------------------------

spend = st.integers(min_value=0, max_value=10**10)
trades = st.integers(min_value=0, max_value=200)
modes = st.sampled_from(list(QualificationMode))


@given(mode=modes, a=spend, b=spend, t=trades)
def test_qualified_level_is_monotonic_in_spend(mode, a, b, t):
    low, high = sorted((a, b))
    lad = ladder(mode)
    assert lad.qualified_level(low, t) <= lad.qualified_level(high, t)


@given(mode=modes, current=st.integers(min_value=0, max_value=DIAMOND), s=spend, t=trades)
def test_evaluate_under_never_never_returns_less_than_the_current_level(mode, current, s, t):
    lad = ladder(mode, DowngradePolicy.NEVER)
    result = lad.evaluate(current, s, t)
    assert result >= current
    assert result >= lad.qualified_level(s, t)
