"""The rewards domain without a database: who may redeem a reward now and why not (judge), when an
issued coupon is valid in the shop's time zone (coupon_window), the shop-local month of monthly
limits, and the IntEnums that mirror the proto enums of loyalty.rewards.v1."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import IntEnum
from zoneinfo import ZoneInfo

import pytest
from loyalty.rewards.v1 import rewards_service_pb2 as pb

from services.rewards import domain, reasons
from services.rewards.domain import (
    CouponSpec,
    GiftClass,
    GiftSpec,
    MemberStanding,
    Reward,
    RewardKind,
    RewardStatus,
    Usage,
    VirtualKind,
    VirtualSpec,
    coupon_window,
    judge,
    month_of,
    spec_from_json,
    spec_to_json,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 5, 20, 4, 0)  # naive UTC: 12:00 in Shanghai
MEMBER = MemberStanding("m_1", tier_level=1)
PROTO_ENUMS = sorted(pb.DESCRIPTOR.enum_types_by_name)


def reward(**fields: object) -> Reward:
    values: dict = {"shop_id": "s", "reward_id": "rw_1", "name": "满99减10", "kind": RewardKind.COUPON,
                    "status": RewardStatus.ACTIVE, "points_price": 100, "stock": 5,
                    "spec": CouponSpec(1000, 9900, valid_days=30), **fields}
    return Reward(**values)


# ----- judge -------------------------------------------------------------------------------------------


def test_an_active_reward_in_stock_is_redeemable_by_a_member() -> None:
    verdict = judge(reward(), MEMBER, Usage(), NOW)
    assert verdict.redeemable and verdict.reasons == ()


@pytest.mark.parametrize(("fields", "member", "usage", "quantity", "expected"), [
    ({"status": RewardStatus.PAUSED}, MEMBER, Usage(), 1, [reasons.NOT_ACTIVE]),
    ({"status": RewardStatus.ARCHIVED}, MEMBER, Usage(), 1, [reasons.NOT_ACTIVE]),
    ({"start_at": NOW + timedelta(seconds=1)}, MEMBER, Usage(), 1, [reasons.NOT_STARTED]),
    ({"end_at": NOW}, MEMBER, Usage(), 1, [reasons.ENDED]),  # the end is exclusive
    ({}, None, Usage(), 1, [reasons.NOT_A_MEMBER]),
    ({}, MemberStanding("m_1", tier_level=4, left=True), Usage(), 1, [reasons.NOT_A_MEMBER]),
    ({"min_tier_level": 2}, MEMBER, Usage(), 1, [reasons.TIER_TOO_LOW]),
    ({"stock": 0}, MEMBER, Usage(), 1, [reasons.OUT_OF_STOCK]),
    ({"stock": 2}, MEMBER, Usage(), 3, [reasons.OUT_OF_STOCK]),
    ({"limit_per_member": 2}, MEMBER, Usage(lifetime=2, this_month=0), 1, [reasons.LIMIT_REACHED]),
    ({"limit_per_member": 2}, MEMBER, Usage(lifetime=1), 2, [reasons.LIMIT_REACHED]),
    ({"monthly_limit_per_member": 1}, MEMBER, Usage(lifetime=5, this_month=1), 1, [reasons.MONTHLY_LIMIT_REACHED]),
    ({"status": RewardStatus.PAUSED, "stock": 0, "min_tier_level": 3}, MEMBER, Usage(), 1,
     [reasons.NOT_ACTIVE, reasons.TIER_TOO_LOW, reasons.OUT_OF_STOCK]),
])
def test_every_reason_a_reward_cannot_be_redeemed_is_given(fields: dict, member: MemberStanding | None,
                                                             usage: Usage, quantity: int, expected: list[str]) -> None:
    verdict = judge(reward(**fields), member, usage, NOW, quantity)
    assert not verdict.redeemable and list(verdict.reasons) == expected


@pytest.mark.parametrize(("fields", "usage"), [
    ({"unlimited_stock": True, "stock": 0}, Usage()),
    ({"min_tier_level": 1}, Usage()),
    ({"start_at": NOW, "end_at": NOW + timedelta(seconds=1)}, Usage()),
    ({"limit_per_member": 2, "monthly_limit_per_member": 1}, Usage(lifetime=1, this_month=0)),
    ({"limit_per_member": 0, "monthly_limit_per_member": 0}, Usage(lifetime=1000, this_month=1000)),
])
def test_what_is_within_the_rules_is_redeemable(fields: dict, usage: Usage) -> None:
    assert judge(reward(**fields), MEMBER, usage, NOW).redeemable


# ----- coupon validity ------------------------------------------------------------------------------------


def local(text: str) -> datetime:
    """A Shanghai wall-clock time as naive UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


def test_valid_days_one_means_through_the_end_of_today_in_the_shops_zone() -> None:
    issued = local("2026-05-20T23:30:00")
    assert coupon_window(CouponSpec(1000, valid_days=1), issued, SHANGHAI) == (issued, local("2026-05-21T00:00:00"))


def test_valid_days_count_local_days_not_utc_days() -> None:
    issued = local("2026-05-21T01:00:00")  # still 2026-05-20 in UTC
    _, until = coupon_window(CouponSpec(1000, valid_days=3), issued, SHANGHAI)
    assert until == local("2026-05-24T00:00:00")


def test_valid_days_follow_the_zone_they_are_given() -> None:
    new_york = ZoneInfo("America/New_York")
    issued = datetime(2026, 5, 20, 3, 0)  # 23:00 on the 19th in New York
    _, until = coupon_window(CouponSpec(1000, valid_days=1), issued, new_york)
    assert until == datetime(2026, 5, 20, 4, 0)  # New York's midnight of the 20th, in UTC


def test_a_fixed_window_is_the_specs_own() -> None:
    start, end = datetime(2026, 6, 1), datetime(2026, 6, 30)
    assert coupon_window(CouponSpec(1000, valid_from=start, valid_until=end), NOW, SHANGHAI) == (start, end)
    assert coupon_window(CouponSpec(1000, valid_until=end), NOW, SHANGHAI) == (NOW, end)


def test_the_month_of_monthly_limits_is_the_shops() -> None:
    assert month_of(datetime(2026, 5, 31, 17, 0), SHANGHAI) == "2026-06"  # 01:00 on 1 June in Shanghai
    assert month_of(datetime(2026, 5, 31, 15, 59), SHANGHAI) == "2026-05"


# ----- specs as stored ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "spec"), [
    (RewardKind.COUPON, CouponSpec(1000, 9900, valid_days=30)),
    (RewardKind.COUPON, CouponSpec(500, 0, datetime(2026, 6, 1), datetime(2026, 7, 1, 12, 30))),
    (RewardKind.GIFT, GiftSpec(GiftClass.HIGH_VALUE, True)),
    (RewardKind.VIRTUAL, VirtualSpec(VirtualKind.STORED_VALUE, 10000, 1000)),
    (RewardKind.VIRTUAL, VirtualSpec(VirtualKind.DISCOUNT_CARD, discount_permille=900, valid_days=365)),
])
def test_a_spec_reads_back_as_it_was_stored(kind: RewardKind, spec: object) -> None:
    assert spec_from_json(kind, spec_to_json(spec)) == spec  # type: ignore[arg-type]


# ----- the enums mirror the protos -----------------------------------------------------------------------


@pytest.mark.parametrize("name", PROTO_ENUMS)
def test_each_proto_enum_has_a_domain_twin_with_the_same_names_and_numbers(name: str) -> None:
    twin = getattr(domain, name, None)
    assert isinstance(twin, type) and issubclass(twin, IntEnum), f"services.rewards.domain.{name} is missing"
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper() + "_"
    wire = {value.name.removeprefix(prefix): value.number
            for value in pb.DESCRIPTOR.enum_types_by_name[name].values if value.number != 0}
    assert {member.name: member.value for member in twin} == wire


def test_every_refusal_points_can_give_a_redemption_is_declared_by_rewards() -> None:
    """A redemption's failure_reason passes points' refusals on: rewards declares each of them."""
    from services.points import reasons as points_reasons
    from services.rewards import reasons as rewards_reasons

    refusals = {points_reasons.INSUFFICIENT_POINTS, points_reasons.ACCOUNT_CLOSED, points_reasons.HOLD_EXPIRED,
                points_reasons.HOLD_NOT_FOUND, points_reasons.HOLD_RELEASED, points_reasons.MEMBER_NOT_FOUND}
    assert refusals == rewards_reasons.FROM_POINTS
