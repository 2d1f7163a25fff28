"""The facts and groups of segments' second round through gRPC on both backends, over facts made
for real (membership joins, profiles, orders with lines and promotions; points' share actions):
gender, region and shares as facts (read from membership once, cleared on leaving); rules on
units, promotion share, categories bought, shares, gender and region; the groups promotion-
sensitive (活动敏感), spreaders (高传播), purchasing power low / high (购买力), following the
shop's settings; a segment name taken is ALREADY_EXISTS, also when two operators race for it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.points.v1 import points_service_pb2 as pp
from loyalty.segments.v1 import rules_pb2 as rpb
from loyalty.segments.v1 import segments_service_pb2 as spb

from tests.conftest import ServiceUnderTest, Shop, failure_of
from tests.integration.test_membership import YUAN, buy, rid
from tests.support.builders import eventually, join_member, points_shop
from tests.support.segments import facts_when, segments_api
from tests.support.services import Authed

NEW_GROUPS = {"predefined.promotion_sensitive": "活动敏感会员", "predefined.spreaders": "高传播会员",
              "predefined.purchasing_power_low": "购买力低会员", "predefined.purchasing_power_high": "购买力高会员"}


@pytest.fixture
def segments(suite: dict[str, ServiceUnderTest]) -> ServiceUnderTest:
    return suite["segments"]


def cond(fact: int, op: int, *values: int, texts: tuple[str, ...] = (), window_days: int = 0) -> rpb.Rule:
    return rpb.Rule(condition=rpb.Condition(fact=fact, op=op, values=list(values), texts=list(texts),
                                            window_days=window_days))


def selected(api: Authed, shop: Shop, rule: rpb.Rule) -> list[str]:
    """The members a rule selects now (sorted), by PreviewSegment."""
    return list(api.PreviewSegment(spb.PreviewSegmentRequest(shop_id=shop.shop_id, rule=rule,
                                                             sample_size=100)).sample_member_ids)


def members_of(api: Authed, shop: Shop, segment_id: str) -> list[str]:
    return [m.member_id for m in api.ListSegmentMembers(spb.ListSegmentMembersRequest(
        shop_id=shop.shop_id, segment_id=segment_id))]


def order(shop: Shop, buyer: str, fen: int, lines: list[mpb.OrderLine] = (), *, coupon: bool = False,
          campaign: bool = False) -> None:
    """A completed order with its lines and promotions."""
    order_id = "o-" + rid()[:12]
    shop.api.RecordOrder(mpb.RecordOrderRequest(shop_id=shop.shop_id, order_id=order_id, buyer_id=buyer, amount_fen=fen,
                                                lines=list(lines), coupon_applied=coupon, campaign_applied=campaign))
    shop.api.CompleteOrder(mpb.CompleteOrderRequest(shop_id=shop.shop_id, order_id=order_id))


def share(points: ServiceUnderTest, shop: Shop, member_id: str, times: int = 1) -> None:
    """The member shares (分享) `times` times, as the storefront reports it to points."""
    ps = points_shop(points, shop)
    eventually(lambda: ps.api.GetBalance(pp.GetBalanceRequest(shop_id=shop.shop_id, member_id=member_id)),
               "points opened the account", timeout=30)
    for _ in range(times):
        ps.api.RecordAction(pp.RecordActionRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member_id,
                                                   action=pp.ACTION_SHARE, subject="share-" + rid()[:8]))


def settings_update(api: Authed, shop: Shop, **values: int) -> spb.GroupSettings:
    return api.UpdateGroupSettings(spb.UpdateGroupSettingsRequest(
        request_id=rid(), shop_id=shop.shop_id, settings=spb.GroupSettings(**values),
        update_mask=FieldMask(paths=list(values))))


def refusal(call: object, request: object) -> object:
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    return failure_of(caught.value)


def test_gender_region_and_shares_are_facts_rules_select_on(segments: ServiceUnderTest, points: ServiceUnderTest,
                                                             shop: Shop) -> None:
    api = segments_api(segments, shop)
    her = shop.api.JoinMember(mpb.JoinMemberRequest(
        request_id=rid(), shop_id=shop.shop_id, buyer_id="b-her", join_channel=mpb.JOIN_CHANNEL_HOME_PAGE_MODULE,
        profile=mpb.Profile(gender=mpb.GENDER_FEMALE, region="浙江"),
        consent_fields=[mpb.PROFILE_FIELD_GENDER, mpb.PROFILE_FIELD_REGION])).member_id
    him = join_member(shop, "b-him")
    joined = facts_when(api, shop, her, lambda f: f.member_id, "segments heard of her")
    assert (joined.gender, joined.region, joined.shares) == (mpb.GENDER_FEMALE, "浙江", 0)
    facts_when(api, shop, him, lambda f: f.member_id, "segments heard of him")
    shop.api.UpdateProfile(mpb.UpdateProfileRequest(
        request_id=rid(), shop_id=shop.shop_id, member_id=him,
        profile=mpb.Profile(gender=mpb.GENDER_MALE, region="上海"), update_mask=FieldMask(paths=["gender", "region"]),
        consent_fields=[mpb.PROFILE_FIELD_GENDER, mpb.PROFILE_FIELD_REGION]))
    share(points, shop, him, times=2)
    seen = facts_when(api, shop, him, lambda f: f.shares == 2 and f.region == "上海", "the profile and shares arrived")
    assert seen.gender == mpb.GENDER_MALE and seen.HasField("last_activity_time")

    gender, region = rpb.FACT_GENDER, rpb.FACT_REGION
    assert selected(api, shop, cond(gender, rpb.OPERATOR_EQ, mpb.GENDER_FEMALE)) == [her]
    assert selected(api, shop, cond(gender, rpb.OPERATOR_NE, mpb.GENDER_FEMALE)) == [him]
    assert selected(api, shop, cond(region, rpb.OPERATOR_IN, texts=("浙江", "上海"))) == sorted([her, him])
    assert selected(api, shop, cond(region, rpb.OPERATOR_NE, texts=("浙江",))) == [him]
    assert selected(api, shop, cond(rpb.FACT_SHARES, rpb.OPERATOR_GE, 2)) == [him]
    assert selected(api, shop, cond(rpb.FACT_SHARES, rpb.OPERATOR_EQ, 0)) == [her]

    shop.api.LeaveMember(mpb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=her))
    left = facts_when(api, shop, her, lambda f: f.left, "the leave reached segments")
    assert (left.gender, left.region) == (0, "")
    assert selected(api, shop, cond(region, rpb.OPERATOR_IN, texts=("浙江", "上海"))) == [him]


def test_units_promotion_share_and_categories_bought_select_members(segments: ServiceUnderTest,
                                                                     shop: Shop) -> None:
    api = segments_api(segments, shop)
    lace_fan, sock_buyer, never = join_member(shop, "b-lace"), join_member(shop, "b-socks"), join_member(shop)
    order(shop, "b-lace", 90 * YUAN, [mpb.OrderLine(category_id="lace", quantity=2, amount_fen=90 * YUAN)],
          coupon=True)
    order(shop, "b-socks", 30 * YUAN, [mpb.OrderLine(category_id="socks", quantity=1, amount_fen=30 * YUAN)])
    order(shop, "b-socks", 20 * YUAN, campaign=True)
    facts_when(api, shop, lace_fan, lambda f: f.trades == 1, "the lace order reached segments")
    facts_when(api, shop, sock_buyer, lambda f: f.trades == 2, "the sock orders reached segments")
    facts_when(api, shop, never, lambda f: f.member_id, "segments heard of the member who never bought")

    units, share_ = rpb.FACT_UNITS, rpb.FACT_PROMOTED_SHARE_PERCENT
    assert selected(api, shop, cond(units, rpb.OPERATOR_GE, 2, window_days=30)) == [lace_fan]
    assert selected(api, shop, cond(units, rpb.OPERATOR_EQ, 1)) == [sock_buyer]
    assert selected(api, shop, cond(share_, rpb.OPERATOR_GE, 50, window_days=30)) == sorted([lace_fan, sock_buyer])
    assert selected(api, shop, cond(share_, rpb.OPERATOR_EQ, 100)) == [lace_fan]
    # No trade, no promotion share: not even "below 50 %" holds for the member who never bought.
    assert selected(api, shop, cond(share_, rpb.OPERATOR_LT, 60, window_days=365)) == [sock_buyer]
    category = rpb.FACT_CATEGORY
    assert selected(api, shop, cond(category, rpb.OPERATOR_IN, texts=("lace",), window_days=7)) == [lace_fan]
    assert selected(api, shop, cond(category, rpb.OPERATOR_IN, texts=("socks", "shoes"))) == [sock_buyer]
    assert selected(api, shop, cond(category, rpb.OPERATOR_IN, texts=("shoes",))) == []

    wrong = [cond(category, rpb.OPERATOR_EQ, texts=("lace",)), cond(category, rpb.OPERATOR_IN),
             cond(rpb.FACT_GENDER, rpb.OPERATOR_EQ, 7), cond(rpb.FACT_REGION, rpb.OPERATOR_IN, 1, texts=("浙江",))]
    bad = refusal(api.PreviewSegment, spb.PreviewSegmentRequest(shop_id=shop.shop_id,
                                                                rule=rpb.Rule(all=rpb.RuleGroup(rules=wrong))))
    assert bad.code is grpc.StatusCode.INVALID_ARGUMENT
    assert set(bad.fields) == {"rule.all.rules[0].condition.op", "rule.all.rules[1].condition.texts",
                               "rule.all.rules[2].condition.values", "rule.all.rules[3].condition.values"}


def test_promotion_sensitive_spreaders_and_purchasing_power_follow_facts_and_settings(
        segments: ServiceUnderTest, points: ServiceUnderTest, shop: Shop) -> None:
    api = segments_api(segments, shop)
    defaults = api.GetGroupSettings(spb.GetGroupSettingsRequest(shop_id=shop.shop_id))
    assert (defaults.promotion_sensitive_window_days, defaults.promotion_sensitive_min_trades,
            defaults.promotion_sensitive_min_share_percent, defaults.spreaders_min_actions,
            defaults.purchasing_power_window_days, defaults.purchasing_power_low_max_average_order_fen,
            defaults.purchasing_power_high_min_average_order_fen) == (365, 2, 50, 5, 365, 10000, 50000)
    listed = {s.segment_id: s for s in api.ListSegments(spb.ListSegmentsRequest(
        shop_id=shop.shop_id, page_size=50)).segments}
    assert {i: listed[i].name for i in NEW_GROUPS} == NEW_GROUPS
    assert all(listed[i].predefined for i in NEW_GROUPS)
    assert listed["predefined.spreaders"].group == rpb.PREDEFINED_GROUP_SPREADERS

    promo = join_member(shop, "b-promo")  # two coupon orders of 60 yuan: promotion-sensitive, low power
    big = join_member(shop, "b-big")  # one order of 600 yuan, no promotion: high power
    referrer = join_member(shop, "b-referrer")  # refers one member and shares once
    referred = shop.api.JoinMember(mpb.JoinMemberRequest(
        request_id=rid(), shop_id=shop.shop_id, buyer_id="b-referred", referrer_member_id=referrer,
        join_channel=mpb.JOIN_CHANNEL_REFERRAL_LINK)).member_id
    order(shop, "b-promo", 60 * YUAN, coupon=True)
    order(shop, "b-promo", 60 * YUAN, campaign=True)
    buy(shop, "b-big", 600 * YUAN)
    share(points, shop, referrer)
    facts_when(api, shop, promo, lambda f: f.trades == 2, "the promoted orders reached segments")
    facts_when(api, shop, big, lambda f: f.trades == 1, "the big order reached segments")
    facts_when(api, shop, referrer, lambda f: f.shares == 1 and f.referrals == 1, "the share and referral arrived")
    facts_when(api, shop, referred, lambda f: f.member_id, "segments heard of the referred member")

    assert members_of(api, shop, "predefined.promotion_sensitive") == [promo]
    assert members_of(api, shop, "predefined.purchasing_power_low") == [promo]
    assert members_of(api, shop, "predefined.purchasing_power_high") == [big]
    assert members_of(api, shop, "predefined.spreaders") == []

    changed = settings_update(api, shop, spreaders_min_actions=2, promotion_sensitive_min_share_percent=100)
    assert (changed.spreaders_min_actions, changed.promotion_sensitive_min_share_percent) == (2, 100)
    assert members_of(api, shop, "predefined.spreaders") == [referrer]
    assert members_of(api, shop, "predefined.promotion_sensitive") == [promo]
    settings_update(api, shop, promotion_sensitive_min_trades=3)
    assert members_of(api, shop, "predefined.promotion_sensitive") == []

    # Low must stay below high: moving only "high" under "low" is refused, moving both is not.
    bad = refusal(api.UpdateGroupSettings, spb.UpdateGroupSettingsRequest(
        request_id=rid(), shop_id=shop.shop_id, settings=spb.GroupSettings(
            purchasing_power_high_min_average_order_fen=50 * YUAN),
        update_mask=FieldMask(paths=["purchasing_power_high_min_average_order_fen"])))
    assert bad.code is grpc.StatusCode.INVALID_ARGUMENT
    assert set(bad.fields) == {"settings.purchasing_power_low_max_average_order_fen"}
    settings_update(api, shop, purchasing_power_low_max_average_order_fen=30 * YUAN,
                    purchasing_power_high_min_average_order_fen=50 * YUAN)
    assert members_of(api, shop, "predefined.purchasing_power_high") == sorted([promo, big])
    assert members_of(api, shop, "predefined.purchasing_power_low") == []
    got = api.GetSegment(spb.GetSegmentRequest(shop_id=shop.shop_id, segment_id="predefined.purchasing_power_high"))
    assert (got.rule.condition.values, got.rule.condition.window_days) == ([50 * YUAN], 365)
    assert "50元" in got.description
    bad = refusal(api.UpdateGroupSettings, spb.UpdateGroupSettingsRequest(
        request_id=rid(), shop_id=shop.shop_id, settings=spb.GroupSettings(
            promotion_sensitive_min_share_percent=101, spreaders_min_actions=0),
        update_mask=FieldMask(paths=["promotion_sensitive_min_share_percent", "spreaders_min_actions"])))
    assert set(bad.fields) == {"settings.promotion_sensitive_min_share_percent", "settings.spreaders_min_actions"}


def test_a_segment_name_is_taken_once_per_shop_even_under_a_race(segments: ServiceUnderTest, shop: Shop) -> None:
    api = segments_api(segments, shop)
    rule = cond(rpb.FACT_TRADES, rpb.OPERATOR_GE, 1)

    def create(name: str) -> spb.Segment:
        return api.CreateSegment(spb.CreateSegmentRequest(request_id=rid(), shop_id=shop.shop_id,
                                                          segment=spb.Segment(name=name, rule=rule)))

    create("老客")
    other = create("新客")
    taken = refusal(create, "老客")
    assert (taken.code, taken.reason, taken.metadata["field"]) == (
        grpc.StatusCode.ALREADY_EXISTS, "SEGMENT_NAME_TAKEN", "segment.name")
    renamed = refusal(api.UpdateSegment, spb.UpdateSegmentRequest(
        request_id=rid(), shop_id=shop.shop_id, segment=spb.Segment(segment_id=other.segment_id, name="老客"),
        update_mask=FieldMask(paths=["name"])))
    assert (renamed.code, renamed.reason) == (grpc.StatusCode.ALREADY_EXISTS, "SEGMENT_NAME_TAKEN")

    def attempt(_: int) -> str:
        try:
            create("回头客")
            return "created"
        except grpc.RpcError as exc:
            return failure_of(exc).reason

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = sorted(pool.map(attempt, range(4)))
    assert outcomes == ["SEGMENT_NAME_TAKEN"] * 3 + ["created"]
