"""The points account aggregate and the earning rules around it (services/points/domain):
debt-first crediting, which lots a spend takes, sign-ins, caps and the referral reward. Pure: no I/O."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.kit.errors import FailedPrecondition
from services.points.domain import (
    Account,
    Action,
    Caps,
    EarnRule,
    Lot,
    cap_periods,
    cap_refusal,
    lots_to_take,
    referral_points,
)

NOW = datetime(2026, 11, 26, 4, 0)


def account(available: int = 0, debt: int = 0, **fields: Any) -> Account:
    values = {"shop_id": "s", "member_id": "m", "closed": False, "available": available, "held": 0, "debt": debt,
              "lifetime_earned": 0, "birth_month": None, "birth_day": None, "referrer_member_id": None,
              "last_sign_in_day": None, "sign_in_streak": 0, **fields}
    return Account(**values)


def days(n: int) -> datetime:
    return NOW + timedelta(days=n)


# ----- crediting and debts ---------------------------------------------------------------------------


def test_a_credit_without_debt_goes_into_a_new_lot_whole() -> None:
    acct = account(available=10)
    assert acct.credit(30) == 30
    assert (acct.available, acct.debt) == (40, 0)
    assert "available" in acct.dirty and "debt" not in acct.dirty


def test_a_debt_is_paid_before_anything_goes_into_a_lot() -> None:
    acct = account(available=-500, debt=500)
    assert acct.credit(300) == 0
    assert (acct.available, acct.debt) == (-200, 200)
    assert acct.credit(250) == 50
    assert (acct.available, acct.debt) == (50, 0)


@given(debt=st.integers(0, 10**6), credits=st.lists(st.integers(1, 10**6), max_size=10))
def test_what_goes_into_lots_is_what_exceeds_the_debt(debt: int, credits: list[int]) -> None:
    acct = account(available=-debt, debt=debt)
    into_lots = sum(acct.credit(points) for points in credits)
    assert into_lots == max(0, sum(credits) - debt)
    assert acct.debt == max(0, debt - sum(credits))
    assert acct.available == sum(credits) - debt == into_lots - acct.debt


def test_a_clawback_beyond_the_lots_is_owed() -> None:
    acct = account(available=100)
    acct.move(-600)
    acct.owe(500)
    assert (acct.available, acct.debt) == (-500, 500)


def test_a_spend_beyond_the_balance_is_refused_with_the_shortfall() -> None:
    acct = account(available=100)
    acct.require_spendable(100)
    with pytest.raises(FailedPrecondition) as refused:
        acct.require_spendable(130)
    assert refused.value.reason == "INSUFFICIENT_POINTS"
    assert refused.value.metadata == {"available": "100", "requested": "130", "shortfall": "30"}


def test_a_closed_account_refuses_and_forgets_the_birthday() -> None:
    acct = account(birth_month=5, birth_day=6)
    assert acct.birthday == (5, 6)
    acct.refuse_if_closed()
    acct.close()
    assert acct.closed and acct.birthday is None
    with pytest.raises(FailedPrecondition) as refused:
        acct.refuse_if_closed()
    assert refused.value.reason == "ACCOUNT_CLOSED"


# ----- which lots a spend takes -----------------------------------------------------------------------


def test_a_spend_takes_the_earliest_expiring_lots_first_and_never_expiring_ones_last() -> None:
    lots = [Lot(1, 50, None), Lot(2, 30, days(200)), Lot(3, 20, days(10)), Lot(4, 40, days(10))]
    assert lots_to_take(lots, 70, NOW) == ([(3, 20), (4, 40), (2, 10)], 0)
    assert lots_to_take(lots, 130, NOW) == ([(3, 20), (4, 40), (2, 30), (1, 40)], 0)


def test_expired_and_empty_lots_give_nothing_and_the_rest_is_uncovered() -> None:
    lots = [Lot(1, 80, days(-1)), Lot(2, 0, days(5)), Lot(3, 10, NOW), Lot(4, 25, days(5))]
    assert lots_to_take(lots, 40, NOW) == ([(4, 25)], 15)


def test_a_refund_takes_its_own_orders_lot_before_any() -> None:
    lots = [Lot(1, 10, days(1), "o-1"), Lot(2, 10, days(300), "o-2"), Lot(3, 10, None, "o-2")]
    assert lots_to_take(lots, 25, NOW, prefer_order="o-2") == ([(2, 10), (3, 10), (1, 5)], 0)


@given(remaining=st.lists(st.integers(0, 100), max_size=8), offsets=st.lists(st.integers(-5, 50), max_size=8),
       points=st.integers(1, 1000))
def test_lots_taken_never_exceed_what_is_live(remaining: list[int], offsets: list[int], points: int) -> None:
    lots = [Lot(i, r, days(o)) for i, (r, o) in enumerate(zip(remaining, offsets, strict=False))]
    live = {lot.lot_id: lot.remaining for lot in lots if lot.live(NOW)}
    taken, uncovered = lots_to_take(lots, points, NOW)
    assert all(0 < amount <= live[lot_id] for lot_id, amount in taken)
    assert sum(amount for _, amount in taken) + uncovered == points
    assert uncovered == max(0, points - sum(live.values()))


# ----- sign-ins ------------------------------------------------------------------------------------------


def test_a_sign_in_earns_once_a_day_and_never_before_the_last_one() -> None:
    acct = account()
    assert acct.judge_sign_in(date(2026, 11, 20)) == ("", 1)
    acct.sign_in(date(2026, 11, 20), 1)
    assert acct.judge_sign_in(date(2026, 11, 20)) == ("ALREADY_SIGNED_IN_TODAY", 1)
    assert acct.judge_sign_in(date(2026, 11, 18)) == ("SIGN_IN_BEFORE_LAST", 1)
    assert acct.judge_sign_in(date(2026, 11, 21)) == ("", 2)
    assert acct.judge_sign_in(date(2026, 11, 23)) == ("", 1)


# ----- caps and the referral reward ---------------------------------------------------------------------


def test_caps_count_occurrences_per_day_month_and_lifetime() -> None:
    day = date(2026, 11, 26)
    d, m, life = cap_periods(day)
    share = EarnRule(Action.SHARE, 5, caps=Caps(per_day=3, per_month=10, lifetime=20))
    assert cap_refusal(share, {}, day) == ""
    assert cap_refusal(share, {d: 3, m: 3, life: 3}, day) == "DAILY_CAP_REACHED"
    assert cap_refusal(share, {d: 1, m: 10, life: 10}, day) == "MONTHLY_CAP_REACHED"
    assert cap_refusal(share, {d: 0, m: 0, life: 20}, day) == "LIFETIME_CAP_REACHED"
    assert cap_refusal(EarnRule(Action.FOLLOW_SHOP, 20), {life: 1}, day) == "ALREADY_EARNED"
    assert cap_refusal(EarnRule(Action.REVIEW, 10), {}, day, subject_earned=True) == "ALREADY_EARNED"
    assert cap_refusal(EarnRule(Action.BROWSE, 1), {d: 99, m: 99, life: 99}, day) == ""  # 0 means no cap


def test_the_referral_reward_is_the_rules_points_or_the_whole_yuan_of_a_first_purchase() -> None:
    rule = EarnRule(Action.REFERRAL, 0)
    assert referral_points(rule, first_order=True, has_referrer=True, amount_fen=30050) == 300
    assert referral_points(EarnRule(Action.REFERRAL, 88), first_order=True, has_referrer=True, amount_fen=1) == 88
    assert referral_points(rule, first_order=False, has_referrer=True, amount_fen=30050) is None
    assert referral_points(rule, first_order=True, has_referrer=False, amount_fen=30050) is None
    assert referral_points(None, first_order=True, has_referrer=True, amount_fen=30050) is None
    assert referral_points(EarnRule(Action.REFERRAL, 0, enabled=False), first_order=True, has_referrer=True,
                           amount_fen=30050) is None
    minimum = EarnRule(Action.REFERRAL, 50, min_order_fen=10_000)
    assert referral_points(minimum, first_order=True, has_referrer=True, amount_fen=9_999) is None
    assert referral_points(minimum, first_order=True, has_referrer=True, amount_fen=10_000) == 50
