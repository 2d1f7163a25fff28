"""The coupon wallet through the rewards API: coupon rewards to issue from, direct issuance, a
member's wallet read whole, uses and releases of coupons, and a member who leaves."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.rewards.v1 import rewards_service_pb2 as rp

from services.rewards import reasons
from tests.support.builders import eventually, rid
from tests.support.rewards import create_reward
from tests.support.services import Authed, Shop

YUAN = 100


def stamp(moment: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(moment.astimezone(UTC))
    return out


def coupon_reward(api: Authed, shop_id: str, *, face_value_fen: int = 10 * YUAN, threshold_fen: int = 99 * YUAN,
                  valid_days: int = 0, valid_from: datetime | None = None, valid_until: datetime | None = None,
                  **fields: Any) -> rp.Reward:
    """A coupon reward of the shop's catalogue to issue from: valid `valid_days` from issue, or in
    the fixed window (valid_from, valid_until), which may lie in the past."""
    spec = rp.CouponSpec(face_value_fen=face_value_fen, threshold_fen=threshold_fen, valid_days=valid_days)
    if valid_from is not None:
        spec.valid_from.CopyFrom(stamp(valid_from))
    if valid_until is not None:
        spec.valid_until.CopyFrom(stamp(valid_until))
    return create_reward(api, shop_id, coupon=spec, **fields)


def issue(api: Authed, shop_id: str, reward_id: str, member_ids: list[str],
          request_id: str | None = None) -> rp.IssueCouponsResponse:
    return api.IssueCoupons(rp.IssueCouponsRequest(request_id=request_id or rid(), shop_id=shop_id,
                                                   reward_id=reward_id, member_ids=member_ids))


def issue_one(api: Authed, shop_id: str, reward_id: str, member_id: str) -> rp.Coupon:
    """One coupon of the reward into the member's wallet."""
    (coupon,) = issue(api, shop_id, reward_id, [member_id]).coupons
    return coupon


def wallet(api: Authed, shop_id: str, member_id: str, state: int = 0, page_size: int = 0) -> list[rp.Coupon]:
    """Every coupon of the member's wallet (in `state`), page after page, newest first."""
    found: list[rp.Coupon] = []
    token = ""
    while True:
        page = api.ListCoupons(rp.ListCouponsRequest(shop_id=shop_id, member_id=member_id, state=state,
                                                     page_size=page_size, page_token=token))
        found += page.coupons
        token = page.next_page_token
        if not token:
            return found


def use(api: Authed, shop_id: str, coupon_id: str, order_id: str, order_amount_fen: int,
        request_id: str | None = None) -> rp.Coupon:
    return api.UseCoupon(rp.UseCouponRequest(request_id=request_id or rid(), shop_id=shop_id, coupon_id=coupon_id,
                                             order_id=order_id, order_amount_fen=order_amount_fen))


def release(api: Authed, shop_id: str, coupon_id: str, order_id: str) -> rp.Coupon:
    return api.ReleaseCoupon(rp.ReleaseCouponRequest(request_id=rid(), shop_id=shop_id, coupon_id=coupon_id,
                                                     order_id=order_id))


def leave(api: Authed, shop: Shop, member_id: str) -> None:
    """The member leaves the shop (membership); returns once rewards heard of it (the member's
    offers say NOT_A_MEMBER again). The shop needs a reward to watch."""
    shop.api.LeaveMember(mpb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member_id,
                                                reason="test"))

    def left() -> bool:
        page = api.ListRewards(rp.ListRewardsRequest(shop_id=shop.shop_id, member_id=member_id,
                                                     include_unavailable=True, page_size=1))
        return reasons.NOT_A_MEMBER in page.rewards[0].unavailable_reasons

    eventually(left, f"rewards heard member {member_id} left", timeout=30.0)
