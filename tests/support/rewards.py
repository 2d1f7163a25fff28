"""Builders for the rewards suites, through the public APIs only: a rewards stub with the shop's
key, catalogue rewards with sensible defaults, members that rewards has heard of, and points.

    api = rewards_api(rewards, shop)             # remembers the stub for join_member
    reward = create_reward(api, shop.shop_id)    # a 满99减10 coupon, 100 points, 10 in stock
    member_id = join_member(shop)                # joined, and known to rewards
    fund(points, shop, member_id, 500)

join_member watches rewards' own answer (ListRewards for the member, include_unavailable): it
needs one reward in the shop's catalogue to watch, so create a reward first."""

from __future__ import annotations

import uuid
from typing import Any

from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.points.v1 import points_service_pb2 as pp
from loyalty.points.v1 import points_service_pb2_grpc as pgrpc
from loyalty.rewards.v1 import rewards_service_pb2 as rpb
from loyalty.rewards.v1 import rewards_service_pb2_grpc as rgrpc

from services.rewards import reasons
from tests.support.builders import eventually, rid
from tests.support.services import Authed, ServiceUnderTest, Shop

# The rewards stub made for each shop, so that join_member(shop) can wait on rewards.
_apis: dict[str, Authed] = {}


def rewards_api(rewards: ServiceUnderTest, shop: Shop) -> Authed:
    """A RewardsService stub with the shop's key."""
    api = Authed(rgrpc.RewardsServiceStub(rewards.channel), shop.key)
    _apis[shop.shop_id] = api
    return api


def coupon_99_minus_10(valid_days: int = 30) -> rpb.CouponSpec:
    """满99减10, valid `valid_days` days from issue."""
    return rpb.CouponSpec(face_value_fen=1000, threshold_fen=9900, valid_days=valid_days)


def reward_message(**fields: Any) -> rpb.Reward:
    """A Reward message: a coupon of 满99减10 valid 30 days, 100 points, 10 in stock, unless
    `fields` say otherwise (any Reward field; kind=GIFT with gift=GiftSpec(...) replaces the
    coupon, and so on)."""
    kind = fields.get("kind", rpb.REWARD_KIND_COUPON)
    defaults: dict[str, Any] = {"name": "满99减10", "kind": kind, "points_price": 100, "stock": 10}
    if kind == rpb.REWARD_KIND_COUPON and not {"coupon", "gift", "virtual"} & fields.keys():
        defaults["coupon"] = coupon_99_minus_10()
    return rpb.Reward(**{**defaults, **fields})


def create_reward(api: Authed, shop_id: str, **fields: Any) -> rpb.Reward:
    """A new reward of the shop's catalogue (see reward_message for the defaults)."""
    return api.CreateReward(rpb.CreateRewardRequest(request_id=rid(), shop_id=shop_id,
                                                    reward=reward_message(**fields)))


def member_view(api: Authed, shop_id: str, member_id: str, **request: Any) -> list[rpb.RewardOffer]:
    """Every offer of the member's view (all pages), with include_unavailable unless said."""
    request = {"include_unavailable": True, **request}
    offers: list[rpb.RewardOffer] = []
    token = ""
    while True:
        page = api.ListRewards(rpb.ListRewardsRequest(shop_id=shop_id, member_id=member_id, page_token=token,
                                                      **request))
        offers.extend(page.rewards)
        token = page.next_page_token
        if not token:
            return offers


def wait_until_known(api: Authed, shop_id: str, member_id: str, timeout: float = 30.0) -> None:
    """Waits until rewards has heard of the member from membership's events (its offers no longer
    say NOT_A_MEMBER). The shop needs a reward to watch."""

    def known() -> bool:
        page = api.ListRewards(rpb.ListRewardsRequest(shop_id=shop_id, member_id=member_id,
                                                      include_unavailable=True, page_size=1))
        assert page.rewards, "join_member watches an offer: create a reward in the shop first"
        return reasons.NOT_A_MEMBER not in page.rewards[0].unavailable_reasons

    eventually(known, f"rewards heard of member {member_id}", timeout=timeout)


def join_member(shop: Shop, *, rewards: Authed | None = None, **fields: Any) -> str:
    """A new member of the shop (JoinMemberRequest `fields`, e.g. buyer_id, profile), returned once
    rewards has heard of them. `rewards` defaults to the stub rewards_api made for the shop."""
    api = rewards or _apis.get(shop.shop_id)
    assert api is not None, "call rewards_api(rewards, shop) first (or pass rewards=...)"
    request = {"buyer_id": "b-" + uuid.uuid4().hex[:10], "join_channel": mpb.JOIN_CHANNEL_HOME_PAGE_MODULE,
               **fields}
    member_id = shop.api.JoinMember(mpb.JoinMemberRequest(request_id=rid(), shop_id=shop.shop_id,
                                                          **request)).member_id
    wait_until_known(api, shop.shop_id, member_id)
    return member_id


def fund(points: ServiceUnderTest, shop: Shop, member_id: str, amount: int) -> pp.EarnResponse:
    """Grants the member `amount` points through points' Earn with the shop's key (once points
    has opened the member's account)."""
    api = Authed(pgrpc.PointsServiceStub(points.channel), shop.key)
    eventually(lambda: api.GetBalance(pp.GetBalanceRequest(shop_id=shop.shop_id, member_id=member_id)),
               "points opened the member's account", timeout=30.0)
    return api.Earn(pp.EarnRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member_id, points=amount,
                                   source=pp.Source(reference="test-fund")))


def set_tier(shop: Shop, member_id: str, level: int) -> None:
    """Sets the member's tier through membership (an operator's decision)."""
    shop.api.SetTier(mpb.SetTierRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member_id,
                                        tier_level=level, reason="test", operator="tester"))
