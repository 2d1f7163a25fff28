"""Contract tests of campaigns (营销活动) and checkout (EvaluateCart) of loyalty.rewards.v1.RewardsService,
through the real gRPC API on both backends: the campaigns' CRUD, validation and status from the
window, other shops; a cart priced for a gold member (tier discount, campaign, one coupon); the
tier discount following a ladder configured through membership; and the coupon given after each
completed order, once per order."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.membership.v1 import events_pb2 as mev
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.rewards.v1 import campaigns_pb2 as cpb
from loyalty.rewards.v1 import rewards_service_pb2 as rpb

from services.rewards import campaigns, reasons
from tests.conftest import Authed, Failure, ServiceUnderTest, Shop, create_shop, failure_of
from tests.support.builders import eventually, rid
from tests.support.coupons import YUAN, coupon_reward, issue_one, wallet
from tests.support.events import outbox_events
from tests.support.rewards import create_reward, join_member, rewards_api, set_tier

PERCENT, CASH_OFF = cpb.CAMPAIGN_KIND_PERCENTAGE_DISCOUNT, cpb.CAMPAIGN_KIND_CASH_OFF
SHIPPING, AFTER_ORDER = cpb.CAMPAIGN_KIND_FREE_SHIPPING, cpb.CAMPAIGN_KIND_COUPON_AFTER_ORDER
NOT_STARTED, RUNNING, ENDED = cpb.CAMPAIGN_STATUS_NOT_STARTED, cpb.CAMPAIGN_STATUS_RUNNING, cpb.CAMPAIGN_STATUS_ENDED


def stamp(moment: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(moment)
    return out


def window(start_days: float = -1, end_days: float = 30) -> dict[str, Timestamp]:
    now = datetime.now(UTC)
    return {"start_time": stamp(now + timedelta(days=start_days)), "end_time": stamp(now + timedelta(days=end_days))}


def campaign_message(kind: int = PERCENT, **fields: Any) -> cpb.Campaign:
    """A running campaign over all items (a 10% discount unless `fields` say otherwise)."""
    defaults: dict[str, Any] = {"name": "双十一", "kind": kind, "all_items": True, **window()}
    if kind == PERCENT:
        defaults["discount_permille"] = 900
    return cpb.Campaign(**{**defaults, **fields})


def create_campaign(api: Authed, shop_id: str, **fields: Any) -> cpb.Campaign:
    return api.CreateCampaign(cpb.CreateCampaignRequest(request_id=rid(), shop_id=shop_id,
                                                        campaign=campaign_message(**fields)))


def evaluate(api: Authed, shop_id: str, lines: list[tuple[str, int, int]], member_id: str = "",
             coupon_ids: tuple[str, ...] = ()) -> cpb.EvaluateCartResponse:
    return api.EvaluateCart(cpb.EvaluateCartRequest(
        shop_id=shop_id, member_id=member_id, coupon_ids=list(coupon_ids),
        lines=[cpb.CartLine(sku=s, quantity=q, unit_price_fen=p) for s, q, p in lines]))


def refused(call: Callable[..., object], *args: object) -> Failure:
    with pytest.raises(grpc.RpcError) as raised:
        call(*args)
    return failure_of(raised.value)


def gold_member(api: Authed, shop: Shop, **fields: Any) -> str:
    """A member at tier 2 (gold), once rewards has heard of the tier."""
    member_id = join_member(shop, **fields)
    set_tier(shop, member_id, 2)
    eventually(lambda: evaluate(api, shop.shop_id, [("X", 1, 1)], member_id).tier_level == 2,
               "rewards heard of the gold tier", timeout=30.0)
    return member_id


@pytest.fixture
def api(rewards: ServiceUnderTest, shop: Shop) -> Authed:
    return rewards_api(rewards, shop)


# ----- campaigns ---------------------------------------------------------------------------------------


def test_campaigns_are_created_read_changed_and_listed_by_status(api: Authed, shop: Shop) -> None:
    request = cpb.CreateCampaignRequest(request_id=rid(), shop_id=shop.shop_id, campaign=campaign_message(
        holdout_bp=1000, audience=cpb.Audience(kind=cpb.AUDIENCE_KIND_TIERS, tier_levels=[3, 2])))
    running = api.CreateCampaign(request)
    assert api.CreateCampaign(request) == running  # a retry: the same campaign, not a second one
    upcoming = create_campaign(api, shop.shop_id, kind=SHIPPING, threshold_fen=99 * YUAN, **window(1, 2))
    ended = create_campaign(api, shop.shop_id, kind=CASH_OFF, cash_off_fen=20 * YUAN, threshold_fen=200 * YUAN,
                            all_items=False, skus=["SKU-1", "SKU-2"], **window(-3, -1))
    assert running.campaign_id.startswith("cg_") and running.status == RUNNING
    assert (running.holdout_bp, list(running.audience.tier_levels)) == (1000, [2, 3])
    assert (upcoming.status, ended.status) == (NOT_STARTED, ENDED)
    assert api.GetCampaign(cpb.GetCampaignRequest(shop_id=shop.shop_id, campaign_id=ended.campaign_id)) == ended

    changed = api.UpdateCampaign(cpb.UpdateCampaignRequest(
        request_id=rid(), shop_id=shop.shop_id, update_mask=FieldMask(paths=["name", "discount_permille"]),
        campaign=cpb.Campaign(campaign_id=running.campaign_id, name="双十二", discount_permille=850,
                              holdout_bp=5000)))
    assert (changed.name, changed.discount_permille, changed.holdout_bp) == ("双十二", 850, 1000)
    assert api.GetCampaign(cpb.GetCampaignRequest(shop_id=shop.shop_id, campaign_id=running.campaign_id)) == changed

    def listed(status: int = 0, page_size: int = 0) -> list[str]:
        ids, token = [], ""
        while True:
            page = api.ListCampaigns(cpb.ListCampaignsRequest(shop_id=shop.shop_id, status=status,
                                                              page_size=page_size, page_token=token))
            ids += [c.campaign_id for c in page.campaigns]
            token = page.next_page_token
            if not token:
                return ids

    everything = sorted([running.campaign_id, upcoming.campaign_id, ended.campaign_id])
    assert listed() == everything and listed(page_size=2) == everything and listed(page_size=1) == everything
    assert (listed(RUNNING), listed(NOT_STARTED), listed(ENDED)) == (
        [running.campaign_id], [upcoming.campaign_id], [ended.campaign_id])


def test_bad_campaigns_are_refused_with_their_fields(api: Authed, shop: Shop) -> None:
    def create(**fields: Any) -> Failure:
        return refused(api.CreateCampaign, cpb.CreateCampaignRequest(
            request_id=rid(), shop_id=shop.shop_id, campaign=campaign_message(**fields)))

    bad = create(name="", discount_permille=1000, holdout_bp=10_000, **window(2, 1))
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"campaign.name", "campaign.discount_permille", "campaign.holdout_bp", "campaign.end_time"} <= set(
        bad.fields)
    assert "campaign.kind" in create(kind=0).fields
    assert "campaign.discount_permille" in create(kind=CASH_OFF, cash_off_fen=100, discount_permille=900).fields
    assert "campaign.skus" in create(all_items=False).fields
    assert "campaign.all_items" in create(kind=AFTER_ORDER, coupon_reward_id="rw_x", all_items=False, skus=["A"],
                                          discount_permille=0).fields
    six_tags = cpb.Audience(kind=cpb.AUDIENCE_KIND_TAGS, tag_ids=[f"tag{i}" for i in range(6)])
    too_many = create(audience=six_tags)
    assert (too_many.code, too_many.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TOO_MANY_TAGS")
    assert "campaign.audience.tag_ids" in too_many.fields
    # Tags and segments are the segments service's: ones it does not know are NOT_FOUND.
    for audience, reason in ((cpb.Audience(kind=cpb.AUDIENCE_KIND_TAGS, tag_ids=["vip", "new"]), "TAG_NOT_FOUND"),
                             (cpb.Audience(kind=cpb.AUDIENCE_KIND_SEGMENT, segment_id="seg-1"), "SEGMENT_NOT_FOUND")):
        failure = create(audience=audience)
        assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, reason)
    gift = create_reward(api, shop.shop_id, kind=rpb.REWARD_KIND_GIFT, gift=rpb.GiftSpec())
    assert create(kind=AFTER_ORDER, coupon_reward_id=gift.reward_id, discount_permille=0).reason == \
        reasons.COUPON_NOT_A_COUPON_REWARD
    assert create(kind=AFTER_ORDER, coupon_reward_id="rw_missing", discount_permille=0).reason == \
        reasons.REWARD_NOT_FOUND
    assert "request_id" in refused(api.CreateCampaign, cpb.CreateCampaignRequest(
        shop_id=shop.shop_id, campaign=campaign_message())).fields

    made = create_campaign(api, shop.shop_id)

    def update(paths: list[str], **fields: Any) -> Failure:
        return refused(api.UpdateCampaign, cpb.UpdateCampaignRequest(
            request_id=rid(), shop_id=shop.shop_id, update_mask=FieldMask(paths=paths),
            campaign=cpb.Campaign(campaign_id=made.campaign_id, **fields)))

    assert "update_mask" in update(["kind"], kind=CASH_OFF).fields
    assert "campaign.end_time" in update(["end_time"], end_time=made.start_time).fields
    assert "campaign.discount_permille" in update(["discount_permille"]).fields
    bad_cart = refused(api.EvaluateCart, cpb.EvaluateCartRequest(shop_id=shop.shop_id, lines=[
        cpb.CartLine(sku="", quantity=0, unit_price_fen=-1)]))
    assert {"lines[0].sku", "lines[0].quantity", "lines[0].unit_price_fen"} <= set(bad_cart.fields)
    assert "lines" in refused(api.EvaluateCart, cpb.EvaluateCartRequest(shop_id=shop.shop_id)).fields


def test_another_shops_campaigns_are_not_found(membership: ServiceUnderTest, admin: Authed,
                                              rewards: ServiceUnderTest, api: Authed, shop: Shop) -> None:
    theirs = create_campaign(api, shop.shop_id)
    other = create_shop(membership, admin)
    other_api = rewards_api(rewards, other)
    failure = refused(other_api.GetCampaign, cpb.GetCampaignRequest(shop_id=other.shop_id,
                                                                    campaign_id=theirs.campaign_id))
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, reasons.CAMPAIGN_NOT_FOUND)
    failure = refused(other_api.UpdateCampaign, cpb.UpdateCampaignRequest(
        request_id=rid(), shop_id=other.shop_id, update_mask=FieldMask(paths=["name"]),
        campaign=cpb.Campaign(campaign_id=theirs.campaign_id, name="mine")))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert other_api.ListCampaigns(cpb.ListCampaignsRequest(shop_id=other.shop_id)).campaigns == []
    # Their running campaign does not price this shop's carts.
    assert evaluate(other_api, other.shop_id, [("A", 1, 10_000)]).campaigns == []
    assert refused(other_api.GetCampaign, cpb.GetCampaignRequest(shop_id=shop.shop_id,
                                                                 campaign_id=theirs.campaign_id)).code in (
        grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


# ----- checkout -----------------------------------------------------------------------------------------


def test_a_gold_member_gets_the_tier_discount_then_the_campaign_then_the_coupon(api: Authed, shop: Shop) -> None:
    reward = coupon_reward(api, shop.shop_id, face_value_fen=10 * YUAN, threshold_fen=90 * YUAN, valid_days=7)
    member_id = gold_member(api, shop)
    coupon = issue_one(api, shop.shop_id, reward.reward_id, member_id)
    twenty_off = create_campaign(api, shop.shop_id, discount_permille=800)
    lesser = create_campaign(api, shop.shop_id, kind=CASH_OFF, cash_off_fen=5 * YUAN)
    elsewhere = create_campaign(api, shop.shop_id, all_items=False, skus=["SKU-Z"])

    cart = evaluate(api, shop.shop_id, [("SKU-A", 2, 5_000), ("SKU-B", 1, 3_333)], member_id, (coupon.coupon_id,))

    assert (cart.member, cart.tier_level, cart.tier_discount_bp) == (True, 2, 9000)
    # Tier: 10000 → 9000 and 3333 → 2999 (rounded down); 80%: 7200 and 2399; the coupon's 1000 in
    # proportion to 7200 and 2399, the remainder on the last line: 750 and 250.
    assert [(x.tier_discount_fen, x.campaign_discount_fen, x.coupon_discount_fen, x.total_fen) for x in cart.lines] == [
        (1_000, 1_800, 750, 6_450), (334, 600, 250, 2_149)]
    assert (cart.subtotal_fen, cart.tier_discount_fen, cart.campaign_discount_fen, cart.coupon_discount_fen,
            cart.total_discount_fen, cart.total_fen) == (13_333, 1_334, 2_400, 1_000, 4_734, 8_599)
    assert (cart.applied_campaign_id, cart.applied_coupon_id) == (twenty_off.campaign_id, coupon.coupon_id)
    assert {c.campaign_id: (c.applied, c.reason) for c in cart.campaigns} == {
        twenty_off.campaign_id: (True, ""), lesser.campaign_id: (False, reasons.OUTDONE),
        elsewhere.campaign_id: (False, reasons.NO_ELIGIBLE_ITEMS)}
    assert [(c.coupon_id, c.applied, c.reason) for c in cart.coupons] == [(coupon.coupon_id, True, "")]
    assert not cart.free_shipping
    # A read: the coupon is still unused.
    assert [c.state for c in wallet(api, shop.shop_id, member_id)] == [rpb.COUPON_STATE_UNUSED]

    # A buyer who is not a member: list prices, everyone's campaigns, no coupon.
    stranger = evaluate(api, shop.shop_id, [("SKU-A", 2, 5_000)], coupon_ids=(coupon.coupon_id,))
    assert (stranger.member, stranger.tier_discount_fen, stranger.campaign_discount_fen, stranger.total_fen) == (
        False, 0, 2_000, 8_000)
    assert [c.reason for c in stranger.coupons] == [reasons.COUPON_NOT_OWNED]


def test_a_coupon_under_its_threshold_does_not_apply(api: Authed, shop: Shop) -> None:
    reward = coupon_reward(api, shop.shop_id, face_value_fen=10 * YUAN, threshold_fen=99 * YUAN, valid_days=7)
    member_id = gold_member(api, shop)
    coupon = issue_one(api, shop.shop_id, reward.reward_id, member_id)
    create_campaign(api, shop.shop_id, kind=SHIPPING, threshold_fen=50 * YUAN)

    # 100 yuan at gold's 90% is 90 yuan: under the coupon's 99, over free shipping's 50.
    cart = evaluate(api, shop.shop_id, [("SKU-A", 1, 100 * YUAN)], member_id, (coupon.coupon_id, "cp_unknown"))

    assert [(c.coupon_id, c.applied, c.reason, c.threshold_fen) for c in cart.coupons] == [
        (coupon.coupon_id, False, reasons.THRESHOLD_NOT_MET, 99 * YUAN),
        ("cp_unknown", False, reasons.COUPON_NOT_FOUND, 0)]
    assert (cart.applied_coupon_id, cart.coupon_discount_fen, cart.total_fen) == ("", 0, 90 * YUAN)
    assert cart.free_shipping


def test_the_tier_discount_follows_the_ladder_configured_in_membership(api: Authed, shop: Shop) -> None:
    create_reward(api, shop.shop_id)
    member_id = gold_member(api, shop)
    assert evaluate(api, shop.shop_id, [("A", 1, 10_000)], member_id).tier_discount_fen == 1_000  # default 90%

    tiers = list(shop.api.GetProgram(mpb.GetProgramRequest(shop_id=shop.shop_id)).tiers)
    tiers[2].discount_bp = 8_750
    shop.api.ConfigureTiers(mpb.ConfigureTiersRequest(request_id=rid(), shop_id=shop.shop_id, tiers=tiers))

    cart = eventually(lambda: (c := evaluate(api, shop.shop_id, [("A", 1, 9_999)], member_id)).tier_discount_bp
                      == 8_750 and c, "rewards heard of the new ladder", timeout=30.0)
    assert (cart.tier_discount_fen, cart.total_fen) == (1_250, 8_749)  # 9999 × 87.5% = 8749.125, rounded down


# ----- coupon after order -------------------------------------------------------------------------------


def test_a_completed_order_gives_the_campaigns_coupon_once(api: Authed, shop: Shop, membership: ServiceUnderTest,
                                                          rewards: ServiceUnderTest) -> None:
    reward = coupon_reward(api, shop.shop_id, face_value_fen=5 * YUAN, threshold_fen=0, valid_days=30)
    campaign = create_campaign(api, shop.shop_id, kind=AFTER_ORDER, coupon_reward_id=reward.reward_id,
                               threshold_fen=50 * YUAN, discount_permille=0)
    buyer = "b-" + uuid.uuid4().hex[:10]
    member_id = join_member(shop, buyer_id=buyer)

    def order(fen: int) -> str:
        order_id = "o-" + uuid.uuid4().hex[:12]
        shop.api.RecordOrder(mpb.RecordOrderRequest(shop_id=shop.shop_id, order_id=order_id, buyer_id=buyer,
                                                    amount_fen=fen))
        shop.api.CompleteOrder(mpb.CompleteOrderRequest(shop_id=shop.shop_id, order_id=order_id))
        return order_id

    def given() -> list[str]:
        return sorted(c.source_reference for c in wallet(api, shop.shop_id, member_id)
                      if c.source == rpb.COUPON_SOURCE_CAMPAIGN)

    order(10 * YUAN)  # under the campaign's threshold: nothing
    first = order(80 * YUAN)
    eventually(given, "the first order's coupon", timeout=30.0)
    second = order(60 * YUAN)
    refs = eventually(lambda: len(given()) == 2 and given(), "the second order's coupon", timeout=30.0)
    assert refs == sorted([f"{campaign.campaign_id}/{first}", f"{campaign.campaign_id}/{second}"])
    (coupon, *_) = [c for c in wallet(api, shop.shop_id, member_id) if c.source == rpb.COUPON_SOURCE_CAMPAIGN]
    assert (coupon.reward_id, coupon.face_value_fen) == (reward.reward_id, 5 * YUAN)

    # The event delivered again (say, after a crash before the inbox recorded it): nothing more.
    service = rewards.running.app.servicer.service
    for event in outbox_events(membership.running.app.db, shop.shop_id, mev.OrderCompleted):
        service.db.transact(lambda uow, e=event: campaigns.order_completed(service, uow, e))
    assert given() == refs
