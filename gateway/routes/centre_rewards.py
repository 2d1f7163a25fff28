"""The member centre's rewards (/v1/me/...): my coupons (我的优惠券), the points mall with why-not
for what cannot be redeemed (积分兑换), redeeming, and the lottery (抽奖). As in centre.py, every
route acts for the token's buyer only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from loyalty.rewards.v1 import lottery_pb2 as lpb
from loyalty.rewards.v1 import rewards_service_pb2 as rpb

from gateway.members import member_id
from gateway.routes.centre_models import (
    ID_PATTERN,
    PAGE_TOKEN_PATTERN,
    IdempotencyKey,
    client_key,
    problems,
    scoped_request_id,
    when,
)
from gateway.routes.centre_rewards_models import (
    CouponsPage,
    DrawIn,
    DrawOut,
    LotteriesOut,
    RedeemIn,
    RedemptionOut,
    RewardsPage,
    coupon_out,
    draw_out,
    lottery_out,
    offer_out,
    redemption_out,
)
from gateway.tokens import CurrentBuyer
from gateway.upstream import Upstreams

router = APIRouter(prefix="/v1/me", tags=["member centre"])

COUPON_STATES = {"unused": rpb.COUPON_STATE_UNUSED, "used": rpb.COUPON_STATE_USED,
                 "expired": rpb.COUPON_STATE_EXPIRED, "revoked": rpb.COUPON_STATE_REVOKED}
PageToken = Annotated[str, Query(pattern=PAGE_TOKEN_PATTERN, max_length=1024)]


def upstreams(request: Request) -> Upstreams:
    return request.app.state.upstreams


@router.get("/coupons", response_model=CouponsPage, responses=problems(400, 404),
            summary="My coupons (我的优惠券): unused, used or expired")
async def coupons(request: Request, buyer: CurrentBuyer,
                  status: Literal["unused", "used", "expired", "revoked"] | None = None,
                  page_size: Annotated[int, Query(ge=1, le=100)] = 50, page_token: PageToken = "") -> CouponsPage:
    up = upstreams(request)
    mid = await member_id(up, buyer)
    page = await up.call(up.rewards.ListCoupons, rpb.ListCouponsRequest(
        shop_id=buyer.shop_id, member_id=mid, state=COUPON_STATES[status] if status else rpb.COUPON_STATE_UNSPECIFIED,
        page_size=page_size, page_token=page_token), buyer.shop_id)
    return CouponsPage(coupons=[coupon_out(c) for c in page.coupons], next_page_token=page.next_page_token or None)


@router.get("/rewards", response_model=RewardsPage, responses=problems(400, 404),
            summary="The points mall (积分兑换): what I can redeem, and why not for the rest")
async def rewards(request: Request, buyer: CurrentBuyer,
                  page_size: Annotated[int, Query(ge=1, le=100)] = 50, page_token: PageToken = "") -> RewardsPage:
    up = upstreams(request)
    mid = await member_id(up, buyer)
    page = await up.call(up.rewards.ListRewards, rpb.ListRewardsRequest(
        shop_id=buyer.shop_id, member_id=mid, include_unavailable=True, page_size=page_size,
        page_token=page_token), buyer.shop_id)
    return RewardsPage(rewards=[offer_out(o) for o in page.rewards], next_page_token=page.next_page_token or None)


@router.post("/redemptions", response_model=RedemptionOut, status_code=201, responses=problems(404, 409),
             summary="Redeem a reward with points (兑换); INSUFFICIENT_POINTS and the like are 409 problems")
async def redeem(body: RedeemIn, request: Request, buyer: CurrentBuyer,
                 idempotency_key: IdempotencyKey = None) -> RedemptionOut:
    key = client_key(idempotency_key, body.request_id)
    up = upstreams(request)
    mid = await member_id(up, buyer)
    done = await up.call(up.rewards.Redeem, rpb.RedeemRequest(
        request_id=scoped_request_id(buyer, "redeem", key), shop_id=buyer.shop_id, member_id=mid,
        reward_id=body.reward_id, quantity=body.quantity), buyer.shop_id)
    return redemption_out(done)


@router.get("/lotteries", response_model=LotteriesOut, responses=problems(404),
            summary="The lotteries I can draw from now (抽奖)")
async def lotteries(request: Request, buyer: CurrentBuyer) -> LotteriesOut:
    up = upstreams(request)
    # Only members draw: the list is theirs, asked in parallel with who the buyer is.
    _, page = await up.gather(member_id(up, buyer), up.call(
        up.rewards.ListLotteries, lpb.ListLotteriesRequest(shop_id=buyer.shop_id, page_size=100), buyer.shop_id))
    now = datetime.now(UTC)
    never = datetime.max.replace(tzinfo=UTC)
    running = [lo for lo in page.lotteries if lo.enabled
               and (when(lo.start_time) or now) <= now < (when(lo.end_time) or never)]
    return LotteriesOut(lotteries=[lottery_out(lo) for lo in running])


@router.post("/lottery/{lottery_id}/draws", response_model=DrawOut, status_code=201,
             responses=problems(404, 409), summary="Draw once (a free draw of the month first, else points)")
async def draw(lottery_id: Annotated[str, Path(pattern=ID_PATTERN)], request: Request, buyer: CurrentBuyer,
               body: DrawIn | None = None, idempotency_key: IdempotencyKey = None) -> DrawOut:
    key = client_key(idempotency_key, body.request_id if body else None)
    up = upstreams(request)
    mid = await member_id(up, buyer)
    done = await up.call(up.rewards.Draw, lpb.DrawRequest(
        request_id=scoped_request_id(buyer, "draw", f"{lottery_id}\n{key}"), shop_id=buyer.shop_id,
        lottery_id=lottery_id, member_id=mid), buyer.shop_id)
    return draw_out(done)
