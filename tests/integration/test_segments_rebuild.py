"""RebuildFacts on both backends: facts made for real from events, then lost or corrupted the way a
bug in the projection would (the only place a test writes segments' tables), rebuilt from
membership's ExportMembers and ExportOrders to what the events had made; running it again changes
nothing; points' facts are kept; another shop is untouched."""

from __future__ import annotations

import grpc
import pytest
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.points.v1 import points_service_pb2 as pp
from loyalty.segments.v1 import rules_pb2
from loyalty.segments.v1 import segments_service_pb2 as spb
from sqlalchemy import delete, update

from services.segments.tables import member_categories, member_facts, member_orders
from tests.conftest import ServiceUnderTest, Shop, create_shop
from tests.integration.test_membership import YUAN, buy, pay, refund, rid
from tests.support.builders import join_member, points_shop
from tests.support.segments import facts_of, facts_when, segments_api


@pytest.fixture
def segments(suite: dict[str, ServiceUnderTest]) -> ServiceUnderTest:
    return suite["segments"]


def membership_part(facts: rules_pb2.MemberFacts) -> rules_pb2.MemberFacts:
    """The facts membership's history makes (points' balance, activity and shares arrive on their
    own, and a rebuild keeps them as they are)."""
    copy = rules_pb2.MemberFacts()
    copy.CopyFrom(facts)
    for name in ("points_balance", "last_activity_time", "shares"):
        copy.ClearField(name)
    return copy


def _history(shop: Shop, api) -> dict[str, rules_pb2.MemberFacts]:
    """Three members with joins, orders (lines, a coupon), a partial and a full refund, a referral,
    a birthday, and one who left; their facts once segments heard everything."""
    lace = shop.api.JoinMember(mpb.JoinMemberRequest(
        request_id=rid(), shop_id=shop.shop_id, buyer_id="b-lace", join_channel=mpb.JOIN_CHANNEL_LIVE_STREAM,
        profile=mpb.Profile(birthday={"year": 1991, "month": 5, "day": 20}, gender=mpb.GENDER_FEMALE),
        consent_fields=[mpb.PROFILE_FIELD_BIRTHDAY, mpb.PROFILE_FIELD_GENDER])).member_id
    friend = shop.api.JoinMember(mpb.JoinMemberRequest(
        request_id=rid(), shop_id=shop.shop_id, buyer_id="b-friend", referrer_member_id=lace,
        join_channel=mpb.JOIN_CHANNEL_REFERRAL_LINK)).member_id
    gone = join_member(shop, "b-gone")
    shop.api.RecordOrder(mpb.RecordOrderRequest(
        shop_id=shop.shop_id, order_id="o-lace-1", buyer_id="b-lace", amount_fen=90 * YUAN, coupon_applied=True,
        lines=[mpb.OrderLine(category_id="lace", quantity=2), mpb.OrderLine(category_id="socks", quantity=1)]))
    shop.api.CompleteOrder(mpb.CompleteOrderRequest(shop_id=shop.shop_id, order_id="o-lace-1"))
    buy(shop, "b-lace", 50 * YUAN)
    partly = pay(shop, "b-friend", 200 * YUAN)
    shop.api.CompleteOrder(mpb.CompleteOrderRequest(shop_id=shop.shop_id, order_id=partly))
    refund(shop, partly, 60 * YUAN)
    fully = pay(shop, "b-friend", 30 * YUAN)
    shop.api.CompleteOrder(mpb.CompleteOrderRequest(shop_id=shop.shop_id, order_id=fully))
    refund(shop, fully, 30 * YUAN)
    buy(shop, "b-gone", 10 * YUAN)
    shop.api.LeaveMember(mpb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=gone))
    return {
        lace: facts_when(api, shop, lace, lambda f: f.trades == 2 and f.referrals == 1, "lace's trades and referral"),
        friend: facts_when(api, shop, friend, lambda f: f.refunds == 2, "friend's refunds"),
        gone: facts_when(api, shop, gone, lambda f: f.left and f.trades == 1, "the leave"),
    }


def test_lost_and_corrupted_facts_are_rebuilt_to_what_the_events_made(segments: ServiceUnderTest,
                                                                     points: ServiceUnderTest, shop: Shop) -> None:
    api = segments_api(segments, shop)
    made = _history(shop, api)
    lace, friend, gone = made
    assert (made[lace].units, made[lace].promoted_trades, list(made[lace].category_ids)) == (3, 1, ["lace", "socks"])
    assert (made[friend].trades, made[friend].spend_fen) == (1, 140 * YUAN)

    # A bug: one member's row and orders lost, another's figures wrong, categories gone.
    db = segments.running.app.db
    def corrupt(uow) -> None:
        mine = member_facts.c.shop_id == shop.shop_id
        uow.conn.execute(delete(member_facts).where(mine, member_facts.c.member_id == friend))
        uow.conn.execute(delete(member_orders).where(member_orders.c.shop_id == shop.shop_id,
                                                     member_orders.c.member_id == friend))
        uow.conn.execute(update(member_facts).where(mine, member_facts.c.member_id == lace).values(
            trades=7, spend_fen=1, tier_level=3))
        uow.conn.execute(delete(member_categories).where(member_categories.c.shop_id == shop.shop_id))
    db.transact(corrupt)
    corrupted = facts_of(api, shop, lace)
    assert corrupted.trades == 7

    done = api.RebuildFacts(spb.RebuildFactsRequest(request_id=rid(), shop_id=shop.shop_id))
    assert (done.members, done.orders) == (3, 5)
    for member_id, facts in made.items():
        assert membership_part(facts_of(api, shop, member_id)) == membership_part(facts), member_id
    # Points' facts are kept (not zeroed by the rebuild): the balance is points' own.
    ps = points_shop(points, shop)
    facts_when(api, shop, lace, lambda f: f.points_balance > 0 and f.points_balance == ps.api.GetBalance(
        pp.GetBalanceRequest(shop_id=shop.shop_id, member_id=lace)).available, "lace's balance kept")
    # Again: the same facts (nothing is added twice).
    once = {member_id: facts_of(api, shop, member_id) for member_id in made}
    api.RebuildFacts(spb.RebuildFactsRequest(request_id=rid(), shop_id=shop.shop_id))
    for member_id, facts in once.items():
        assert membership_part(facts_of(api, shop, member_id)) == membership_part(facts), member_id


def test_a_rebuild_keeps_to_its_shop_and_checks_its_request(segments: ServiceUnderTest, membership: ServiceUnderTest,
                                                          admin, shop: Shop) -> None:
    api = segments_api(segments, shop)
    other = create_shop(membership, admin)
    theirs = join_member(other, "b-theirs")
    other_api = segments_api(segments, other)
    before = facts_when(other_api, other, theirs, lambda f: f.member_id, "the other shop's member")
    mine = join_member(shop, "b-mine")
    facts_when(api, shop, mine, lambda f: f.member_id, "this shop's member")
    assert api.RebuildFacts(spb.RebuildFactsRequest(request_id=rid(), shop_id=shop.shop_id)).members == 1
    # (points' facts of that member may still arrive meanwhile: they come on their own)
    assert membership_part(facts_of(other_api, other, theirs)) == membership_part(before)
    with pytest.raises(grpc.RpcError) as caught:
        api.RebuildFacts(spb.RebuildFactsRequest(shop_id=shop.shop_id))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:  # another shop's, with this shop's key
        api.RebuildFacts(spb.RebuildFactsRequest(request_id=rid(), shop_id=other.shop_id))
    assert caught.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
