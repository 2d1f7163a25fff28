"""Contract tests of the rewards catalogue (积分商城) through a real gRPC server, on both backends:
operators create, read, change and restock rewards; a member's ListRewards shows what they can
redeem now and, when asked, why not the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.rewards.v1 import rewards_service_pb2 as rpb

from services.rewards import reasons
from tests.conftest import Authed, ServiceUnderTest, Shop, create_shop, failure_of
from tests.support.builders import eventually, rid
from tests.support.rewards import (
    create_reward,
    fund,
    join_member,
    member_view,
    reward_message,
    rewards_api,
    set_tier,
)


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


# ----- update ----------------------------------------------------------------------------------------


def update(api: Authed, shop: Shop, reward: rpb.Reward, *paths: str) -> rpb.Reward:
    return api.UpdateReward(rpb.UpdateRewardRequest(request_id=rid(), shop_id=shop.shop_id, reward=reward,
                                                    update_mask=FieldMask(paths=list(paths))))


def test_an_update_changes_the_masked_fields_only(api: Authed, shop: Shop) -> None:
    created = create_reward(api, shop.shop_id, description="old")
    changes = rpb.Reward(reward_id=created.reward_id, name="满199减30", description="ignored", points_price=250,
                         coupon=rpb.CouponSpec(face_value_fen=3000, threshold_fen=19900, valid_days=7), stock=999)
    updated = update(api, shop, changes, "name", "points_price", "coupon")
    assert (updated.name, updated.description, updated.points_price) == ("满199减30", "old", 250)
    assert (updated.coupon.face_value_fen, updated.coupon.threshold_fen, updated.coupon.valid_days) == (3000, 19900, 7)
    assert updated.stock == 10, "stock changes only through AddStock"
    assert updated.update_time.ToDatetime() >= created.update_time.ToDatetime()
    assert api.GetReward(rpb.GetRewardRequest(shop_id=shop.shop_id, reward_id=created.reward_id)) == updated


def test_an_update_can_pause_a_reward_and_open_its_window(api: Authed, shop: Shop) -> None:
    created = create_reward(api, shop.shop_id, end_time=ts(datetime(2031, 1, 1, tzinfo=UTC)))
    paused = update(api, shop, rpb.Reward(reward_id=created.reward_id, status=rpb.REWARD_STATUS_PAUSED),
                    "status", "end_time")
    assert paused.status == rpb.REWARD_STATUS_PAUSED and not paused.HasField("end_time")


@pytest.mark.parametrize(("changes", "paths", "field"), [
    ({"name": ""}, ["name"], "reward.name"),
    ({"points_price": -1}, ["points_price"], "reward.points_price"),
    ({"points_price": 0}, ["points_price"], "reward.points_price"),  # and no cash price: free is refused
    ({"status": rpb.REWARD_STATUS_UNSPECIFIED}, ["status"], "reward.status"),
    ({"gift": rpb.GiftSpec()}, ["gift"], "reward.gift"),  # a coupon reward stays a coupon
    ({}, ["coupon"], "reward.coupon"),  # the spec cannot be taken away
    ({"coupon": rpb.CouponSpec(face_value_fen=0, valid_days=1)}, ["coupon"], "reward.coupon.face_value_fen"),
    ({"start_time": ts(datetime(2040, 1, 1, tzinfo=UTC))}, ["start_time"], "reward.end_time"),
    ({}, ["kind"], "update_mask"),
    ({}, ["stock"], "update_mask"),
    ({}, [], "update_mask"),
])
def test_a_bad_update_is_refused_and_changes_nothing(api: Authed, shop: Shop, changes: dict, paths: list[str],
                                                      field: str) -> None:
    created = create_reward(api, shop.shop_id, end_time=ts(datetime(2039, 1, 1, tzinfo=UTC)))
    failure = refused(update, api, shop, rpb.Reward(reward_id=created.reward_id, **changes), *paths)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and field in failure.fields, failure.fields
    assert api.GetReward(rpb.GetRewardRequest(shop_id=shop.shop_id, reward_id=created.reward_id)) == created


def test_a_full_update_replaces_every_settable_field(api: Authed, shop: Shop) -> None:
    created = create_reward(api, shop.shop_id, limit_per_member=3)
    replacement = reward_message(name="新券", points_price=80, reward_id=created.reward_id,
                                 status=rpb.REWARD_STATUS_ACTIVE)
    updated = update(api, shop, replacement, "*")
    assert (updated.name, updated.points_price, updated.limit_per_member, updated.stock) == ("新券", 80, 0, 10)


# ----- stock -------------------------------------------------------------------------------------------


def add_stock(api: Authed, shop: Shop, reward_id: str, delta: int, request_id: str | None = None) -> rpb.Reward:
    return api.AddStock(rpb.AddStockRequest(request_id=request_id or rid(), shop_id=shop.shop_id,
                                            reward_id=reward_id, delta=delta))


def test_stock_is_added_and_taken_by_deltas_and_never_below_zero(api: Authed, shop: Shop) -> None:
    reward = create_reward(api, shop.shop_id, stock=5)
    assert add_stock(api, shop, reward.reward_id, 20).stock == 25
    assert add_stock(api, shop, reward.reward_id, -24).stock == 1
    failure = refused(add_stock, api, shop, reward.reward_id, -2)
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, reasons.OUT_OF_STOCK)
    assert add_stock(api, shop, reward.reward_id, -1).stock == 0
    assert api.GetReward(rpb.GetRewardRequest(shop_id=shop.shop_id, reward_id=reward.reward_id)).stock == 0


def test_a_retried_restock_adds_once(api: Authed, shop: Shop) -> None:
    reward = create_reward(api, shop.shop_id, stock=0)
    request_id = rid()
    assert add_stock(api, shop, reward.reward_id, 7, request_id).stock == 7
    assert add_stock(api, shop, reward.reward_id, 7, request_id).stock == 7
    assert api.GetReward(rpb.GetRewardRequest(shop_id=shop.shop_id, reward_id=reward.reward_id)).stock == 7


def test_a_zero_delta_or_one_past_the_largest_stock_is_refused(api: Authed, shop: Shop) -> None:
    reward = create_reward(api, shop.shop_id, stock=10)
    assert "delta" in refused(add_stock, api, shop, reward.reward_id, 0).fields
    assert "delta" in refused(add_stock, api, shop, reward.reward_id, 1_000_000_000 - 9).fields
    assert add_stock(api, shop, reward.reward_id, 1_000_000_000 - 10).stock == 1_000_000_000


def test_an_update_names_its_reward(api: Authed, shop: Shop) -> None:
    failure = refused(update, api, shop, rpb.Reward(name="x"), "name")
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "reward.reward_id" in failure.fields


# ----- shops -------------------------------------------------------------------------------------------


def test_another_shops_reward_is_not_found_on_every_catalogue_rpc(api: Authed, shop: Shop, rewards: ServiceUnderTest,
                                                                  membership: ServiceUnderTest,
                                                                  admin: Authed) -> None:
    theirs = create_reward(api, shop.shop_id)
    other = create_shop(membership, admin)
    mine = rewards_api(rewards, other)
    calls = [
        lambda: mine.GetReward(rpb.GetRewardRequest(shop_id=other.shop_id, reward_id=theirs.reward_id)),
        lambda: update(mine, other, rpb.Reward(reward_id=theirs.reward_id, name="taken"), "name"),
        lambda: add_stock(mine, other, theirs.reward_id, 5),
    ]
    for call in calls:
        failure = refused(call)
        assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, reasons.REWARD_NOT_FOUND)
    listed = mine.ListRewards(rpb.ListRewardsRequest(shop_id=other.shop_id))
    assert theirs.reward_id not in [o.reward.reward_id for o in listed.rewards]
    assert api.GetReward(rpb.GetRewardRequest(shop_id=shop.shop_id, reward_id=theirs.reward_id)) == theirs


def test_a_shop_key_cannot_reach_another_shop(api: Authed, shop: Shop, membership: ServiceUnderTest,
                                              admin: Authed) -> None:
    other = create_shop(membership, admin)
    failure = refused(api.ListRewards, rpb.ListRewardsRequest(shop_id=other.shop_id))
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED


# ----- lists -------------------------------------------------------------------------------------------


def test_the_operators_list_pages_through_every_reward_in_order(api: Authed, shop: Shop) -> None:
    made = [create_reward(api, shop.shop_id, name=f"券{i}").reward_id for i in range(5)]
    seen, token, pages = [], "", 0
    while True:
        page = api.ListRewards(rpb.ListRewardsRequest(shop_id=shop.shop_id, page_size=2, page_token=token))
        assert all(o.redeemable and not o.unavailable_reasons for o in page.rewards)
        seen += [o.reward.reward_id for o in page.rewards]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == made and pages == 3


def test_the_list_filters_by_kind(api: Authed, shop: Shop) -> None:
    create_reward(api, shop.shop_id)
    gift = create_reward(api, shop.shop_id, kind=rpb.REWARD_KIND_GIFT, gift=rpb.GiftSpec())
    page = api.ListRewards(rpb.ListRewardsRequest(shop_id=shop.shop_id, kind=rpb.REWARD_KIND_GIFT))
    assert [o.reward.reward_id for o in page.rewards] == [gift.reward_id]


def test_a_page_token_is_bound_to_its_shop(api: Authed, shop: Shop, rewards: ServiceUnderTest,
                                           membership: ServiceUnderTest, admin: Authed) -> None:
    for _ in range(2):
        create_reward(api, shop.shop_id)
    token = api.ListRewards(rpb.ListRewardsRequest(shop_id=shop.shop_id, page_size=1)).next_page_token
    other = create_shop(membership, admin)
    failure = refused(rewards_api(rewards, other).ListRewards,
                      rpb.ListRewardsRequest(shop_id=other.shop_id, page_token=token))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in failure.fields
    assert "page_token" in refused(api.ListRewards, rpb.ListRewardsRequest(shop_id=shop.shop_id,
                                                                          page_token="garbage")).fields


def offers_by_name(api: Authed, shop: Shop, member_id: str, **request: object) -> dict[str, list[str]]:
    return {o.reward.name: list(o.unavailable_reasons)
            for o in member_view(api, shop.shop_id, member_id, **request)}


def test_a_member_sees_only_what_they_can_redeem_and_why_not_the_rest(api: Authed, shop: Shop) -> None:
    now = datetime.now(UTC)
    create_reward(api, shop.shop_id, name="open")
    create_reward(api, shop.shop_id, name="unlimited", unlimited_stock=True, stock=0)
    create_reward(api, shop.shop_id, name="gold only", min_tier_level=2)
    create_reward(api, shop.shop_id, name="later", start_time=ts(now + timedelta(days=3)))
    create_reward(api, shop.shop_id, name="over", start_time=ts(now - timedelta(days=3)),
                  end_time=ts(now - timedelta(days=1)))
    create_reward(api, shop.shop_id, name="sold out", stock=0)
    paused = create_reward(api, shop.shop_id, name="paused")
    update(api, shop, rpb.Reward(reward_id=paused.reward_id, status=rpb.REWARD_STATUS_PAUSED), "status")
    archived = create_reward(api, shop.shop_id, name="archived")
    update(api, shop, rpb.Reward(reward_id=archived.reward_id, status=rpb.REWARD_STATUS_ARCHIVED), "status")
    member_id = join_member(shop)

    assert offers_by_name(api, shop, member_id, include_unavailable=False) == {"open": [], "unlimited": []}
    assert offers_by_name(api, shop, member_id) == {
        "open": [], "unlimited": [], "gold only": [reasons.TIER_TOO_LOW], "later": [reasons.NOT_STARTED],
        "over": [reasons.ENDED], "sold out": [reasons.OUT_OF_STOCK], "paused": [reasons.NOT_ACTIVE]}
    operators = api.ListRewards(rpb.ListRewardsRequest(shop_id=shop.shop_id))
    assert len(operators.rewards) == 8, "operators see paused and archived rewards too"


def test_a_member_raised_to_the_tier_sees_the_reward(api: Authed, shop: Shop) -> None:
    create_reward(api, shop.shop_id, name="gold only", min_tier_level=2)
    member_id = join_member(shop)
    assert offers_by_name(api, shop, member_id) == {"gold only": [reasons.TIER_TOO_LOW]}
    set_tier(shop, member_id, 2)
    eventually(lambda: offers_by_name(api, shop, member_id, include_unavailable=False) == {"gold only": []},
               "rewards heard of the new tier", timeout=30.0)


def test_a_member_who_left_is_not_a_member(api: Authed, shop: Shop) -> None:
    create_reward(api, shop.shop_id, name="open")
    member_id = join_member(shop)
    shop.api.LeaveMember(mpb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member_id))
    eventually(lambda: offers_by_name(api, shop, member_id) == {"open": [reasons.NOT_A_MEMBER]},
               "rewards heard the member left", timeout=30.0)
    assert offers_by_name(api, shop, member_id, include_unavailable=False) == {}


def test_a_members_redeemable_list_pages_past_what_they_cannot_redeem(api: Authed, shop: Shop) -> None:
    made = []
    for i in range(7):
        made.append(create_reward(api, shop.shop_id, name=f"open {i}").reward_id)
        create_reward(api, shop.shop_id, name=f"gold {i}", min_tier_level=3)
    member_id = join_member(shop)
    seen, token, pages = [], "", 0
    while True:
        page = api.ListRewards(rpb.ListRewardsRequest(shop_id=shop.shop_id, member_id=member_id, page_size=3,
                                                      page_token=token))
        assert all(o.redeemable for o in page.rewards)
        seen += [o.reward.reward_id for o in page.rewards]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == made and pages == 3
    everything = member_view(api, shop.shop_id, member_id, page_size=4)
    assert len(everything) == 14 and sum(o.redeemable for o in everything) == 7
