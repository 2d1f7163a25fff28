"""Member facts, kept by segments from the other services' events only, on both backends:
joining, completed orders and refunds, points balances, activity, referrals, tier changes and
leaving, each reflected in GetMemberFacts; another shop's member is not found."""

from __future__ import annotations

import grpc
import pytest
from loyalty.membership.v1 import events_pb2 as mev
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.points.v1 import points_service_pb2 as pp

from tests.conftest import ServiceUnderTest, Shop, create_shop, failure_of
from tests.integration.test_membership import YUAN, buy, pay, refund, rid
from tests.support.builders import join_member, points_shop
from tests.support.events import outbox_events
from tests.support.segments import facts_of, facts_when, segments_api


@pytest.fixture
def segments(suite: dict[str, ServiceUnderTest]) -> ServiceUnderTest:
    return suite["segments"]


def test_a_join_and_orders_become_facts(segments: ServiceUnderTest, shop: Shop) -> None:
    api = segments_api(segments, shop)
    member_id = shop.api.JoinMember(mpb.JoinMemberRequest(
        request_id=rid(), shop_id=shop.shop_id, buyer_id="b-1", join_channel=mpb.JOIN_CHANNEL_LIVE_STREAM,
        profile=mpb.Profile(birthday={"year": 1990, "month": 7, "day": 3}),
        consent_fields=[mpb.PROFILE_FIELD_BIRTHDAY])).member_id
    joined = facts_when(api, shop, member_id, lambda f: f.member_id, "segments heard of the member")
    assert (joined.trades, joined.spend_fen, joined.birth_month) == (0, 0, 7)
    assert joined.join_channel == mpb.JOIN_CHANNEL_LIVE_STREAM and not joined.HasField("last_purchase_time")
    buy(shop, "b-1", 120 * YUAN)
    order = pay(shop, "b-1", 80 * YUAN)
    shop.api.CompleteOrder(mpb.CompleteOrderRequest(shop_id=shop.shop_id, order_id=order))
    bought = facts_when(api, shop, member_id, lambda f: f.trades == 2, "both trades counted")
    assert bought.spend_fen == 200 * YUAN and bought.HasField("last_purchase_time")
    assert bought.first_purchase_time.ToDatetime() <= bought.last_purchase_time.ToDatetime()
    refund(shop, order, 80 * YUAN)
    refunded = facts_when(api, shop, member_id, lambda f: f.refunds == 1, "the refund counted")
    assert (refunded.trades, refunded.spend_fen) == (1, 120 * YUAN)


def test_order_lines_and_promotions_become_units_categories_and_promotion_share(
        segments: ServiceUnderTest, membership: ServiceUnderTest, shop: Shop) -> None:
    api = segments_api(segments, shop)
    member_id = join_member(shop, "b-lines")
    lines = [mpb.OrderLine(sku_id="sku-lace-1", category_id="lace", quantity=2, amount_fen=60 * YUAN),
             mpb.OrderLine(sku_id="sku-sock-9", category_id="socks", quantity=3, amount_fen=30 * YUAN)]
    recorded = shop.api.RecordOrder(mpb.RecordOrderRequest(
        shop_id=shop.shop_id, order_id="o-lines", buyer_id="b-lines", amount_fen=90 * YUAN, lines=lines,
        coupon_applied=True))
    assert list(recorded.lines) == lines and recorded.coupon_applied and not recorded.campaign_applied
    shop.api.CompleteOrder(mpb.CompleteOrderRequest(shop_id=shop.shop_id, order_id="o-lines"))
    buy(shop, "b-lines", 10 * YUAN)  # an old caller: no lines, no promotion
    (event, *_) = outbox_events(membership.running.app.db, shop.shop_id, mev.OrderCompleted)
    assert list(event.lines) == lines and event.coupon_applied
    seen = facts_when(api, shop, member_id, lambda f: f.trades == 2, "both trades reached segments")
    assert (seen.units, seen.promoted_trades, list(seen.category_ids)) == (5, 1, ["lace", "socks"])


def test_order_lines_are_checked_field_by_field(shop: Shop) -> None:
    join_member(shop, "b-bad")
    for line, field in [(mpb.OrderLine(category_id="lace", quantity=0), "lines[0].quantity"),
                        (mpb.OrderLine(category_id="no spaces", quantity=1), "lines[0].category_id"),
                        (mpb.OrderLine(sku_id="x" * 65, quantity=1), "lines[0].sku_id")]:
        with pytest.raises(grpc.RpcError) as caught:
            shop.api.RecordOrder(mpb.RecordOrderRequest(shop_id=shop.shop_id, order_id="o-bad", buyer_id="b-bad",
                                                        amount_fen=YUAN, lines=[line]))
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT and field in failure_of(caught.value).fields


def test_points_balance_activity_referrals_and_leaving(segments: ServiceUnderTest, points: ServiceUnderTest,
                                                       shop: Shop) -> None:
    api, ps = segments_api(segments, shop), points_shop(points, shop)
    referrer = join_member(shop)
    referred = shop.api.JoinMember(mpb.JoinMemberRequest(
        request_id=rid(), shop_id=shop.shop_id, buyer_id="b-2", referrer_member_id=referrer,
        join_channel=mpb.JOIN_CHANNEL_REFERRAL_LINK)).member_id
    facts_when(api, shop, referrer, lambda f: f.referrals == 1, "the referral counted")
    facts_when(api, shop, referred, lambda f: f.member_id, "segments heard of the referred member")
    ps.api.RecordAction(pp.RecordActionRequest(request_id=rid(), shop_id=shop.shop_id, member_id=referred,
                                               action=pp.ACTION_DAILY_SIGN_IN))
    active = facts_when(api, shop, referred, lambda f: f.HasField("last_activity_time") and f.points_balance > 0,
                        "the sign-in and its points reached segments")
    balance = ps.api.GetBalance(pp.GetBalanceRequest(shop_id=shop.shop_id, member_id=referred)).available
    assert active.points_balance == balance
    shop.api.LeaveMember(mpb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=referred))
    left = facts_when(api, shop, referred, lambda f: f.left, "the leave reached segments")
    assert left.birth_month == 0 and list(left.tag_ids) == []


def test_another_shops_member_is_not_found(segments: ServiceUnderTest, membership: ServiceUnderTest, admin,
                                           shop: Shop) -> None:
    member_id = join_member(shop)
    facts_when(segments_api(segments, shop), shop, member_id, lambda f: f.member_id, "segments heard of the member")
    other = create_shop(membership, admin)
    with pytest.raises(grpc.RpcError) as caught:
        facts_of(segments_api(segments, other), other, member_id)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert failure_of(caught.value).reason == "MEMBER_NOT_FOUND"
