"""Campaign audiences served by the segments service, through gRPC on both backends: a tags
campaign applies at checkout to a member carrying one of its tags (as segments' tag events reach
rewards) and not to another, nor once the tag is taken off, and the report's reach counts the
tagged; more than 5 tags, an unknown tag or an
unknown segment are refused clearly (at creation and update); a segment campaign over the
predefined repurchase window applies to a member who just completed an order and not to one who
never bought; a coupon-after-order campaign for a tag gives its coupon to a tagged buyer only.
Facts and tags reach rewards and segments asynchronously: waited for, never slept."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.rewards.v1 import campaigns_pb2 as cpb
from loyalty.rewards.v1 import rewards_service_pb2 as rp
from loyalty.segments.v1 import segments_service_pb2 as spb

from tests.conftest import Authed, ServiceUnderTest, Shop, create_shop, failure_of
from tests.support.builders import eventually, rid
from tests.support.coupons import wallet
from tests.support.errors import Failure
from tests.support.rewards import create_reward, join_member, rewards_api
from tests.support.segments import facts_when, segments_api

YUAN = 100
REPURCHASE = "predefined.repurchase_window"


def stamp(moment: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(moment)
    return out


def campaign(audience: cpb.Audience, **fields: Any) -> cpb.Campaign:
    """A running 10%-off campaign over all items for `audience`."""
    now = datetime.now(UTC)
    return cpb.Campaign(name="会员专享", kind=cpb.CAMPAIGN_KIND_PERCENTAGE_DISCOUNT, all_items=True,
                        discount_permille=900, audience=audience, start_time=stamp(now - timedelta(days=1)),
                        end_time=stamp(now + timedelta(days=30)), **fields)


def create(api: Authed, shop: Shop, audience: cpb.Audience) -> cpb.Campaign:
    return api.CreateCampaign(cpb.CreateCampaignRequest(request_id=rid(), shop_id=shop.shop_id,
                                                        campaign=campaign(audience)))


def refused(call: Any, request: Any) -> Failure:
    with pytest.raises(grpc.RpcError) as raised:
        call(request)
    return failure_of(raised.value)


def verdict(api: Authed, shop: Shop, campaign_id: str, member_id: str = "") -> str:
    """Why the campaign does not apply to a 100-yuan cart of the member ("" when it does)."""
    cart = api.EvaluateCart(cpb.EvaluateCartRequest(shop_id=shop.shop_id, member_id=member_id,
                                                    lines=[cpb.CartLine(sku="SKU-1", quantity=1,
                                                                        unit_price_fen=100 * YUAN)]))
    (found,) = [c for c in cart.campaigns if c.campaign_id == campaign_id]
    assert found.applied == (not found.reason)
    return found.reason


@pytest.fixture
def api(rewards: ServiceUnderTest, shop: Shop) -> Authed:
    made = rewards_api(rewards, shop)
    create_reward(made, shop.shop_id)  # join_member watches an offer of the shop
    return made


@pytest.fixture
def segments(suite: dict[str, ServiceUnderTest], shop: Shop) -> Authed:
    return segments_api(suite["segments"], shop)


def known_member(segments: Authed, shop: Shop, **fields: Any) -> str:
    """A new member, once both rewards and segments have heard of them."""
    member_id = join_member(shop, **fields)
    facts_when(segments, shop, member_id, lambda f: f.member_id, "segments heard of the member")
    return member_id


def new_tag(segments: Authed, shop: Shop, name: str) -> str:
    return segments.CreateTag(spb.CreateTagRequest(request_id=rid(), shop_id=shop.shop_id,
                                                   tag=spb.Tag(name=name))).tag_id


def test_a_tags_campaign_applies_to_members_carrying_one_of_its_tags(api: Authed, segments: Authed,
                                                                       shop: Shop) -> None:
    tagged, other = known_member(segments, shop), known_member(segments, shop)
    lace, vip = new_tag(segments, shop, "蕾丝控"), new_tag(segments, shop, "VIP")
    segments.TagMembers(spb.TagMembersRequest(request_id=rid(), shop_id=shop.shop_id, tag_id=lace,
                                              member_ids=[tagged]))
    made = create(api, shop, cpb.Audience(kind=cpb.AUDIENCE_KIND_TAGS, tag_ids=[vip, lace]))
    assert list(made.audience.tag_ids) == [vip, lace]

    eventually(lambda: verdict(api, shop, made.campaign_id, tagged) == "", "the tag reached rewards", timeout=30.0)
    assert verdict(api, shop, made.campaign_id, other) == "NOT_IN_AUDIENCE"
    assert verdict(api, shop, made.campaign_id) == "NOT_IN_AUDIENCE"  # a buyer who is not a member
    # The operators' report measures the campaign over its audience: the one tagged member.
    report = api.GetRewardsReport(rp.GetRewardsReportRequest(shop_id=shop.shop_id))
    assert [c.reach for c in report.campaigns if c.campaign_id == made.campaign_id] == [1]

    segments.UntagMembers(spb.UntagMembersRequest(request_id=rid(), shop_id=shop.shop_id, tag_id=lace,
                                                  member_ids=[tagged]))
    eventually(lambda: verdict(api, shop, made.campaign_id, tagged) == "NOT_IN_AUDIENCE",
               "the untagging reached rewards", timeout=30.0)


def test_too_many_tags_and_unknown_tags_or_segments_are_refused(api: Authed, segments: Authed, shop: Shop,
                                                                 membership: ServiceUnderTest,
                                                                 admin: Authed) -> None:
    tags = [new_tag(segments, shop, f"标签{i}") for i in range(6)]
    too_many = refused(api.CreateCampaign, cpb.CreateCampaignRequest(
        request_id=rid(), shop_id=shop.shop_id, campaign=campaign(cpb.Audience(kind=cpb.AUDIENCE_KIND_TAGS,
                                                                               tag_ids=tags))))
    assert (too_many.code, too_many.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TOO_MANY_TAGS")
    assert "campaign.audience.tag_ids" in too_many.fields
    assert create(api, shop, cpb.Audience(kind=cpb.AUDIENCE_KIND_TAGS, tag_ids=tags[:5])).campaign_id

    elsewhere = create_shop(membership, admin)
    foreign = new_tag(Authed(segments._stub, elsewhere.key), elsewhere, "别人的标签")
    for audience, reason in (
            (cpb.Audience(kind=cpb.AUDIENCE_KIND_TAGS, tag_ids=[tags[0], "tg_" + uuid.uuid4().hex[:20]]),
             "TAG_NOT_FOUND"),
            (cpb.Audience(kind=cpb.AUDIENCE_KIND_TAGS, tag_ids=[foreign]), "TAG_NOT_FOUND"),  # another shop's tag
            (cpb.Audience(kind=cpb.AUDIENCE_KIND_SEGMENT, segment_id="sg_missing"), "SEGMENT_NOT_FOUND"),
            (cpb.Audience(kind=cpb.AUDIENCE_KIND_SEGMENT, segment_id="predefined.nothing_like_it"),
             "SEGMENT_NOT_FOUND")):
        failure = refused(api.CreateCampaign, cpb.CreateCampaignRequest(request_id=rid(), shop_id=shop.shop_id,
                                                                        campaign=campaign(audience)))
        assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, reason), audience

    everyone = create(api, shop, cpb.Audience(kind=cpb.AUDIENCE_KIND_EVERYONE))
    failure = refused(api.UpdateCampaign, cpb.UpdateCampaignRequest(
        request_id=rid(), shop_id=shop.shop_id, update_mask=FieldMask(paths=["audience"]),
        campaign=cpb.Campaign(campaign_id=everyone.campaign_id,
                              audience=cpb.Audience(kind=cpb.AUDIENCE_KIND_SEGMENT, segment_id="sg_missing"))))
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "SEGMENT_NOT_FOUND")
    changed = api.UpdateCampaign(cpb.UpdateCampaignRequest(
        request_id=rid(), shop_id=shop.shop_id, update_mask=FieldMask(paths=["audience"]),
        campaign=cpb.Campaign(campaign_id=everyone.campaign_id,
                              audience=cpb.Audience(kind=cpb.AUDIENCE_KIND_SEGMENT, segment_id=REPURCHASE))))
    assert (changed.audience.kind, changed.audience.segment_id) == (cpb.AUDIENCE_KIND_SEGMENT, REPURCHASE)


def test_a_repurchase_window_campaign_applies_to_a_member_who_just_bought(api: Authed, segments: Authed,
                                                                          shop: Shop) -> None:
    buyer = "b-" + uuid.uuid4().hex[:10]
    bought, never = known_member(segments, shop, buyer_id=buyer), known_member(segments, shop)
    made = create(api, shop, cpb.Audience(kind=cpb.AUDIENCE_KIND_SEGMENT, segment_id=REPURCHASE))
    assert verdict(api, shop, made.campaign_id, never) == "NOT_IN_AUDIENCE"

    order_id = "o-" + uuid.uuid4().hex[:10]
    shop.api.RecordOrder(mpb.RecordOrderRequest(shop_id=shop.shop_id, order_id=order_id, buyer_id=buyer,
                                                amount_fen=120 * YUAN))
    shop.api.CompleteOrder(mpb.CompleteOrderRequest(shop_id=shop.shop_id, order_id=order_id))
    facts_when(segments, shop, bought, lambda f: f.trades == 1, "the order reached segments")
    # IsMember's answer is cached a few seconds in segments: the member is in the window soon.
    eventually(lambda: verdict(api, shop, made.campaign_id, bought) == "", "the buyer entered the repurchase window",
               timeout=30.0)
    assert verdict(api, shop, made.campaign_id, never) == "NOT_IN_AUDIENCE"
    assert verdict(api, shop, made.campaign_id) == "NOT_IN_AUDIENCE"


def test_a_coupon_after_order_campaign_for_a_tag_gives_its_coupon_to_tagged_buyers(api: Authed, segments: Authed,
                                                                                   shop: Shop) -> None:
    tagged_buyer, other_buyer = "b-" + uuid.uuid4().hex[:10], "b-" + uuid.uuid4().hex[:10]
    tagged = known_member(segments, shop, buyer_id=tagged_buyer)
    other = known_member(segments, shop, buyer_id=other_buyer)
    vip = new_tag(segments, shop, "VIP")
    segments.TagMembers(spb.TagMembersRequest(request_id=rid(), shop_id=shop.shop_id, tag_id=vip, member_ids=[tagged]))
    audience = cpb.Audience(kind=cpb.AUDIENCE_KIND_TAGS, tag_ids=[vip])
    watch = create(api, shop, audience)  # a price campaign for the same tag shows when rewards knows it
    eventually(lambda: verdict(api, shop, watch.campaign_id, tagged) == "", "the tag reached rewards", timeout=30.0)
    reward = create_reward(api, shop.shop_id)
    now = datetime.now(UTC)
    after_order = api.CreateCampaign(cpb.CreateCampaignRequest(
        request_id=rid(), shop_id=shop.shop_id, campaign=cpb.Campaign(
            name="VIP 下单送券", kind=cpb.CAMPAIGN_KIND_COUPON_AFTER_ORDER, all_items=True, audience=audience,
            coupon_reward_id=reward.reward_id, start_time=stamp(now - timedelta(days=1)),
            end_time=stamp(now + timedelta(days=30)))))

    for buyer in (other_buyer, tagged_buyer):
        order_id = "o-" + uuid.uuid4().hex[:10]
        shop.api.RecordOrder(mpb.RecordOrderRequest(shop_id=shop.shop_id, order_id=order_id, buyer_id=buyer,
                                                    amount_fen=120 * YUAN))
        shop.api.CompleteOrder(mpb.CompleteOrderRequest(shop_id=shop.shop_id, order_id=order_id))

    def campaign_coupons(member_id: str) -> list[rp.Coupon]:
        return [c for c in wallet(api, shop.shop_id, member_id)
                if c.source == rp.COUPON_SOURCE_CAMPAIGN and c.source_reference.startswith(after_order.campaign_id)]

    (given,) = eventually(lambda: campaign_coupons(tagged), "the tagged buyer got the campaign's coupon", timeout=30.0)
    assert given.reward_id == reward.reward_id
    assert campaign_coupons(other) == []
