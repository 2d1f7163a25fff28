"""Contract tests of the rewards catalogue (积分商城) through a real gRPC server, on both backends:
operators create, read, change and restock rewards; a member's ListRewards shows what they can
redeem now and, when asked, why not the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.rewards.v1 import rewards_service_pb2 as rpb

from services.rewards import reasons
from tests.conftest import Authed, ServiceUnderTest, Shop, failure_of
from tests.support.builders import rid
from tests.support.rewards import create_reward, fund, join_member, member_view, reward_message, rewards_api


def ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def refused(call, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return failure_of(caught.value)


@pytest.fixture
def api(rewards: ServiceUnderTest, shop: Shop) -> Authed:
    return rewards_api(rewards, shop)


def create_request(shop: Shop, **fields: object) -> rpb.CreateRewardRequest:
    return rpb.CreateRewardRequest(request_id=rid(), shop_id=shop.shop_id, reward=reward_message(**fields))


# ----- create and get --------------------------------------------------------------------------------


def test_a_coupon_reward_is_created_active_with_an_id_and_read_back(api: Authed, shop: Shop) -> None:
    created = create_reward(api, shop.shop_id, description="满99减10 券", min_tier_level=1, limit_per_member=2,
                            monthly_limit_per_member=1, cash_price_fen=500)
    assert created.reward_id.startswith("rw_") and created.shop_id == shop.shop_id
    assert created.status == rpb.REWARD_STATUS_ACTIVE and created.kind == rpb.REWARD_KIND_COUPON
    assert (created.coupon.face_value_fen, created.coupon.threshold_fen, created.coupon.valid_days) == (1000, 9900, 30)
    assert (created.points_price, created.cash_price_fen, created.stock, created.redeemed) == (100, 500, 10, 0)
    assert created.create_time.seconds > 0
    read = api.GetReward(rpb.GetRewardRequest(shop_id=shop.shop_id, reward_id=created.reward_id))
    assert read == created


def test_gifts_and_virtual_goods_keep_their_specs(api: Authed, shop: Shop) -> None:
    gift = create_reward(api, shop.shop_id, name="保温杯", kind=rpb.REWARD_KIND_GIFT, unlimited_stock=True, stock=0,
                         gift=rpb.GiftSpec(gift_class=rpb.GIFT_CLASS_HIGH_VALUE, ship_with_next_order=True))
    assert gift.gift.gift_class == rpb.GIFT_CLASS_HIGH_VALUE and gift.gift.ship_with_next_order
    assert gift.unlimited_stock and not gift.HasField("coupon")
    stored_value = create_reward(api, shop.shop_id, name="购物金 充100得110", kind=rpb.REWARD_KIND_VIRTUAL,
                                 virtual=rpb.VirtualSpec(virtual_kind=rpb.VIRTUAL_KIND_STORED_VALUE,
                                                         top_up_fen=10000, bonus_fen=1000))
    read = api.GetReward(rpb.GetRewardRequest(shop_id=shop.shop_id, reward_id=stored_value.reward_id))
    assert (read.virtual.top_up_fen, read.virtual.bonus_fen) == (10000, 1000)


def test_a_coupon_with_a_fixed_window_is_kept(api: Authed, shop: Shop) -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    created = create_reward(api, shop.shop_id, coupon=rpb.CouponSpec(
        face_value_fen=500, valid_from=ts(start), valid_until=ts(start + timedelta(days=7))))
    assert created.coupon.valid_from == ts(start) and created.coupon.valid_days == 0


def test_a_retried_create_makes_one_reward(api: Authed, shop: Shop) -> None:
    request = create_request(shop)
    assert api.CreateReward(request).reward_id == api.CreateReward(request).reward_id


@pytest.mark.parametrize(("fields", "field"), [
    ({"name": ""}, "reward.name"),
    ({"name": "x" * 101}, "reward.name"),
    ({"kind": rpb.REWARD_KIND_UNSPECIFIED}, "reward.kind"),
    ({"kind": rpb.REWARD_KIND_GIFT}, "reward.gift"),
    ({"gift": rpb.GiftSpec(), "coupon": rpb.CouponSpec(face_value_fen=1, valid_days=1)}, "reward.gift"),
    ({"coupon": rpb.CouponSpec(face_value_fen=0, valid_days=1)}, "reward.coupon.face_value_fen"),
    ({"coupon": rpb.CouponSpec(face_value_fen=100, threshold_fen=-1, valid_days=1)}, "reward.coupon.threshold_fen"),
    ({"coupon": rpb.CouponSpec(face_value_fen=100)}, "reward.coupon.valid_until"),
    ({"coupon": rpb.CouponSpec(face_value_fen=100, valid_days=3661)}, "reward.coupon.valid_days"),
    ({"coupon": rpb.CouponSpec(face_value_fen=100, valid_from=Timestamp(seconds=2_000_000_000),
                               valid_until=Timestamp(seconds=1_999_999_999))}, "reward.coupon.valid_until"),
    ({"coupon": rpb.CouponSpec(face_value_fen=100, valid_days=3, valid_until=Timestamp(seconds=2_000_000_000))},
     "reward.coupon.valid_days"),
    ({"points_price": 0}, "reward.points_price"),
    ({"points_price": -1}, "reward.points_price"),
    ({"cash_price_fen": -5}, "reward.cash_price_fen"),
    ({"stock": -1}, "reward.stock"),
    ({"limit_per_member": -1}, "reward.limit_per_member"),
    ({"monthly_limit_per_member": -1}, "reward.monthly_limit_per_member"),
    ({"start_time": Timestamp(seconds=2_000_000_000), "end_time": Timestamp(seconds=2_000_000_000)},
     "reward.end_time"),
    ({"kind": rpb.REWARD_KIND_VIRTUAL, "virtual": rpb.VirtualSpec()}, "reward.virtual.virtual_kind"),
    ({"kind": rpb.REWARD_KIND_VIRTUAL, "virtual": rpb.VirtualSpec(virtual_kind=rpb.VIRTUAL_KIND_STORED_VALUE)},
     "reward.virtual.top_up_fen"),
])
def test_a_bad_reward_is_refused_with_the_field_named(api: Authed, shop: Shop, fields: dict, field: str) -> None:
    failure = refused(api.CreateReward, create_request(shop, **fields))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in failure.fields, failure.fields


def test_points_plus_cash_and_cash_only_are_accepted(api: Authed, shop: Shop) -> None:
    assert create_reward(api, shop.shop_id, points_price=0, cash_price_fen=990).cash_price_fen == 990


def test_create_needs_a_request_id(api: Authed, shop: Shop) -> None:
    request = create_request(shop)
    request.request_id = ""
    assert refused(api.CreateReward, request).fields.keys() == {"request_id"}


def test_an_unknown_reward_is_not_found(api: Authed, shop: Shop) -> None:
    failure = refused(api.GetReward, rpb.GetRewardRequest(shop_id=shop.shop_id, reward_id="rw_nope"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, reasons.REWARD_NOT_FOUND)


# ----- the member's view -------------------------------------------------------------------------------


def test_a_member_rewards_heard_of_sees_what_they_can_redeem(api: Authed, shop: Shop,
                                                             points: ServiceUnderTest) -> None:
    reward = create_reward(api, shop.shop_id)
    member_id = join_member(shop)
    assert fund(points, shop, member_id, 300).balance.available >= 300
    offers = member_view(api, shop.shop_id, member_id, include_unavailable=False)
    assert [(o.reward.reward_id, o.redeemable, list(o.unavailable_reasons)) for o in offers] == [
        (reward.reward_id, True, [])]


def test_someone_rewards_never_heard_of_is_not_a_member(api: Authed, shop: Shop) -> None:
    reward = create_reward(api, shop.shop_id)
    assert member_view(api, shop.shop_id, "m_unknown", include_unavailable=False) == []
    [offer] = member_view(api, shop.shop_id, "m_unknown")
    assert offer.reward.reward_id == reward.reward_id and not offer.redeemable
    assert list(offer.unavailable_reasons) == [reasons.NOT_A_MEMBER]
