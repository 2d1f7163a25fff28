"""Helpers of the redemption suites, through the public APIs: redeem, read points' side of a
member (balance, ledger), a reward's stock, and the refusal a call met."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from loyalty.points.v1 import points_service_pb2 as pp
from loyalty.points.v1 import points_service_pb2_grpc as pgrpc
from loyalty.rewards.v1 import rewards_service_pb2 as rpb

from tests.support.builders import rid
from tests.support.errors import Failure, failure_of
from tests.support.services import Authed, ServiceUnderTest, Shop

# Answers a caller retries with the same request_id: the server shed the call, or went away.
RETRIED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def points_api(points: ServiceUnderTest, shop: Shop) -> Authed:
    return Authed(pgrpc.PointsServiceStub(points.channel), shop.key)


def balance(points: Authed, shop_id: str, member_id: str) -> tuple[int, int]:
    """The member's (available, held) points, as points' GetBalance tells."""
    found = points.GetBalance(pp.GetBalanceRequest(shop_id=shop_id, member_id=member_id))
    return found.available, found.held


def ledger(points: Authed, shop_id: str, member_id: str) -> list[pp.LedgerEntry]:
    """The member's ledger entries, newest first (one page is enough for these tests)."""
    return list(points.ListLedger(pp.ListLedgerRequest(shop_id=shop_id, member_id=member_id, page_size=100)).entries)


def stock_of(api: Authed, shop_id: str, reward_id: str) -> tuple[int, int]:
    """The reward's (stock, redeemed)."""
    reward = api.GetReward(rpb.GetRewardRequest(shop_id=shop_id, reward_id=reward_id))
    return reward.stock, reward.redeemed


def redeem(api: Authed, shop_id: str, member_id: str, reward_id: str, *, request_id: str | None = None,
           quantity: int = 0) -> rpb.Redemption:
    return api.Redeem(rpb.RedeemRequest(request_id=request_id or rid(), shop_id=shop_id, member_id=member_id,
                                        reward_id=reward_id, quantity=quantity))


def redeem_retrying(api: Authed, request: rpb.RedeemRequest, timeout: float = 120.0) -> rpb.Redemption | Failure:
    """Redeem as a careful client does: a shed or lost call is sent again with its request_id;
    returns the redemption, or the refusal."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return api.Redeem(request)
        except grpc.RpcError as exc:
            if exc.code() not in RETRIED or time.monotonic() > deadline:
                return failure_of(exc)
            time.sleep(0.05)


def refusal(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Failure:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return failure_of(caught.value)


def get_redemption(api: Authed, shop_id: str, redemption_id: str) -> rpb.Redemption:
    return api.GetRedemption(rpb.GetRedemptionRequest(shop_id=shop_id, redemption_id=redemption_id))
