"""The documents' predefined groups through gRPC on both backends: listed first under their
`predefined.<group>` ids, read-only, following the members' facts as they change (a member who
completes an order enters the repurchase window and leaves the new members to activate), and
following each shop's own settings."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from loyalty.segments.v1 import rules_pb2 as rpb
from loyalty.segments.v1 import segments_service_pb2 as spb

from tests.conftest import ServiceUnderTest, Shop, create_shop, failure_of
from tests.integration.test_membership import YUAN, buy, rid
from tests.support.builders import eventually, join_member
from tests.support.segments import facts_when, segments_api
from tests.support.services import Authed

GROUPS = ["predefined.high_potential", "predefined.high_contribution", "predefined.new_to_activate",
          "predefined.repurchase_window", "predefined.high_quality", "predefined.lost_high_quality",
          "predefined.churn_risk", "predefined.promotion_sensitive", "predefined.spreaders",
          "predefined.purchasing_power_low", "predefined.purchasing_power_high"]


@pytest.fixture
def segments(suite: dict[str, ServiceUnderTest]) -> ServiceUnderTest:
    return suite["segments"]


def members_of(api: Authed, shop: Shop, segment_id: str) -> list[str]:
    return [m.member_id for m in api.ListSegmentMembers(spb.ListSegmentMembersRequest(
        shop_id=shop.shop_id, segment_id=segment_id))]


def failure(call: object, request: object) -> object:
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    return failure_of(caught.value)


def test_the_groups_come_first_and_are_read_only(segments: ServiceUnderTest, shop: Shop) -> None:
    api = segments_api(segments, shop)
    saved = api.CreateSegment(spb.CreateSegmentRequest(request_id=rid(), shop_id=shop.shop_id, segment=spb.Segment(
        name="一级会员", rule=rpb.Rule(condition=rpb.Condition(fact=rpb.FACT_TIER_LEVEL, op=rpb.OPERATOR_EQ,
                                                               values=[1])))))
    pages, token = [], ""
    while True:
        page = api.ListSegments(spb.ListSegmentsRequest(shop_id=shop.shop_id, page_size=3, page_token=token))
        pages.append([s.segment_id for s in page.segments])
        token = page.next_page_token
        if not token:
            break
    assert [i for p in pages for i in p] == [*GROUPS, saved.segment_id]
    assert all(len(p) == 3 for p in pages[:-1])
    got = api.GetSegment(spb.GetSegmentRequest(shop_id=shop.shop_id, segment_id="predefined.high_potential"))
    assert got.predefined and got.group == rpb.PREDEFINED_GROUP_HIGH_POTENTIAL and got.name == "高潜力成交会员"
    assert got.rule.all.rules[0].condition.values == [180]
    refused = failure(api.DeleteSegment, spb.DeleteSegmentRequest(request_id=rid(), shop_id=shop.shop_id,
                                                                  segment_id="predefined.churn_risk"))
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PREDEFINED_READ_ONLY")
    refused = failure(api.UpdateSegment, spb.UpdateSegmentRequest(
        request_id=rid(), shop_id=shop.shop_id, segment=spb.Segment(segment_id="predefined.churn_risk", name="x"),
        update_mask=FieldMask(paths=["name"])))
    assert refused.reason == "PREDEFINED_READ_ONLY"
    taken = failure(api.CreateSegment, spb.CreateSegmentRequest(request_id=rid(), shop_id=shop.shop_id,
                                                                segment=spb.Segment(name="高潜力成交会员",
                                                                                    rule=saved.rule)))
    assert taken.reason == "SEGMENT_NAME_TAKEN"


def test_a_purchase_moves_a_member_from_new_to_the_repurchase_window(segments: ServiceUnderTest,
                                                                     shop: Shop) -> None:
    api = segments_api(segments, shop)
    member_id = join_member(shop, "b-new")
    facts_when(api, shop, member_id, lambda f: f.member_id, "segments heard of the member")
    assert members_of(api, shop, "predefined.new_to_activate") == [member_id]
    assert members_of(api, shop, "predefined.repurchase_window") == []
    assert api.IsMember(spb.IsMemberRequest(shop_id=shop.shop_id, segment_id="predefined.new_to_activate",
                                            member_id=member_id)).is_member
    buy(shop, "b-new", 60 * YUAN)
    eventually(lambda: members_of(api, shop, "predefined.repurchase_window") == [member_id],
               "the buyer entered the repurchase window", timeout=30)
    assert members_of(api, shop, "predefined.new_to_activate") == []
    assert members_of(api, shop, "predefined.high_contribution") == [member_id]  # one trade within 30 days
    eventually(lambda: api.IsMember(spb.IsMemberRequest(
        shop_id=shop.shop_id, segment_id="predefined.repurchase_window", member_id=member_id)).is_member,
        "IsMember says so once its short cache lapsed", timeout=30)
    counted = api.CountSegment(spb.CountSegmentRequest(shop_id=shop.shop_id,
                                                       segment_id="predefined.repurchase_window"))
    assert counted.count == 1
    got = api.GetSegment(spb.GetSegmentRequest(shop_id=shop.shop_id, segment_id="predefined.repurchase_window"))
    assert (got.last_count, got.count_time) == (1, counted.count_time)


def test_the_shops_settings_change_a_groups_members(segments: ServiceUnderTest, membership: ServiceUnderTest,
                                                   admin: Authed, shop: Shop) -> None:
    api = segments_api(segments, shop)
    defaults = api.GetGroupSettings(spb.GetGroupSettingsRequest(shop_id=shop.shop_id))
    assert (defaults.high_quality_min_trades, defaults.high_quality_min_average_order_fen,
            defaults.churn_idle_days) == (3, 30000, 90)
    assert not defaults.HasField("update_time")
    member_id = join_member(shop, "b-hq")
    buy(shop, "b-hq", 100 * YUAN)
    facts_when(api, shop, member_id, lambda f: f.trades == 1, "the trade reached segments")
    assert members_of(api, shop, "predefined.high_quality") == []

    update = spb.UpdateGroupSettingsRequest(
        request_id=rid(), shop_id=shop.shop_id,
        settings=spb.GroupSettings(high_quality_min_trades=1, high_quality_min_average_order_fen=50 * YUAN,
                                   churn_idle_days=7),
        update_mask=FieldMask(paths=["high_quality_min_trades", "high_quality_min_average_order_fen"]))
    changed = api.UpdateGroupSettings(update)
    assert api.UpdateGroupSettings(update) == changed  # replayed
    assert (changed.high_quality_min_trades, changed.high_quality_min_average_order_fen,
            changed.churn_idle_days) == (1, 50 * YUAN, 90)
    assert changed.HasField("update_time")
    assert members_of(api, shop, "predefined.high_quality") == [member_id]
    got = api.GetSegment(spb.GetSegmentRequest(shop_id=shop.shop_id, segment_id="predefined.high_quality"))
    assert got.rule.all.rules[1].condition.values == [50 * YUAN]

    bad = failure(api.UpdateGroupSettings, spb.UpdateGroupSettingsRequest(
        request_id=rid(), shop_id=shop.shop_id,
        settings=spb.GroupSettings(churn_idle_days=0, repurchase_window_days=4000),
        update_mask=FieldMask(paths=["churn_idle_days", "repurchase_window_days"])))
    assert bad.code is grpc.StatusCode.INVALID_ARGUMENT
    assert set(bad.fields) == {"settings.churn_idle_days", "settings.repurchase_window_days"}
    bad = failure(api.UpdateGroupSettings, spb.UpdateGroupSettingsRequest(
        request_id=rid(), shop_id=shop.shop_id, settings=spb.GroupSettings(churn_idle_days=10),
        update_mask=FieldMask(paths=["shop_id"])))
    assert set(bad.fields) == {"update_mask"}

    # Another shop keeps the documents' figures and sees none of this shop's members.
    other = create_shop(membership, admin)
    other_api = segments_api(segments, other)
    assert other_api.GetGroupSettings(spb.GetGroupSettingsRequest(shop_id=other.shop_id)).high_quality_min_trades == 3
    assert members_of(other_api, other, "predefined.high_quality") == []
    assert not other_api.IsMember(spb.IsMemberRequest(shop_id=other.shop_id, segment_id="predefined.high_quality",
                                                      member_id=member_id)).is_member
