"""The points rules of services/points/domain/: purchase points, expiry dates, multipliers and
their stacking, birthday windows, streaks and clawbacks. Pure: no I/O."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.points.domain import (
    Action,
    BirthdayWindow,
    ExpiryPolicy,
    Multiplier,
    MultiplierKind,
    add_months,
    best_multiplier,
    clawback_points,
    default_multipliers,
    default_rules,
    expiry_for,
    in_birthday_window,
    local_date,
    local_midnight_utc,
    next_streak,
    purchase_points,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
TOKYO = ZoneInfo("Asia/Tokyo")
ROLLING = ExpiryPolicy.ROLLING_MONTHS


def utc(text: str) -> datetime:
    """Naive UTC, the form the domain takes."""
    return datetime.fromisoformat(text)


# ----- purchase points ---------------------------------------------------------------------------


@pytest.mark.parametrize(("fen", "rate", "multiplier", "points"), [
    (123456, 1000, 1000, 1234),  # 1,234.56 yuan at Regular
    (10199, 1500, 1000, 151),  # 101.99 yuan at Silver: floor(101 × 1.5)
    (99, 1000, 1000, 0),  # less than a yuan earns nothing
    (100, 1000, 1000, 1),
    (10199, 1500, 2000, 303),  # floored once, at the end
    (333, 1500, 1500, 6),  # 3 × 1.5 × 1.5 = 6.75
    (0, 1000, 1000, 0),
])
def test_purchase_points(fen: int, rate: int, multiplier: int, points: int) -> None:
    assert purchase_points(fen, 1, rate, multiplier) == points


def test_purchase_points_scale_with_the_rule() -> None:
    assert purchase_points(10199, 2, 1500, 1000) == 303


@given(fen=st.integers(0, 10**12), rate=st.integers(0, 10_000), multiplier=st.integers(1000, 10_000))
def test_purchase_points_are_the_exact_floor(fen: int, rate: int, multiplier: int) -> None:
    whole_yuan = fen // 100
    expected = (whole_yuan * rate * multiplier) // 10**6
    assert purchase_points(fen, 1, rate, multiplier) == expected
    assert purchase_points(fen + 99 - fen % 100, 1, rate, multiplier) == expected  # the fen below a yuan


# ----- expiry -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("earned", "expires"), [
    ("2025-01-15 15:59:59", "2026-01-15 16:00:00"),  # 23:59:59 on 15 January in Shanghai
    ("2025-01-15 16:00:00", "2026-01-16 16:00:00"),  # 00:00 on 16 January in Shanghai
    ("2024-02-29 04:00:00", "2025-02-28 16:00:00"),  # valid through 28 February 2025
    ("2025-03-31 04:00:00", "2026-03-31 16:00:00"),
])
def test_rolling_months_expire_at_the_local_midnight_ending_the_same_day_a_year_on(earned: str, expires: str) -> None:
    assert expiry_for(utc(earned), SHANGHAI, ROLLING, 12) == utc(expires)


def test_rolling_months_follow_the_shop_zone_and_the_months_setting() -> None:
    assert expiry_for(utc("2025-01-15 15:30:00"), TOKYO, ROLLING, 12) == utc("2026-01-16 15:00:00")
    assert expiry_for(utc("2025-08-31 04:00:00"), SHANGHAI, ROLLING, 6) == utc("2026-02-28 16:00:00")


def test_other_expiry_policies() -> None:
    assert expiry_for(utc("2025-01-15 04:00:00"), SHANGHAI, ExpiryPolicy.NEVER, 12) is None
    assert expiry_for(utc("2025-12-31 17:00:00"), SHANGHAI, ExpiryPolicy.END_OF_NEXT_YEAR, 12) == utc(
        "2027-12-31 16:00:00")  # earned on 1 January 2026 local: expires as 2028 begins


@pytest.mark.parametrize(("day", "months", "expected"), [
    (date(2024, 2, 29), 12, date(2025, 2, 28)),
    (date(2024, 1, 31), 1, date(2024, 2, 29)),
    (date(2025, 1, 31), 1, date(2025, 2, 28)),
    (date(2025, 11, 30), 3, date(2026, 2, 28)),
    (date(2025, 12, 15), 1, date(2026, 1, 15)),
    (date(2026, 3, 31), -1, date(2026, 2, 28)),
])
def test_add_months_clamps_to_the_end_of_the_month(day: date, months: int, expected: date) -> None:
    assert add_months(day, months) == expected


def test_local_dates_and_midnights() -> None:
    assert local_date(utc("2026-11-23 15:30:00"), SHANGHAI) == date(2026, 11, 23)
    assert local_date(utc("2026-11-23 16:30:00"), SHANGHAI) == date(2026, 11, 24)
    assert local_midnight_utc(date(2026, 11, 24), SHANGHAI) == utc("2026-11-23 16:00:00")


# ----- multipliers -------------------------------------------------------------------------------


def test_default_rules_and_multipliers() -> None:
    rules = {r.action: r for r in default_rules()}
    assert rules[Action.PURCHASE].points == 1 and rules[Action.PURCHASE].multipliers_apply
    assert rules[Action.JOIN].points == 100
    sign_in = rules[Action.DAILY_SIGN_IN]
    assert (sign_in.points, sign_in.streak_days, sign_in.streak_bonus) == (5, 7, 20) and sign_in.multipliers_apply
    assert rules[Action.REVIEW].caps.per_day == 3 and rules[Action.INVITE_FRIEND].caps.per_month == 10
    assert rules[Action.REFERRAL].points == 0 and rules[Action.BROWSE].caps.per_day == 5
    kinds = {m.kind: m for m in default_multipliers()}
    member_day = kinds[MultiplierKind.MEMBER_DAY]
    assert member_day.day_of_month == 1 and member_day.multiplier_milli == 2000
    assert kinds[MultiplierKind.BIRTHDAY].birthday_window is BirthdayWindow.MONTH
    assert kinds[MultiplierKind.BIRTHDAY].multiplier_milli == 2000


def test_member_day_is_the_shop_local_day() -> None:
    defaults = default_multipliers()
    assert best_multiplier(defaults, Action.PURCHASE, utc("2026-11-30 18:00:00"), SHANGHAI, None)[0] == 2000
    assert best_multiplier(defaults, Action.PURCHASE, utc("2026-11-30 15:59:59"), SHANGHAI, None) == (1000, "")
    assert best_multiplier(defaults, Action.PURCHASE, utc("2026-11-30 15:30:00"), TOKYO, None)[0] == 2000


def test_the_largest_multiplier_applies_and_they_never_compound() -> None:
    campaign = Multiplier("xmas", "×3", MultiplierKind.CAMPAIGN, 3000, start_at=utc("2026-11-30 16:00:00"),
                          end_at=utc("2026-12-01 16:00:00"))
    both_defaults = default_multipliers()
    member_day_and_birthday = utc("2026-12-01 04:00:00")
    assert best_multiplier(both_defaults, Action.PURCHASE, member_day_and_birthday, SHANGHAI, (12, 10))[0] == 2000
    milli, chosen = best_multiplier([*both_defaults, campaign], Action.PURCHASE, member_day_and_birthday, SHANGHAI,
                                    (12, 10))
    assert (milli, chosen) == (3000, "xmas")
    assert best_multiplier([*both_defaults, campaign], Action.PURCHASE, utc("2026-12-01 16:00:00"), SHANGHAI,
                           None)[0] == 1000  # the campaign's end is exclusive; 2 December is no member day


def test_a_multiplier_limited_to_actions() -> None:
    weekday = Multiplier("wed", "Wednesdays", MultiplierKind.MEMBER_DAY, 1500, weekday=3,
                         actions=frozenset({Action.DAILY_SIGN_IN}))
    wednesday = utc("2026-11-25 04:00:00")
    assert best_multiplier([weekday], Action.DAILY_SIGN_IN, wednesday, SHANGHAI, None)[0] == 1500
    assert best_multiplier([weekday], Action.PURCHASE, wednesday, SHANGHAI, None)[0] == 1000


@pytest.mark.parametrize(("day", "birthday", "window", "inside"), [
    (date(2026, 12, 31), (12, 10), BirthdayWindow.MONTH, True),
    (date(2026, 11, 30), (12, 10), BirthdayWindow.MONTH, False),
    (date(2026, 12, 10), (12, 10), BirthdayWindow.DAY, True),
    (date(2026, 12, 11), (12, 10), BirthdayWindow.DAY, False),
    (date(2026, 12, 16), (12, 10), BirthdayWindow.WEEK, True),  # the birthday and the six days after it
    (date(2026, 12, 17), (12, 10), BirthdayWindow.WEEK, False),
    (date(2026, 12, 9), (12, 10), BirthdayWindow.WEEK, False),
    (date(2027, 1, 2), (12, 28), BirthdayWindow.WEEK, True),  # across the new year
    (date(2027, 2, 28), (2, 29), BirthdayWindow.DAY, True),  # 29 February in a common year
])
def test_birthday_windows(day: date, birthday: tuple[int, int], window: BirthdayWindow, inside: bool) -> None:
    assert in_birthday_window(day, birthday, window) is inside


# ----- streaks and clawbacks ----------------------------------------------------------------------


def test_streaks_count_consecutive_days() -> None:
    today = date(2026, 11, 24)
    assert next_streak(None, 0, today) == 1
    assert next_streak(today - timedelta(days=1), 6, today) == 7
    assert next_streak(today - timedelta(days=2), 6, today) == 1


def test_clawbacks_take_back_what_the_remaining_amount_no_longer_earns() -> None:
    assert clawback_points(1234, 123456, 23456, 1, 1000, 1000, 0) == 234
    assert clawback_points(1234, 123456, 23506, 1, 1000, 1000, 234) == 1
    assert clawback_points(1234, 123456, 123456, 1, 1000, 1000, 235) == 999
    assert clawback_points(1000, 50099, 50099, 1, 1000, 2000, 0) == 1000  # at the multiplier it earned with
    assert clawback_points(100, 10050, 40, 1, 1000, 1000, 0) == 0  # 100.10 yuan still earn 100


@given(amount=st.integers(100, 10**8), refunds=st.lists(st.integers(1, 10**7), max_size=6),
       rate=st.sampled_from([1000, 1200, 1500, 2000]), multiplier=st.sampled_from([1000, 2000, 3000]))
def test_clawbacks_add_up_to_what_the_order_earned(amount: int, refunds: list[int], rate: int,
                                                   multiplier: int) -> None:
    earned = purchase_points(amount, 1, rate, multiplier)
    refunded = clawed = 0
    for fen in [*refunds, amount]:
        fen = min(fen, amount - refunded)
        refunded += fen
        taken = clawback_points(earned, amount, refunded, 1, rate, multiplier, clawed)
        assert taken >= 0
        clawed += taken
    assert refunded == amount and clawed == earned
