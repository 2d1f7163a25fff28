"""Contract tests of the coupon wallet (卡券包) of loyalty.rewards.v1.RewardsService, through the
real gRPC API on both backends: direct issuance to a list of members, the member's wallet, using
a coupon once, giving it back when its order is cancelled, and expiry."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.rewards.v1 import events_pb2 as rev
from loyalty.rewards.v1 import rewards_service_pb2 as rp
from loyalty.rewards.v1 import rewards_service_pb2_grpc as rgrpc

from tests.conftest import ADMIN_KEY, Authed, Failure, ServiceUnderTest, create_shop, failure_of
from tests.support.builders import rid
from tests.support.coupons import YUAN, coupon_reward, issue, issue_one, leave, release, use, wallet
from tests.support.events import outbox_events
from tests.support.rewards import create_reward, join_member, rewards_api

UNUSED, USED, EXPIRED = rp.COUPON_STATE_UNUSED, rp.COUPON_STATE_USED, rp.COUPON_STATE_EXPIRED


def now() -> datetime:
    return datetime.now(UTC)


def at(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def refused(call: Callable[..., object], *args: object, **kwargs: object) -> Failure:
    """How a call that must fail failed."""
    with pytest.raises(grpc.RpcError) as raised:
        call(*args, **kwargs)
    return failure_of(raised.value)


# ----- issuance ----------------------------------------------------------------------------------------


def test_issuing_to_a_list_skips_strangers_and_leavers_and_a_retry_issues_nothing_more(
        membership: ServiceUnderTest, admin: Authed, rewards: ServiceUnderTest) -> None:
    zone = ZoneInfo("America/Los_Angeles")
    shop = create_shop(membership, admin, time_zone="America/Los_Angeles")
    api = rewards_api(rewards, shop)
    reward = coupon_reward(api, shop.shop_id, face_value_fen=10 * YUAN, threshold_fen=99 * YUAN, valid_days=3)
    first, second, leaver = (join_member(shop) for _ in range(3))
    leave(api, shop, leaver)
    request_id = rid()

    answer = issue(api, shop.shop_id, reward.reward_id, [first, second, first, leaver, "stranger"], request_id)

    assert answer.issued == 2
    assert sorted(c.member_id for c in answer.coupons) == sorted([first, second])
    assert list(answer.skipped_member_ids) == [leaver, "stranger"]
    again = issue(api, shop.shop_id, reward.reward_id, [first, second, first, leaver, "stranger"], request_id)
    assert again == answer
    for member_id in (first, second):
        (coupon,) = wallet(api, shop.shop_id, member_id)
        assert (coupon.state, coupon.face_value_fen, coupon.threshold_fen, coupon.reward_id, coupon.name) == (
            UNUSED, 10 * YUAN, 99 * YUAN, reward.reward_id, reward.name)
        assert (coupon.source, coupon.source_reference) == (rp.COUPON_SOURCE_OPERATOR, request_id)
        # Valid from issue through the end of the shop-local day two days later (valid_days 3).
        issued = at(coupon.issue_time)
        last_day = issued.astimezone(zone).date() + timedelta(days=3)
        assert at(coupon.valid_from) == issued
        assert at(coupon.valid_until) == datetime(last_day.year, last_day.month, last_day.day, tzinfo=zone)
    assert wallet(api, shop.shop_id, leaver) == []
    issued_events = outbox_events(rewards.running.app.db, shop.shop_id, rev.CouponIssued)
    assert sorted(e.coupon_id for e in issued_events) == sorted(c.coupon_id for c in answer.coupons)


def test_direct_issuance_takes_no_stock(membership: ServiceUnderTest, admin: Authed,
                                        rewards: ServiceUnderTest) -> None:
    shop = create_shop(membership, admin)
    api = rewards_api(rewards, shop)
    reward = create_reward(api, shop.shop_id, name="5元券", stock=1,
                           coupon=rp.CouponSpec(face_value_fen=5 * YUAN, valid_days=7))
    member_id = join_member(shop)

    issue(api, shop.shop_id, reward.reward_id, [member_id])
    issue(api, shop.shop_id, reward.reward_id, [member_id])

    assert len(wallet(api, shop.shop_id, member_id, UNUSED)) == 2
    after = api.GetReward(rp.GetRewardRequest(shop_id=shop.shop_id, reward_id=reward.reward_id))
    assert (after.stock, after.redeemed) == (1, 0)


def test_only_a_coupon_reward_of_the_shop_issues_coupons(membership: ServiceUnderTest, admin: Authed,
                                                         rewards: ServiceUnderTest) -> None:
    shop, other = create_shop(membership, admin), create_shop(membership, admin)
    api, other_api = rewards_api(rewards, shop), rewards_api(rewards, other)
    others_reward = coupon_reward(other_api, other.shop_id, valid_days=7)
    gift = create_reward(api, shop.shop_id, name="帆布袋", kind=rp.REWARD_KIND_GIFT,
                         gift=rp.GiftSpec(gift_class=rp.GIFT_CLASS_PARTICIPATION))
    member_id = join_member(shop)

    not_found = refused(issue, api, shop.shop_id, others_reward.reward_id, [member_id])
    missing = refused(issue, api, shop.shop_id, "no-such-reward", [member_id])
    gift_refused = refused(issue, api, shop.shop_id, gift.reward_id, [member_id])

    assert (not_found.code, not_found.reason) == (grpc.StatusCode.NOT_FOUND, "REWARD_NOT_FOUND")
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "REWARD_NOT_FOUND")
    assert (gift_refused.code, gift_refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                        "COUPON_NOT_A_COUPON_REWARD")
    assert wallet(api, shop.shop_id, member_id) == []


def test_a_paused_coupon_reward_issues_nothing_until_it_is_active_again(
        membership: ServiceUnderTest, admin: Authed, rewards: ServiceUnderTest) -> None:
    shop = create_shop(membership, admin)
    api = rewards_api(rewards, shop)
    reward = coupon_reward(api, shop.shop_id, valid_days=7)
    member_id = join_member(shop)

    def status(value: int) -> None:
        api.UpdateReward(rp.UpdateRewardRequest(request_id=rid(), shop_id=shop.shop_id, reward=rp.Reward(
            reward_id=reward.reward_id, status=value), update_mask=FieldMask(paths=["status"])))

    status(rp.REWARD_STATUS_PAUSED)
    paused = refused(issue, api, shop.shop_id, reward.reward_id, [member_id])
    assert (paused.code, paused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_ACTIVE")
    assert wallet(api, shop.shop_id, member_id) == []
    status(rp.REWARD_STATUS_ACTIVE)
    assert issue(api, shop.shop_id, reward.reward_id, [member_id]).issued == 1


# ----- the wallet --------------------------------------------------------------------------------------


def test_the_wallet_lists_newest_first_by_state_in_pages(membership: ServiceUnderTest, admin: Authed,
                                                         rewards: ServiceUnderTest) -> None:
    shop, other = create_shop(membership, admin), create_shop(membership, admin)
    api = rewards_api(rewards, shop)
    reward = coupon_reward(api, shop.shop_id, valid_days=7)
    member_id = join_member(shop)
    issued = [issue_one(api, shop.shop_id, reward.reward_id, member_id) for _ in range(5)]
    use(api, shop.shop_id, issued[1].coupon_id, "order-1", 100 * YUAN)

    everything = wallet(api, shop.shop_id, member_id, page_size=2)
    first_page = api.ListCoupons(rp.ListCouponsRequest(shop_id=shop.shop_id, member_id=member_id, page_size=2))

    assert [c.coupon_id for c in everything] == [c.coupon_id for c in reversed(issued)]
    assert [c.coupon_id for c in wallet(api, shop.shop_id, member_id, USED)] == [issued[1].coupon_id]
    assert len(wallet(api, shop.shop_id, member_id, UNUSED, page_size=3)) == 4
    other_api = rewards_api(rewards, other)
    foreign_token = refused(other_api.ListCoupons, rp.ListCouponsRequest(
        shop_id=other.shop_id, member_id=member_id, page_token=first_page.next_page_token))
    assert (foreign_token.code, set(foreign_token.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, {"page_token"})
    assert other_api.ListCoupons(rp.ListCouponsRequest(shop_id=other.shop_id, member_id=member_id)).coupons == []


# ----- use and release ---------------------------------------------------------------------------------


def test_a_coupon_is_used_once_and_only_above_its_threshold(membership: ServiceUnderTest, admin: Authed,
                                                            rewards: ServiceUnderTest) -> None:
    shop = create_shop(membership, admin)
    api = rewards_api(rewards, shop)
    reward = coupon_reward(api, shop.shop_id, face_value_fen=10 * YUAN, threshold_fen=99 * YUAN, valid_days=7)
    member_id = join_member(shop)
    coupon = issue_one(api, shop.shop_id, reward.reward_id, member_id)

    below = refused(use, api, shop.shop_id, coupon.coupon_id, "order-1", 98 * YUAN)
    request_id = rid()
    used = use(api, shop.shop_id, coupon.coupon_id, "order-1", 99 * YUAN, request_id)
    retried = use(api, shop.shop_id, coupon.coupon_id, "order-1", 99 * YUAN, request_id)
    second = refused(use, api, shop.shop_id, coupon.coupon_id, "order-2", 200 * YUAN)

    assert (below.code, below.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "THRESHOLD_NOT_MET")
    assert (used.state, used.order_id) == (USED, "order-1")
    assert used.HasField("use_time")
    assert retried == used
    assert (second.code, second.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "COUPON_ALREADY_USED")
    (listed,) = wallet(api, shop.shop_id, member_id)
    assert (listed.state, listed.order_id) == (USED, "order-1")
    (event,) = outbox_events(rewards.running.app.db, shop.shop_id, rev.CouponUsed)
    assert (event.coupon_id, event.order_id, event.face_value_fen) == (coupon.coupon_id, "order-1", 10 * YUAN)


def test_of_concurrent_uses_of_one_coupon_exactly_one_wins(membership: ServiceUnderTest, admin: Authed,
                                                            rewards: ServiceUnderTest) -> None:
    shop = create_shop(membership, admin)
    api = rewards_api(rewards, shop)
    reward = coupon_reward(api, shop.shop_id, threshold_fen=0, valid_days=7)
    member_id = join_member(shop)
    coupon = issue_one(api, shop.shop_id, reward.reward_id, member_id)
    start = threading.Barrier(10)

    def attempt(n: int) -> str:
        start.wait()
        try:
            use(api, shop.shop_id, coupon.coupon_id, f"order-{n}", 100 * YUAN)
        except grpc.RpcError as exc:
            return failure_of(exc).reason
        return "WON"

    with ThreadPoolExecutor(10) as pool:
        outcomes = sorted(pool.map(attempt, range(10)))

    assert outcomes == ["COUPON_ALREADY_USED"] * 9 + ["WON"]
    (listed,) = wallet(api, shop.shop_id, member_id)
    assert listed.state == USED
    assert len(outbox_events(rewards.running.app.db, shop.shop_id, rev.CouponUsed)) == 1


def test_a_cancelled_order_gives_its_coupon_back(membership: ServiceUnderTest, admin: Authed,
                                                 rewards: ServiceUnderTest) -> None:
    shop = create_shop(membership, admin)
    api = rewards_api(rewards, shop)
    reward = coupon_reward(api, shop.shop_id, valid_days=7)
    member_id = join_member(shop)
    coupon = issue_one(api, shop.shop_id, reward.reward_id, member_id)
    not_used = refused(release, api, shop.shop_id, coupon.coupon_id, "order-1")
    use(api, shop.shop_id, coupon.coupon_id, "order-1", 100 * YUAN)

    mismatch = refused(release, api, shop.shop_id, coupon.coupon_id, "order-2")
    released = release(api, shop.shop_id, coupon.coupon_id, "order-1")
    used_again = use(api, shop.shop_id, coupon.coupon_id, "order-3", 100 * YUAN)

    assert (not_used.code, not_used.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "COUPON_NOT_USED")
    assert (mismatch.code, mismatch.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "COUPON_ORDER_MISMATCH")
    assert (released.state, released.order_id) == (UNUSED, "")
    assert (used_again.state, used_again.order_id) == (USED, "order-3")
    (event,) = outbox_events(rewards.running.app.db, shop.shop_id, rev.CouponReleased)
    assert (event.coupon_id, event.order_id) == (coupon.coupon_id, "order-1")


def test_another_shops_coupon_is_not_found(membership: ServiceUnderTest, admin: Authed,
                                           rewards: ServiceUnderTest) -> None:
    shop, other = create_shop(membership, admin), create_shop(membership, admin)
    api, other_api = rewards_api(rewards, shop), rewards_api(rewards, other)
    reward = coupon_reward(api, shop.shop_id, valid_days=7)
    member_id = join_member(shop)
    coupon = issue_one(api, shop.shop_id, reward.reward_id, member_id)
    use(api, shop.shop_id, coupon.coupon_id, "order-1", 100 * YUAN)

    on_use = refused(use, other_api, other.shop_id, coupon.coupon_id, "order-2", 100 * YUAN)
    on_release = refused(release, other_api, other.shop_id, coupon.coupon_id, "order-1")

    assert (on_use.code, on_use.reason) == (grpc.StatusCode.NOT_FOUND, "COUPON_NOT_FOUND")
    assert (on_release.code, on_release.reason) == (grpc.StatusCode.NOT_FOUND, "COUPON_NOT_FOUND")
    assert wallet(api, shop.shop_id, member_id)[0].order_id == "order-1"


# ----- expiry ------------------------------------------------------------------------------------------


def test_a_coupon_past_its_window_is_expired_before_and_by_the_job(membership: ServiceUnderTest, admin: Authed,
                                                                   rewards: ServiceUnderTest) -> None:
    shop = create_shop(membership, admin)
    api = rewards_api(rewards, shop)
    ended = coupon_reward(api, shop.shop_id, valid_from=now() - timedelta(days=30),
                          valid_until=now() - timedelta(days=1))
    current = coupon_reward(api, shop.shop_id, valid_days=7)
    member_id = join_member(shop)
    stale = issue_one(api, shop.shop_id, ended.reward_id, member_id)
    used_stale = issue_one(api, shop.shop_id, ended.reward_id, member_id)
    fresh = issue_one(api, shop.shop_id, current.reward_id, member_id)

    before_job = {c.coupon_id: c.state for c in wallet(api, shop.shop_id, member_id)}
    expired_listed = [c.coupon_id for c in wallet(api, shop.shop_id, member_id, EXPIRED)]
    on_use = refused(use, api, shop.shop_id, used_stale.coupon_id, "order-1", 100 * YUAN)
    first_run = api.ExpireCoupons(rp.ExpireCouponsRequest(request_id=rid(), shop_id=shop.shop_id))
    second_run = api.ExpireCoupons(rp.ExpireCouponsRequest(request_id=rid(), shop_id=shop.shop_id))

    assert before_job == {stale.coupon_id: EXPIRED, used_stale.coupon_id: EXPIRED, fresh.coupon_id: UNUSED}
    assert sorted(expired_listed) == sorted([stale.coupon_id, used_stale.coupon_id])
    assert (on_use.code, on_use.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "COUPON_EXPIRED")
    assert (first_run.expired, second_run.expired) == (2, 0)
    assert {c.coupon_id: c.state for c in wallet(api, shop.shop_id, member_id)} == before_job
    events = outbox_events(rewards.running.app.db, shop.shop_id, rev.CouponExpired)
    assert sorted(e.coupon_id for e in events) == sorted([stale.coupon_id, used_stale.coupon_id])
    assert all(at(e.expired_at) == at(stale.valid_until) for e in events)


def test_the_admin_expires_every_shop_and_a_shop_key_only_its_own(membership: ServiceUnderTest, admin: Authed,
                                                                  rewards: ServiceUnderTest) -> None:
    shop = create_shop(membership, admin)
    api = rewards_api(rewards, shop)
    ended = coupon_reward(api, shop.shop_id, valid_from=now() - timedelta(days=30),
                          valid_until=now() - timedelta(days=1))
    member_id = join_member(shop)
    coupon = issue_one(api, shop.shop_id, ended.reward_id, member_id)
    admin_api = Authed(rgrpc.RewardsServiceStub(rewards.channel), ADMIN_KEY)

    every_shop = refused(api.ExpireCoupons, rp.ExpireCouponsRequest(request_id=rid()))
    by_admin = admin_api.ExpireCoupons(rp.ExpireCouponsRequest(request_id=rid()))

    assert (every_shop.code, set(every_shop.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, {"shop_id"})
    assert by_admin.expired >= 1
    assert api.ExpireCoupons(rp.ExpireCouponsRequest(request_id=rid(), shop_id=shop.shop_id)).expired == 0
    (event,) = outbox_events(rewards.running.app.db, shop.shop_id, rev.CouponExpired)
    assert event.coupon_id == coupon.coupon_id


def test_a_coupon_released_after_its_window_ended_comes_back_expired(
        membership: ServiceUnderTest, admin: Authed, rewards: ServiceUnderTest) -> None:
    shop = create_shop(membership, admin)
    api = rewards_api(rewards, shop)
    coupon_reward(api, shop.shop_id, valid_days=7)  # for join_member to watch
    member_id = join_member(shop)
    soon = now() + timedelta(seconds=2)
    reward = coupon_reward(api, shop.shop_id, valid_from=now() - timedelta(days=1), valid_until=soon)
    coupon = issue_one(api, shop.shop_id, reward.reward_id, member_id)
    use(api, shop.shop_id, coupon.coupon_id, "order-1", 100 * YUAN)
    threading.Event().wait(max(0.0, (soon - now()).total_seconds()) + 0.1)  # the window ends

    released = release(api, shop.shop_id, coupon.coupon_id, "order-1")

    assert (released.state, released.order_id) == (EXPIRED, "")
    assert api.ExpireCoupons(rp.ExpireCouponsRequest(request_id=rid(), shop_id=shop.shop_id)).expired == 0
    (event,) = outbox_events(rewards.running.app.db, shop.shop_id, rev.CouponExpired)
    assert event.coupon_id == coupon.coupon_id


# ----- bad input ---------------------------------------------------------------------------------------


def test_bad_input_is_refused_with_field_violations(membership: ServiceUnderTest, admin: Authed,
                                                    rewards: ServiceUnderTest) -> None:
    shop = create_shop(membership, admin)
    api = rewards_api(rewards, shop)
    reward = coupon_reward(api, shop.shop_id, valid_days=7)
    member_id = join_member(shop)
    coupon = issue_one(api, shop.shop_id, reward.reward_id, member_id)

    no_members = refused(issue, api, shop.shop_id, reward.reward_id, [])
    too_many = refused(issue, api, shop.shop_id, reward.reward_id, [f"m-{i}" for i in range(1001)])
    bad_member = refused(issue, api, shop.shop_id, reward.reward_id, [member_id, "not an id"])
    negative = refused(use, api, shop.shop_id, coupon.coupon_id, "order-1", -1)
    no_ids = refused(api.UseCoupon, rp.UseCouponRequest(request_id=rid(), shop_id=shop.shop_id,
                                                        order_amount_fen=100))
    no_request_id = refused(api.ReleaseCoupon, rp.ReleaseCouponRequest(shop_id=shop.shop_id,
                                                                       coupon_id=coupon.coupon_id, order_id="o"))
    bad_state = refused(api.ListCoupons, rp.ListCouponsRequest(shop_id=shop.shop_id, member_id=member_id, state=9))
    bad_token = refused(api.ListCoupons, rp.ListCouponsRequest(shop_id=shop.shop_id, member_id=member_id,
                                                               page_token="garbage"))

    for failure, fields in [(no_members, {"member_ids"}), (too_many, {"member_ids"}), (bad_member, {"member_ids[1]"}),
                            (negative, {"order_amount_fen"}), (no_ids, {"coupon_id", "order_id"}),
                            (no_request_id, {"request_id"}), (bad_state, {"state"}), (bad_token, {"page_token"})]:
        assert (failure.code, set(failure.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, fields)
    assert wallet(api, shop.shop_id, member_id)[0].state == UNUSED
