"""Who the buyer is to the shop: a member (with a member id the other services know) or not yet,
decided by membership's CheckJoinEligibility with the facts the buyer's token carries."""

from __future__ import annotations

from loyalty.membership.v1 import membership_service_pb2 as mpb

from gateway.problems import Problem
from gateway.tokens import Buyer
from gateway.upstream import Upstreams


async def eligibility(up: Upstreams, buyer: Buyer) -> mpb.CheckJoinEligibilityResponse:
    return await up.call(up.membership.CheckJoinEligibility, mpb.CheckJoinEligibilityRequest(
        shop_id=buyer.shop_id, buyer_id=buyer.buyer_id, facts=mpb.BuyerFacts(
            follows_shop=buyer.follows_shop, completed_trades=buyer.completed_trades, spent_fen=buyer.spent_fen)),
        buyer.shop_id)


async def member_id(up: Upstreams, buyer: Buyer) -> str:
    """The buyer's member id in the token's shop; 404 NOT_A_MEMBER when they have not joined."""
    seen = await eligibility(up, buyer)
    if not seen.is_member:
        raise Problem(404, "the buyer is not a member of this shop: join first", reason="NOT_A_MEMBER")
    return seen.member_id
