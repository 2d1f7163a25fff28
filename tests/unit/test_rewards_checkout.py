"""Unit tests of checkout's pricing, without a database: rounding, the proportional spread of cash
off and coupons, never below zero, the best campaign and coupon, holdout determinism and share,
and the enums' twins of the proto."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from loyalty.rewards.v1 import campaigns_pb2 as pb

from services.membership.domain import default_tiers
from services.rewards import reasons
from services.rewards.checkout import (
    DEFAULT_TIER_DISCOUNTS_BP,
    Audience,
    AudienceKind,
    Buyer,
    Campaign,
    CampaignKind,
    CampaignStatus,
    Line,
    WalletCoupon,
    discounted,
    evaluate,
    held_out,
    spread,
)
from services.rewards.domain import CouponState

NOW = datetime(2026, 11, 26, 12, 0)
GOLD = Buyer("m-gold", tier_level=2, tier_discount_bp=9000)


def campaign(campaign_id: str, kind: CampaignKind = CampaignKind.PERCENTAGE_DISCOUNT, **fields: object) -> Campaign:
    values: dict[str, object] = {"name": campaign_id, "start_at": NOW - timedelta(days=1),
                                 "end_at": NOW + timedelta(days=1)}
    return Campaign(shop_id="s", campaign_id=campaign_id, kind=kind, **{**values, **fields})  # type: ignore[arg-type]


def coupon(coupon_id: str, face: int, threshold: int = 0, member_id: str = "m-gold", **fields: object) -> WalletCoupon:
    values: dict[str, object] = {"valid_from": NOW - timedelta(days=1), "valid_until": NOW + timedelta(days=1)}
    return WalletCoupon(coupon_id, member_id, face_value_fen=face, threshold_fen=threshold,
                        **{**values, **fields})  # type: ignore[arg-type]


# ----- rounding and spreading -----------------------------------------------------------------------


def test_a_discounted_price_rounds_down_to_the_fen() -> None:
    assert discounted(999, 9500, 10_000) == 949  # 949.05
    assert discounted(1, 9000, 10_000) == 0  # 0.9 fen: the buyer pays nothing rather than more
    assert discounted(12345, 900, 1000) == 11110  # 11110.5


@pytest.mark.parametrize(("total", "amounts"), [
    (1000, [3333, 3333, 3334]), (1, [1, 1, 1]), (999, [1000, 1, 1]), (5, [0, 7, 0, 3]),
    (10_000 - 1, [2500] * 4), (7, [1, 1, 1, 1, 1, 1, 1, 1]), (123_456, [99_999, 1, 50_000, 7]),
])
def test_spread_sums_exactly_to_the_total_and_no_share_exceeds_its_amount(total: int, amounts: list[int]) -> None:
    shares = spread(total, amounts)
    assert sum(shares) == min(total, sum(amounts))
    assert all(0 <= s <= a for s, a in zip(shares, amounts, strict=True))


def test_spread_is_proportional_with_the_remainder_on_the_last_line() -> None:
    assert spread(1000, [3000, 3000, 3000]) == [333, 333, 334]
    assert spread(1000, [6000, 3000, 1000]) == [600, 300, 100]
    # The last line cannot take the whole remainder: earlier lines take the rest, from the end.
    assert spread(9_999, [2500, 2500, 2500, 2500]) == [2499, 2500, 2500, 2500]
    assert spread(0, [100, 200]) == [0, 0]
    assert spread(500, [0, 0]) == [0, 0]


# ----- the stacking rule ----------------------------------------------------------------------------


def test_tier_then_percentage_then_coupon_with_exact_totals() -> None:
    lines = [Line("A", 2, 5_000), Line("B", 1, 3_333)]
    result = evaluate(GOLD, lines, [campaign("c1", discount_permille=800)], [coupon("cp", 1_000, 9_000)], NOW)

    tier = [r.tier_discount_fen for r in result.lines]
    assert tier == [1_000, 334]  # 10000 → 9000; 3333 → 2999 (2999.7 rounded down)
    assert [r.campaign_discount_fen for r in result.lines] == [1_800, 600]  # 9000 → 7200; 2999 → 2399
    assert result.applied_coupon_id == "cp"
    assert [r.coupon_discount_fen for r in result.lines] == [750, 250]  # 1000 over 7200 and 2399
    assert result.total("total_fen") == 13_333 - 1_334 - 2_400 - 1_000
    assert sum(r.total_fen for r in result.lines) == result.total("total_fen")


def test_cash_off_spreads_over_its_eligible_lines_only() -> None:
    cash = campaign("c1", CampaignKind.CASH_OFF, cash_off_fen=1_000, threshold_fen=5_000, all_items=False,
                    skus=("A", "C"))
    lines = [Line("A", 1, 3_000), Line("B", 1, 9_000), Line("C", 3, 1_000)]
    result = evaluate(Buyer(), lines, [cash], [], NOW)
    assert [r.campaign_discount_fen for r in result.lines] == [500, 0, 500]
    assert result.total("campaign_discount_fen") == 1_000


def test_cash_off_never_takes_more_than_the_lines_are_worth() -> None:
    cash = campaign("c1", CampaignKind.CASH_OFF, cash_off_fen=50_000)
    result = evaluate(Buyer(), [Line("A", 1, 300), Line("B", 1, 1)], [cash], [], NOW)
    assert [r.total_fen for r in result.lines] == [0, 0]
    assert result.total("total_fen") == 0


def test_the_best_campaign_applies_and_the_others_are_outdone() -> None:
    ten_off = campaign("c-percent", discount_permille=900)  # 1000 off 10000
    cash = campaign("c-cash", CampaignKind.CASH_OFF, cash_off_fen=1_500)
    small = campaign("c-small", CampaignKind.CASH_OFF, cash_off_fen=100)
    result = evaluate(Buyer(), [Line("A", 1, 10_000)], [ten_off, cash, small], [], NOW)
    assert result.applied_campaign_id == "c-cash"
    verdicts = {c.campaign_id: (v.reason, v.discount_fen) for c, v in result.campaigns}
    assert verdicts == {"c-cash": ("", 1_500), "c-percent": (reasons.OUTDONE, 1_000),
                        "c-small": (reasons.OUTDONE, 100)}
    assert result.total("campaign_discount_fen") == 1_500


def test_a_tie_goes_to_the_earlier_campaign() -> None:
    result = evaluate(Buyer(), [Line("A", 1, 10_000)],
                      [campaign("c-b", CampaignKind.CASH_OFF, cash_off_fen=1_000),
                       campaign("c-a", discount_permille=900)], [], NOW)
    assert result.applied_campaign_id == "c-a"


def test_why_campaigns_do_not_apply() -> None:
    upcoming = campaign("c-later", start_at=NOW + timedelta(hours=1))
    silver_only = campaign("c-silver", audience=Audience(AudienceKind.TIERS, (1,)))
    other_items = campaign("c-items", all_items=False, skus=("Z",))
    threshold = campaign("c-threshold", CampaignKind.CASH_OFF, cash_off_fen=100, threshold_fen=50_000)
    everyone_out = campaign("c-held", holdout_bp=9_999)
    member = Buyer("m-not-held", tier_level=2, tier_discount_bp=10_000)
    if not held_out("c-held", member.member_id, 9_999):
        member = next(Buyer(f"m{i}", 2, 10_000) for i in range(100) if held_out("c-held", f"m{i}", 9_999))
    result = evaluate(member, [Line("A", 1, 1_000)], [upcoming, silver_only, other_items, threshold, everyone_out],
                      [], NOW)
    assert {c.campaign_id: v.reason for c, v in result.campaigns} == {
        "c-later": reasons.NOT_RUNNING, "c-silver": reasons.NOT_IN_AUDIENCE, "c-items": reasons.NO_ELIGIBLE_ITEMS,
        "c-threshold": reasons.THRESHOLD_NOT_MET, "c-held": reasons.HELD_OUT}
    assert result.total("total_fen") == 1_000


def test_a_buyer_who_is_not_a_member_gets_no_tier_discount_nor_tier_campaigns_nor_coupons() -> None:
    gold_only = campaign("c-gold", audience=Audience(AudienceKind.TIERS, (2,)))
    result = evaluate(Buyer(), [Line("A", 1, 10_000)], [gold_only], [coupon("cp", 100)], NOW)
    assert result.total("tier_discount_fen") == 0
    assert [v.reason for _, v in result.campaigns] == [reasons.NOT_IN_AUDIENCE]
    assert [v.reason for _, v in result.coupons] == [reasons.COUPON_NOT_OWNED]


def test_free_shipping_from_any_running_free_shipping_campaign() -> None:
    free = campaign("c-ship", CampaignKind.FREE_SHIPPING, threshold_fen=9_000)
    assert evaluate(GOLD, [Line("A", 1, 10_000)], [free], [], NOW).free_shipping  # 9000 after the tier
    assert not evaluate(GOLD, [Line("A", 1, 9_999)], [free], [], NOW).free_shipping


# ----- coupons --------------------------------------------------------------------------------------


def test_the_largest_applicable_coupon_applies_and_the_others_say_why_not() -> None:
    coupons = [coupon("cp-small", 500), coupon("cp-big", 2_000), coupon("cp-threshold", 5_000, 20_000),
               coupon("cp-used", 3_000, state=CouponState.USED), coupon("cp-other", 3_000, member_id="m-else"),
               coupon("cp-late", 3_000, valid_until=NOW), coupon("cp-early", 3_000, valid_from=NOW + timedelta(1)),
               WalletCoupon("cp-missing")]
    result = evaluate(GOLD, [Line("A", 1, 10_000)], [], coupons, NOW)  # 9000 after the tier
    assert result.applied_coupon_id == "cp-big"
    assert {c.coupon_id: v.reason for c, v in result.coupons} == {
        "cp-small": reasons.OUTDONE, "cp-big": "", "cp-threshold": reasons.THRESHOLD_NOT_MET,
        "cp-used": reasons.COUPON_ALREADY_USED, "cp-other": reasons.COUPON_NOT_OWNED,
        "cp-late": reasons.COUPON_EXPIRED, "cp-early": reasons.COUPON_NOT_YET_VALID,
        "cp-missing": reasons.COUPON_NOT_FOUND}
    assert result.total("total_fen") == 7_000


def test_a_coupons_threshold_is_judged_after_the_campaign() -> None:
    half = campaign("c-half", discount_permille=500)
    result = evaluate(Buyer("m-gold", 0, 10_000), [Line("A", 1, 10_000)], [half], [coupon("cp", 1_000, 9_900)], NOW)
    assert [v.reason for _, v in result.coupons] == [reasons.THRESHOLD_NOT_MET]
    assert result.total("total_fen") == 5_000


def test_nothing_goes_below_zero() -> None:
    everything = campaign("c", CampaignKind.CASH_OFF, cash_off_fen=10**9)
    lines = [Line("A", 3, 7), Line("B", 1, 0), Line("C", 2, 1)]
    result = evaluate(GOLD, lines, [everything], [coupon("cp", 1)], NOW)
    assert all(r.total_fen >= 0 for r in result.lines)
    assert result.total("total_fen") == 0
    assert [v.reason for _, v in result.coupons] == [reasons.THRESHOLD_NOT_MET]  # nothing left to pay


# ----- holdout --------------------------------------------------------------------------------------


def test_holdout_is_deterministic_and_keeps_out_its_share() -> None:
    ids = [f"mb_{i:06d}" for i in range(10_000)]
    out = [m for m in ids if held_out("cg_campaign", m, 1_000)]
    assert 900 <= len(out) <= 1_100  # 10% within 1 point
    assert out == [m for m in ids if held_out("cg_campaign", m, 1_000)]
    # A larger share keeps out everyone a smaller one did; another campaign other members.
    assert set(out) <= {m for m in ids if held_out("cg_campaign", m, 2_000)}
    assert set(out) != {m for m in ids if held_out("cg_another", m, 1_000)}
    assert not any(held_out("cg_campaign", m, 0) for m in ids[:100])
    assert not held_out("cg_campaign", "", 9_999)


def test_status_follows_the_window() -> None:
    c = campaign("c", start_at=NOW, end_at=NOW + timedelta(hours=1))
    assert c.status(NOW - timedelta(seconds=1)) is CampaignStatus.NOT_STARTED
    assert c.status(NOW) is CampaignStatus.RUNNING
    assert c.status(NOW + timedelta(hours=1)) is CampaignStatus.ENDED


@pytest.mark.parametrize(("enum", "proto", "prefix"), [
    (CampaignKind, pb.CampaignKind, "CAMPAIGN_KIND_"), (AudienceKind, pb.AudienceKind, "AUDIENCE_KIND_"),
    (CampaignStatus, pb.CampaignStatus, "CAMPAIGN_STATUS_"),
])
def test_the_enums_are_twins_of_the_protos(enum: type, proto: object, prefix: str) -> None:
    wire = {name.removeprefix(prefix): value for name, value in proto.items() if value}  # type: ignore[attr-defined]
    assert wire == {member.name: member.value for member in enum}


def test_the_default_ladder_is_memberships() -> None:
    """Rewards prices with it until it hears the shop's own ladder: it must be membership's default."""
    assert {t.level: t.discount_bp for t in default_tiers()} == DEFAULT_TIER_DISCOUNTS_BP
