"""The lottery's rules without a database: what a prize table must be, which slot a random
integer lands on, the fallback of a prize out of stock, and 100,000 simulated draws from a seeded
source against the table (chi-square, and each slot within 5 sigma). The IntEnums mirror the
proto enums of lottery.proto."""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from datetime import datetime
from enum import IntEnum

import pytest
from loyalty.rewards.v1 import lottery_pb2

from services.rewards import lottery_domain, reasons
from services.rewards.lottery_domain import (
    TOTAL_BP,
    Lottery,
    LotteryStyle,
    Prize,
    PrizeKind,
    draw,
    lottery_violations,
    slot_of,
    table_violations,
    with_defaults,
)

NOTHING = Prize("none", "谢谢参与", PrizeKind.NOTHING, 5_000, unlimited_stock=True)


def table(*prizes: Prize) -> tuple[Prize, ...]:
    return with_defaults(prizes)


def fields_of(prizes: tuple[Prize, ...]) -> dict[str, str]:
    """Each field's violations, joined."""
    found: dict[str, str] = {}
    for field, description in table_violations(prizes).items:
        found[field] = f"{found[field]}; {description}" if field in found else description
    return found


def wheel() -> tuple[Prize, ...]:
    """A wheel of five: 50 points 30%, a coupon 15%, a gift 4.5%, 500 points 0.5%, nothing 50%."""
    return table(Prize("p50", "50积分", PrizeKind.POINTS, 3_000, points=50, unlimited_stock=True),
                 Prize("cp", "满99减10", PrizeKind.COUPON, 1_500, reward_id="rw_1", stock=1_000_000),
                 Prize("gift", "保温杯", PrizeKind.GIFT, 450, reward_id="rw_2", stock=1_000_000),
                 Prize("p500", "500积分", PrizeKind.POINTS, 50, points=500, stock=1_000_000),
                 NOTHING)


# ----- the table's rules -----------------------------------------------------------------------------


def test_a_well_formed_table_has_no_violations() -> None:
    assert fields_of(wheel()) == {}


def test_probabilities_must_sum_to_exactly_ten_thousand() -> None:
    short = table(Prize("p", "10积分", PrizeKind.POINTS, 4_999, points=10, unlimited_stock=True), NOTHING)
    assert "sum to exactly 10000" in fields_of(short)["lottery.prizes"]
    over = table(Prize("p", "10积分", PrizeKind.POINTS, 5_001, points=10, unlimited_stock=True), NOTHING)
    assert "not 10001" in fields_of(over)["lottery.prizes"]


def test_exactly_one_nothing_slot_is_required() -> None:
    none_at_all = table(Prize("p", "10积分", PrizeKind.POINTS, TOTAL_BP, points=10, unlimited_stock=True))
    assert "exactly one NOTHING" in fields_of(none_at_all)["lottery.prizes"]
    two = table(Prize("a", "", PrizeKind.NOTHING, 5_000), Prize("b", "", PrizeKind.NOTHING, 5_000))
    assert "found 2" in fields_of(two)["lottery.prizes"]


def test_each_prize_has_the_fields_of_its_kind() -> None:
    bad = table(Prize("pts", "积分", PrizeKind.POINTS, 1_000, points=0, reward_id="rw_1"),
                Prize("cp", "券", PrizeKind.COUPON, 1_000, points=5),
                Prize("odd", "x", PrizeKind.GIFT, -1, reward_id="rw_2", stock=-1),
                Prize("none", "谢谢参与", PrizeKind.NOTHING, 8_001))
    found = fields_of(bad)
    assert {"lottery.prizes[0].points", "lottery.prizes[0].reward_id", "lottery.prizes[1].points",
            "lottery.prizes[1].reward_id", "lottery.prizes[2].probability_bp",
            "lottery.prizes[2].stock"} <= found.keys()


def test_prize_ids_are_unique_and_default_to_their_slot() -> None:
    prizes = table(Prize("", "10积分", PrizeKind.POINTS, 5_000, points=10, unlimited_stock=True),
                   Prize("", "", PrizeKind.NOTHING, 5_000))
    assert [p.prize_id for p in prizes] == ["slot-1", "slot-2"]
    assert prizes[1].name == "谢谢参与" and prizes[1].unlimited_stock
    twins = table(Prize("x", "a", PrizeKind.POINTS, 5_000, points=1, unlimited_stock=True),
                  Prize("x", "", PrizeKind.NOTHING, 5_000))
    assert "unique" in fields_of(twins)["lottery.prizes"]


def test_a_lottery_costs_points_or_gives_free_draws_and_its_window_is_ordered() -> None:
    lottery = Lottery("shop", "", "转盘", LotteryStyle.WHEEL, wheel(), start_at=datetime(2026, 6, 1),
                      end_at=datetime(2026, 5, 1))
    found = dict(lottery_violations(lottery).items)
    assert {"lottery.cost_points", "lottery.end_time"} <= found.keys()
    fine = Lottery("shop", "", "转盘", LotteryStyle.GRID, wheel(), free_draws_per_month=1)
    assert lottery_violations(fine).items == []


def test_a_lottery_runs_while_enabled_and_inside_its_window() -> None:
    lottery = Lottery("shop", "", "转盘", LotteryStyle.WHEEL, wheel(), cost_points=10,
                      start_at=datetime(2026, 5, 1), end_at=datetime(2026, 6, 1))
    assert lottery.why_not_running(datetime(2026, 5, 15)) is None
    assert lottery.why_not_running(datetime(2026, 4, 30)) == reasons.NOT_STARTED
    assert lottery.why_not_running(datetime(2026, 6, 1)) == reasons.ENDED
    off = Lottery("shop", "", "转盘", LotteryStyle.WHEEL, wheel(), cost_points=10, enabled=False)
    assert off.why_not_running(datetime(2026, 5, 15)) == reasons.NOT_ACTIVE


def test_free_draws_go_to_the_listed_tiers_only() -> None:
    every = Lottery("shop", "", "转盘", LotteryStyle.WHEEL, wheel(), free_draws_per_month=2)
    assert every.free_draws_for(0) == 2
    gold = Lottery("shop", "", "转盘", LotteryStyle.WHEEL, wheel(), free_draws_per_month=1,
                   free_draw_tier_levels=(3, 4))
    assert gold.free_draws_for(3) == 1 and gold.free_draws_for(2) == 0


# ----- drawing -----------------------------------------------------------------------------------------


def test_each_random_integer_lands_on_the_slot_owning_it() -> None:
    prizes = wheel()  # edges: 3000, 4500, 4950, 5000, 10000
    assert [slot_of(prizes, r) for r in (0, 2_999, 3_000, 4_499, 4_500, 4_949, 4_950, 4_999, 5_000, 9_999)] == [
        0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    with pytest.raises(ValueError):
        slot_of(prizes, TOTAL_BP)
    with pytest.raises(ValueError):
        slot_of(prizes, -1)


def test_a_slot_of_zero_basis_points_is_never_won() -> None:
    prizes = table(Prize("never", "大奖", PrizeKind.POINTS, 0, points=9, unlimited_stock=True),
                   Prize("none", "", PrizeKind.NOTHING, TOTAL_BP))
    assert {draw(prizes, r) for r in range(TOTAL_BP)} == {1}


def test_a_prize_out_of_stock_falls_back_to_the_nothing_slot() -> None:
    prizes = table(Prize("cup", "保温杯", PrizeKind.GIFT, 6_000, reward_id="rw_2", stock=0),
                   Prize("p", "10积分", PrizeKind.POINTS, 1_000, points=10, unlimited_stock=True),
                   Prize("none", "", PrizeKind.NOTHING, 3_000))
    assert draw(prizes, 0) == 2 and draw(prizes, 5_999) == 2
    assert draw(prizes, 6_000) == 1
    restocked = table(Prize("cup", "保温杯", PrizeKind.GIFT, 6_000, reward_id="rw_2", stock=1), *prizes[1:])
    assert draw(restocked, 0) == 0


def test_the_random_source_covers_the_whole_range() -> None:
    seen = {lottery_domain.random_bp() for _ in range(2_000)}
    assert all(0 <= r < TOTAL_BP for r in seen) and len(seen) > 1_000


def test_100000_seeded_draws_match_the_table() -> None:
    """Chi-square over the slots (4 degrees of freedom: 18.47 is the 0.1% critical value), and
    each slot's count within 5 standard deviations of n·p."""
    prizes = wheel()
    n = 100_000
    source = random.Random(20261126)
    counts = Counter(draw(prizes, source.randrange(TOTAL_BP)) for _ in range(n))
    chi_square = 0.0
    for i, prize in enumerate(prizes):
        p = prize.probability_bp / TOTAL_BP
        expected = n * p
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[i] - expected) <= 5 * sigma, (prize.prize_id, counts[i], expected)
        chi_square += (counts[i] - expected) ** 2 / expected
    assert chi_square < 18.47, chi_square


def test_100000_draws_from_secrets_match_the_table() -> None:
    prizes = wheel()
    n = 100_000
    counts = Counter(draw(prizes, lottery_domain.random_bp()) for _ in range(n))
    for i, prize in enumerate(prizes):
        p = prize.probability_bp / TOTAL_BP
        assert abs(counts[i] - n * p) <= 5 * math.sqrt(n * p * (1 - p)), (prize.prize_id, counts[i])


# ----- the enums mirror the protos -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(lottery_pb2.DESCRIPTOR.enum_types_by_name))
def test_each_lottery_enum_has_a_domain_twin_with_the_same_names_and_numbers(name: str) -> None:
    twin = getattr(lottery_domain, name, None)
    assert isinstance(twin, type) and issubclass(twin, IntEnum), f"lottery_domain.{name} is missing"
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper() + "_"
    wire = {value.name.removeprefix(prefix): value.number
            for value in lottery_pb2.DESCRIPTOR.enum_types_by_name[name].values if value.number != 0}
    assert {member.name: member.value for member in twin} == wire
