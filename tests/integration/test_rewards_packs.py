"""Benefit packs through the public API, on both backends: the join pack's points land in points'
ledger and its coupon in the wallet, once; a tier upgrade pack once per tier reached; the
scheduled packs (monthly, birthday, a month after joining) once per period when the periodic
worker's pass runs; and packs that cannot be given are refused clearly."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.type import date_pb2
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.points.v1 import points_service_pb2 as pp
from loyalty.points.v1 import points_service_pb2_grpc as pgrpc
from loyalty.rewards.v1 import rewards_service_pb2 as rpb

from services.kit.timeutil import utcnow
from services.rewards import packs
from services.rewards.domain import month_end, month_of, zone_of
from tests.conftest import Authed, create_shop, failure_of
from tests.support.builders import eventually, rid
from tests.support.coupons import wallet
from tests.support.rewards import create_reward, join_member, rewards_api, set_tier


def _pack(api: Authed, shop_id: str, trigger: int, *, points: int = 0, items: list[rpb.PackItem] | None = None,
          **fields: Any) -> rpb.BenefitPack:
    return api.CreateBenefitPack(rpb.CreateBenefitPackRequest(request_id=rid(), shop_id=shop_id, pack=rpb.BenefitPack(
        name="礼包", trigger=trigger, enabled=True, points=points, items=items or [], **fields)))


def _grants(api: Authed, shop_id: str, member_id: str) -> list[rpb.PackGrant]:
    return list(api.ListPackGrants(rpb.ListPackGrantsRequest(shop_id=shop_id, member_id=member_id)).grants)


def _run_scheduled_pass(rewards: Any, now: Any = None) -> int:
    """The periodic worker's pass over the scheduled packs, run now rather than on its minute."""
    return packs.grant_due(rewards.running.app.servicer.service, now)


@pytest.fixture
def api(rewards: Any, shop: Any) -> Authed:
    return rewards_api(rewards, shop)


def test_the_join_pack_puts_points_in_the_ledger_and_a_coupon_in_the_wallet_once(
        api: Authed, shop: Any, points: Any) -> None:
    coupon = create_reward(api, shop.shop_id, name="入会券 满99减10")
    pack = _pack(api, shop.shop_id, rpb.PACK_TRIGGER_JOIN, points=88,
                 items=[rpb.PackItem(reward_id=coupon.reward_id, quantity=2)])
    member_id = join_member(shop)

    (grant,) = eventually(lambda: _grants(api, shop.shop_id, member_id), "the join pack is granted")
    assert (grant.pack_id, grant.trigger, grant.period, grant.points) == (pack.pack_id, rpb.PACK_TRIGGER_JOIN,
                                                                          "join", 88)
    assert len(grant.coupon_ids) == 2 and len(set(grant.coupon_ids)) == 2
    credited = eventually(lambda: [g for g in _grants(api, shop.shop_id, member_id) if g.points_credited],
                          "points credits the pack's points", timeout=30)
    assert credited[0].grant_id == grant.grant_id

    ledger = Authed(pgrpc.PointsServiceStub(points.channel), shop.key).ListLedger(
        pp.ListLedgerRequest(shop_id=shop.shop_id, member_id=member_id))
    from_pack = [e for e in ledger.entries if e.source.reference == f"pack:{pack.pack_id}"]
    assert [(e.kind, e.amount) for e in from_pack] == [(pp.ENTRY_KIND_EARN, 88)]  # once, however often retried


def test_an_imported_member_gets_no_join_pack(api: Authed, shop: Any, rewards: Any) -> None:
    coupon = create_reward(api, shop.shop_id)
    _pack(api, shop.shop_id, rpb.PACK_TRIGGER_JOIN, items=[rpb.PackItem(reward_id=coupon.reward_id)])
    imported = shop.api.ImportMembers(mpb.ImportMembersRequest(request_id=rid(), shop_id=shop.shop_id, members=[
        mpb.ImportedMember(buyer_id="b-" + uuid.uuid4().hex[:8])]))
    member_id = imported.member_ids[0]
    joined = join_member(shop)  # after the import in the same stream: once rewards knows it, it knows both
    assert eventually(lambda: _grants(api, shop.shop_id, joined), "the joiner's pack")
    assert _grants(api, shop.shop_id, member_id) == []


def test_a_tier_upgrade_pack_is_given_once_per_tier_reached(api: Authed, shop: Any) -> None:
    coupon = create_reward(api, shop.shop_id)
    pack = _pack(api, shop.shop_id, rpb.PACK_TRIGGER_TIER_UPGRADE, items=[rpb.PackItem(reward_id=coupon.reward_id)],
                 tier_levels=[2, 3])
    member_id = join_member(shop)
    set_tier(shop, member_id, 2)
    (grant,) = eventually(lambda: _grants(api, shop.shop_id, member_id), "the upgrade pack")
    assert (grant.pack_id, grant.period) == (pack.pack_id, "tier-2")

    set_tier(shop, member_id, 1)  # down, and back up: tier 2 was reached before
    set_tier(shop, member_id, 2)
    set_tier(shop, member_id, 4)  # a tier the pack is not for
    set_tier(shop, member_id, 3)  # reached downwards: not an upgrade
    probe = create_reward(api, shop.shop_id)  # a marker: once rewards has caught up, it lists for tier 3
    eventually(lambda: any(o.reward.reward_id == probe.reward_id and o.redeemable for o in api.ListRewards(
        rpb.ListRewardsRequest(shop_id=shop.shop_id, member_id=member_id)).rewards), "rewards caught up")
    assert [g.period for g in _grants(api, shop.shop_id, member_id)] == ["tier-2"]


def test_the_monthly_pack_is_given_once_a_month_to_the_chosen_tiers(api: Authed, shop: Any, rewards: Any) -> None:
    coupon = create_reward(api, shop.shop_id)
    pack = _pack(api, shop.shop_id, rpb.PACK_TRIGGER_MONTHLY, items=[rpb.PackItem(reward_id=coupon.reward_id)],
                 tier_levels=[2])
    gold, plain = join_member(shop), join_member(shop)
    set_tier(shop, gold, 2)
    eventually(lambda: _run_scheduled_pass(rewards) and _grants(api, shop.shop_id, gold), "the monthly pack")
    month = month_of(utcnow(), zone_of(None))
    assert [(g.pack_id, g.period) for g in _grants(api, shop.shop_id, gold)] == [(pack.pack_id, month)]
    (coupon_id,) = _grants(api, shop.shop_id, gold)[0].coupon_ids
    (issued,) = [c for c in wallet(api, shop.shop_id, gold) if c.coupon_id == coupon_id]
    # 当月权益: valid that month only, though the reward's coupons last 30 days.
    assert issued.valid_until.ToDatetime() == month_end(utcnow(), zone_of(None))
    assert _grants(api, shop.shop_id, plain) == []

    _run_scheduled_pass(rewards)  # the same month again: nothing more
    assert len(_grants(api, shop.shop_id, gold)) == 1
    next_month = utcnow() + timedelta(days=32)
    _run_scheduled_pass(rewards, next_month)
    assert sorted(g.period for g in _grants(api, shop.shop_id, gold)) == sorted(
        [month, month_of(next_month, zone_of(None))])


def test_the_birthday_pack_is_given_in_the_birth_month_once_a_year(api: Authed, shop: Any, rewards: Any) -> None:
    coupon = create_reward(api, shop.shop_id)
    _pack(api, shop.shop_id, rpb.PACK_TRIGGER_BIRTHDAY, items=[rpb.PackItem(reward_id=coupon.reward_id)])
    this_month = int(month_of(utcnow(), zone_of(None))[5:])
    other_month = this_month % 12 + 1
    consent = [mpb.PROFILE_FIELD_BIRTHDAY]
    born_now = join_member(shop, profile=mpb.Profile(birthday=date_pb2.Date(year=1990, month=this_month, day=1)),
                           consent_fields=consent)
    born_later = join_member(shop, profile=mpb.Profile(birthday=date_pb2.Date(year=1990, month=other_month, day=1)),
                             consent_fields=consent)
    eventually(lambda: _run_scheduled_pass(rewards) and _grants(api, shop.shop_id, born_now), "the birthday pack")
    _run_scheduled_pass(rewards)
    assert [g.period for g in _grants(api, shop.shop_id, born_now)] == [month_of(utcnow(), zone_of(None))[:4]]
    assert _grants(api, shop.shop_id, born_later) == []


def test_the_month_after_joining_pack_waits_a_calendar_month(api: Authed, shop: Any, rewards: Any) -> None:
    coupon = create_reward(api, shop.shop_id)
    _pack(api, shop.shop_id, rpb.PACK_TRIGGER_MONTH_AFTER_JOIN, items=[rpb.PackItem(reward_id=coupon.reward_id)])
    member_id = join_member(shop)
    _run_scheduled_pass(rewards, utcnow() + timedelta(days=20))
    assert _grants(api, shop.shop_id, member_id) == []
    _run_scheduled_pass(rewards, utcnow() + timedelta(days=32))
    assert [g.period for g in _grants(api, shop.shop_id, member_id)] == ["month-after-join"]


def test_packs_that_cannot_be_given_are_refused_clearly(api: Authed, shop: Any, rewards: Any, membership: Any,
                                                        admin: Any) -> None:
    gift = create_reward(api, shop.shop_id, kind=rpb.REWARD_KIND_GIFT, gift=rpb.GiftSpec(
        gift_class=rpb.GIFT_CLASS_PARTICIPATION))
    with pytest.raises(grpc.RpcError) as caught:
        _pack(api, shop.shop_id, rpb.PACK_TRIGGER_JOIN, items=[rpb.PackItem(reward_id=gift.reward_id)])
    assert (failure_of(caught.value).code, failure_of(caught.value).reason) == (
        grpc.StatusCode.FAILED_PRECONDITION, "PACK_ITEM_NOT_PACKABLE")

    with pytest.raises(grpc.RpcError) as caught:
        _pack(api, shop.shop_id, 0, points=10)
    assert failure_of(caught.value).code == grpc.StatusCode.INVALID_ARGUMENT
    assert "pack.trigger" in failure_of(caught.value).fields

    with pytest.raises(grpc.RpcError) as caught:
        _pack(api, shop.shop_id, rpb.PACK_TRIGGER_JOIN)  # gives nothing
    assert "pack" in failure_of(caught.value).fields

    other_shop = create_shop(membership, admin)
    theirs = create_reward(rewards_api(rewards, other_shop), other_shop.shop_id)
    with pytest.raises(grpc.RpcError) as caught:
        _pack(api, shop.shop_id, rpb.PACK_TRIGGER_JOIN, items=[rpb.PackItem(reward_id=theirs.reward_id)])
    assert failure_of(caught.value).code == grpc.StatusCode.NOT_FOUND


def test_a_pack_is_updated_by_mask_and_a_disabled_pack_gives_nothing(api: Authed, shop: Any) -> None:
    coupon = create_reward(api, shop.shop_id)
    pack = _pack(api, shop.shop_id, rpb.PACK_TRIGGER_JOIN, points=10, items=[rpb.PackItem(reward_id=coupon.reward_id)])
    updated = api.UpdateBenefitPack(rpb.UpdateBenefitPackRequest(
        request_id=rid(), shop_id=shop.shop_id, pack=rpb.BenefitPack(pack_id=pack.pack_id, enabled=False),
        update_mask=FieldMask(paths=["enabled"])))
    assert (updated.enabled, updated.points, updated.name, len(updated.items)) == (False, 10, "礼包", 1)
    listed = api.ListBenefitPacks(rpb.ListBenefitPacksRequest(shop_id=shop.shop_id)).packs
    assert [(p.pack_id, p.enabled) for p in listed] == [(pack.pack_id, False)]

    member_id = join_member(shop)
    probe = join_member(shop)  # a later member known to rewards: the first one's event was handled
    assert probe and _grants(api, shop.shop_id, member_id) == []
