"""GetTierProgress is cached (the storefront card asks for it on every visit): each kind of write
that moves what it shows is seen by the next read, on both backends — one member's order,
refund, manual tier, and the set-wise ones (tier validity turned on and off, the expiry job)."""

from __future__ import annotations

import time
from datetime import timedelta

import grpc
from loyalty.membership.v1 import membership_service_pb2 as pb

from services.kit.cache import AFTER_COMMIT_FENCE_SECONDS
from tests.conftest import ServiceUnderTest, Shop
from tests.integration.test_membership import YUAN, complete, join, pay, refund, rid, rpc_error
from tests.integration.test_membership_lifecycle import configure, expiry_of, run_job, set_validity


def progress(shop: Shop, member_id: str) -> pb.GetTierProgressResponse:
    return shop.api.GetTierProgress(pb.GetTierProgressRequest(shop_id=shop.shop_id, member_id=member_id))


def cached_progress(shop: Shop, member_id: str) -> pb.GetTierProgressResponse:
    """A read once the last write's fence has lifted, so that it fills the cache."""
    time.sleep(AFTER_COMMIT_FENCE_SECONDS + 0.2)
    return progress(shop, member_id)


def test_an_order_and_its_refund_show_in_the_next_progress_read(shop: Shop) -> None:
    member = join(shop, "b1").member_id
    assert (cached_progress(shop, member).cumulative_spend_fen, progress(shop, member).trade_count) == (0, 0)
    order = pay(shop, "b1", 300 * YUAN)
    assert cached_progress(shop, member).cumulative_spend_fen == 0  # paid is not completed
    complete(shop, order)
    seen = progress(shop, member)
    assert (seen.cumulative_spend_fen, seen.trade_count) == (300 * YUAN, 1)
    assert cached_progress(shop, member).trade_count == 1
    refund(shop, order, 100 * YUAN)
    assert progress(shop, member).cumulative_spend_fen == 200 * YUAN
    assert cached_progress(shop, member).cumulative_spend_fen == 200 * YUAN
    refund(shop, order, 200 * YUAN)
    seen = progress(shop, member)
    assert (seen.cumulative_spend_fen, seen.trade_count) == (0, 0)


def test_a_manual_tier_shows_in_the_next_progress_read(shop: Shop) -> None:
    member = join(shop, "b1").member_id
    assert cached_progress(shop, member).current.level == 0
    shop.api.SetTier(pb.SetTierRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member, tier_level=2,
                                       reason="VIP", operator="ops"))
    assert progress(shop, member).current.level == 2


def test_set_wise_changes_show_in_the_next_progress_read(membership: ServiceUnderTest, shop: Shop) -> None:
    configure(shop, pb.DOWNGRADE_POLICY_RECOMPUTE)
    member = join(shop, "b1").member_id
    shop.api.SetTier(pb.SetTierRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member, tier_level=1,
                                       reason="VIP", operator="ops"))
    assert not cached_progress(shop, member).HasField("tier_expire_time")
    set_validity(shop, 6, 0)  # every member's tier gets an expiry, in one statement
    expires = expiry_of(membership, shop, member)
    assert expires is not None
    assert abs((progress(shop, member).tier_expire_time.ToDatetime() - expires).total_seconds()) < 1
    assert cached_progress(shop, member).current.level == 1
    # The expiry job moves the member down (nothing bought: the entry tier) set-wise.
    run_job(membership, shop, expires + timedelta(minutes=1))
    seen = progress(shop, member)
    assert seen.current.level == 0 and not seen.HasField("tier_expire_time")


def test_a_member_who_left_has_no_progress(shop: Shop) -> None:
    member = join(shop, "b1").member_id
    cached_progress(shop, member)
    shop.api.LeaveMember(pb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member))
    assert rpc_error(progress, shop, member)[0].code() == grpc.StatusCode.NOT_FOUND
