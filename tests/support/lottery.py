"""Builders for the lottery suite, through the public APIs only (but for runner_with, which builds
a saga runner of the service's own definitions with a step replaced, for the crash tests)."""

from __future__ import annotations

import copy
from typing import Any

import grpc
import pytest
from loyalty.points.v1 import points_service_pb2 as pp
from loyalty.rewards.v1 import lottery_pb2 as lpb
from loyalty.rewards.v1 import rewards_service_pb2 as rpb

from services.kit.saga import SagaDefinition, Sagas, Step
from services.rewards import lottery as lottery_saga
from services.rewards import tables
from tests.support.builders import rid
from tests.support.errors import Failure, failure_of
from tests.support.rewards import create_reward
from tests.support.services import Authed

NOTHING = lpb.Prize(name="谢谢参与", kind=lpb.PRIZE_KIND_NOTHING, probability_bp=0)


def points_prize(points: int, bp: int = 10_000, **fields: Any) -> lpb.Prize:
    return lpb.Prize(name=f"{points}积分", kind=lpb.PRIZE_KIND_POINTS, points=points, probability_bp=bp,
                     unlimited_stock=True, **fields)


def create_lottery(api: Authed, shop_id: str, prizes: list[lpb.Prize], **fields: Any) -> lpb.Lottery:
    """A running wheel, 30 points a draw unless `fields` say otherwise."""
    values: dict[str, Any] = {"name": "幸运大转盘", "style": lpb.LOTTERY_STYLE_WHEEL, "enabled": True,
                              "cost_points": 30, **fields}
    return api.CreateLottery(lpb.CreateLotteryRequest(request_id=rid(), shop_id=shop_id,
                                                      lottery=lpb.Lottery(prizes=prizes, **values)))


def coupon_lottery(api: Authed, shop_id: str, stock: int) -> tuple[rpb.Reward, lpb.Lottery]:
    """A coupon reward and a lottery whose coupon prize (of `stock`) is certain."""
    coupon = create_reward(api, shop_id, name="抽奖券")
    return coupon, create_lottery(api, shop_id, [lpb.Prize(
        name="满99减10", kind=lpb.PRIZE_KIND_COUPON, reward_id=coupon.reward_id, probability_bp=10_000, stock=stock),
        NOTHING])


def draw(api: Authed, shop_id: str, lottery_id: str, member_id: str, request_id: str | None = None) -> lpb.LotteryDraw:
    return api.Draw(lpb.DrawRequest(request_id=rid() if request_id is None else request_id, shop_id=shop_id,
                                    lottery_id=lottery_id, member_id=member_id))


def draws(api: Authed, shop_id: str, member_id: str, page_size: int = 0) -> list[lpb.LotteryDraw]:
    """The member's draws, every page, newest first."""
    found: list[lpb.LotteryDraw] = []
    token = ""
    while True:
        page = api.ListDraws(lpb.ListDrawsRequest(shop_id=shop_id, member_id=member_id, page_size=page_size,
                                                  page_token=token))
        found += page.draws
        token = page.next_page_token
        if not token:
            return found


def refusal(call: Any) -> Failure:
    """How the call failed (it must)."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return failure_of(caught.value)


def balance(points_api: Authed, shop_id: str, member_id: str) -> pp.Balance:
    return points_api.GetBalance(pp.GetBalanceRequest(shop_id=shop_id, member_id=member_id))


def ledger(points_api: Authed, shop_id: str, member_id: str) -> list[pp.LedgerEntry]:
    return list(points_api.ListLedger(pp.ListLedgerRequest(shop_id=shop_id, member_id=member_id,
                                                           page_size=500)).entries)


def runner_with(service: Any, **actions: Any) -> tuple[Any, Sagas]:
    """The service with a saga runner of its own whose paid-draw steps named in `actions` are
    replaced (each given the real step's action): a runner that dies or meets a refusal there."""
    (paid,) = [d for d in lottery_saga.saga_definitions(service) if d.kind == lottery_saga.KIND_PAID]
    sagas = Sagas(service.db, tables.sagas, [SagaDefinition(paid.kind, [
        Step(s.name, actions[s.name](s.action) if s.name in actions else s.action, s.compensation)
        for s in paid.steps])], retry_seconds=0.1)
    runner = copy.copy(service)
    runner.sagas = sagas
    return runner, sagas
