"""The limits of a shop's points program, earn rules and multipliers, and partial updates of
them (services/points/domain/rules.py); and the commands' checks of what a caller sends. Pure."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from services.kit.errors import InvalidArgument
from services.kit.timeutil import utcnow
from services.points import commands
from services.points.domain import (
    Action,
    Caps,
    EarnRule,
    ExpiryPolicy,
    LeavePolicy,
    Multiplier,
    MultiplierKind,
    Source,
    default_program,
    starting_rule,
)


def fields_of(call: Callable[[], object]) -> set[str]:
    """The fields a refused call names."""
    with pytest.raises(InvalidArgument) as refused:
        call()
    return {field for field, _ in refused.value.violations}


# ----- the program ----------------------------------------------------------------------------------------


def test_a_program_update_changes_only_what_it_names() -> None:
    program = default_program("s", "Asia/Tokyo")
    updated = program.updated({"expiry_policy": ExpiryPolicy.ROLLING_MONTHS, "expiry_months": 6})
    assert updated.expiry_months == 6
    assert updated == program.updated({"expiry_months": 6})
    assert (updated.points_per_yuan, updated.leave_policy, updated.time_zone) == (100, LeavePolicy.FORFEIT,
                                                                                   "Asia/Tokyo")


def test_program_limits() -> None:
    program = default_program("s")
    assert fields_of(lambda: program.updated({"expiry_months": 0})) == {"program.expiry_months"}
    assert program.updated({"expiry_policy": ExpiryPolicy.NEVER, "expiry_months": 0}).expiry_months == 0
    assert fields_of(lambda: program.updated({"points_per_yuan": 0, "daily_pool_points": -1,
                                              "default_hold_ttl_seconds": 7 * 86400 + 1})) == {
        "program.points_per_yuan", "program.daily_pool_points", "program.default_hold_ttl_seconds"}


# ----- earn rules --------------------------------------------------------------------------------------------


def test_a_rule_update_changes_only_what_it_names_caps_field_by_field() -> None:
    share = starting_rule(Action.SHARE)
    assert share == EarnRule(Action.SHARE, 5, caps=Caps(per_day=3))
    assert share.updated({"points": 8}) == EarnRule(Action.SHARE, 8, caps=Caps(per_day=3))
    assert share.updated({"caps.lifetime": 9}).caps == Caps(per_day=3, lifetime=9)
    assert share.updated({"caps": Caps(per_month=2)}).caps == Caps(per_month=2)
    assert starting_rule(Action.DAILY_POOL) == EarnRule(Action.DAILY_POOL, 0)


def test_rule_limits() -> None:
    share = starting_rule(Action.SHARE)
    assert fields_of(lambda: share.updated({"points": 1_000_001, "streak_days": -1, "streak_bonus": -1,
                                            "min_order_fen": -1, "caps.per_day": -1})) == {
        "rule.points", "rule.streak_days", "rule.streak_bonus", "rule.min_order_fen", "rule.caps.per_day"}
    assert fields_of(lambda: starting_rule(Action.DAILY_POOL).updated({})) == {"rule.action"}


# ----- multipliers ----------------------------------------------------------------------------------------------


def test_multiplier_limits() -> None:
    Multiplier("", "会员日", MultiplierKind.MEMBER_DAY, 1500, weekday=3).check()
    start = datetime(2027, 1, 1)
    Multiplier("", "元旦", MultiplierKind.CAMPAIGN, 3000, start_at=start, end_at=start + timedelta(days=1)).check()
    assert fields_of(Multiplier("", "", MultiplierKind.BIRTHDAY, 1000).check) == {
        "multiplier.name", "multiplier.multiplier_milli"}
    assert fields_of(Multiplier("", "x", MultiplierKind.MEMBER_DAY, 2000, day_of_month=1, weekday=1).check) == {
        "multiplier.day_of_month"}
    assert fields_of(Multiplier("", "x", MultiplierKind.CAMPAIGN, 2000, start_at=start, end_at=start).check) == {
        "multiplier.end_time"}


# ----- what callers send -------------------------------------------------------------------------------------------


def test_commands_check_ids_points_and_sources() -> None:
    assert fields_of(lambda: commands.Spend("", "m 1", 0, Source(reference="r" * 65))) == {
        "shop_id", "member_id", "points", "source.reference"}
    assert fields_of(lambda: commands.Hold("s", "m", 1, -1, Source())) == {"ttl_seconds"}
    assert fields_of(lambda: commands.Adjust("s", "m", 0, " ", "")) == {"points", "operator", "reason"}
    assert fields_of(lambda: commands.CaptureHold("s", "")) == {"hold_id"}
    assert fields_of(lambda: commands.SettlePool("s", "2026-02-30")) == {"day"}
    assert fields_of(lambda: commands.ExpiringQuery("s", 0, 10)) == {"within_days"}
    commands.SettlePool("s", "2026-02-28")


def test_an_action_is_recorded_within_the_last_31_days_with_its_subject() -> None:
    now = utcnow()
    assert fields_of(lambda: commands.RecordAction("s", "m", Action.REVIEW, "", now)) == {"subject"}
    assert fields_of(lambda: commands.RecordAction("s", "m", Action.PURCHASE, "", now)) == {"action"}
    assert fields_of(lambda: commands.RecordAction("s", "m", Action.SHARE, "", now - timedelta(days=32))) == {
        "occur_time"}
    assert fields_of(lambda: commands.RecordAction("s", "m", Action.SHARE, "", now + timedelta(hours=1))) == {
        "occur_time"}
    commands.RecordAction("s", "m", Action.SHARE, "", now - timedelta(days=30))
