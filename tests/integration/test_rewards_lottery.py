"""The lottery (大转盘 / 九宫格) through the public API, on both backends: prize tables checked
whole (on create and on update of a running lottery); a paid draw takes exactly its cost through
a points hold and capture and records its prize (a coupon in the wallet, points as an earn, a gift
to ship); free draws of the month come first; a retried Draw is the same draw, charged once; a
member short of points gets INSUFFICIENT_POINTS with nothing drawn or held; a prize of stock 1 is
won once, then the NOTHING slot; other shops' ids are NOT_FOUND."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from loyalty.points.v1 import points_service_pb2 as pp
from loyalty.points.v1 import points_service_pb2_grpc as pgrpc
from loyalty.rewards.v1 import lottery_pb2 as lpb
from loyalty.rewards.v1 import rewards_service_pb2 as rpb

from services.kit.saga import SagaContext
from services.kit.timeutil import to_timestamp, utcnow
from services.rewards import lottery as lottery_saga
from services.rewards.commands import lottery as commands
from tests.conftest import Authed, create_shop
from tests.support.builders import eventually, rid
from tests.support.coupons import wallet
from tests.support.lottery import (
    NOTHING,
    balance,
    coupon_lottery,
    create_lottery,
    draw,
    draws,
    ledger,
    points_prize,
    refusal,
    runner_with,
)
from tests.support.rewards import create_reward, fund, join_member, rewards_api, set_tier


@pytest.fixture
def api(rewards: Any, shop: Any) -> Authed:
    return rewards_api(rewards, shop)


@pytest.fixture
def points_api(points: Any, shop: Any) -> Authed:
    return Authed(pgrpc.PointsServiceStub(points.channel), shop.key)


@pytest.fixture
def member(api: Authed, shop: Any) -> str:
    create_reward(api, shop.shop_id, name="watched")  # join_member watches the catalogue
    return join_member(shop)


# ----- the operators' lotteries -------------------------------------------------------------------


def test_a_lottery_is_created_read_listed_and_updated_by_mask(api: Authed, shop: Any) -> None:
    coupon = create_reward(api, shop.shop_id)
    gift = create_reward(api, shop.shop_id, name="保温杯", kind=rpb.REWARD_KIND_GIFT, gift=rpb.GiftSpec())
    prizes = [points_prize(50, 3_000, prize_id="p50"),
              lpb.Prize(name="满99减10", kind=lpb.PRIZE_KIND_COUPON, reward_id=coupon.reward_id, probability_bp=1_500,
                        stock=100),
              lpb.Prize(name="保温杯", kind=lpb.PRIZE_KIND_GIFT, reward_id=gift.reward_id, probability_bp=500, stock=3),
              lpb.Prize(kind=lpb.PRIZE_KIND_NOTHING, probability_bp=5_000)]
    created = create_lottery(api, shop.shop_id, prizes, style=lpb.LOTTERY_STYLE_GRID, free_draws_per_month=1,
                             free_draw_tier_levels=[2, 3])
    assert created.lottery_id and created.style == lpb.LOTTERY_STYLE_GRID
    assert [p.prize_id for p in created.prizes] == ["p50", "slot-2", "slot-3", "slot-4"]
    assert created.prizes[3].name == "谢谢参与" and created.prizes[3].unlimited_stock
    assert [p.stock for p in created.prizes] == [0, 100, 3, 0]
    got = api.GetLottery(lpb.GetLotteryRequest(shop_id=shop.shop_id, lottery_id=created.lottery_id))
    assert got == created

    others = [create_lottery(api, shop.shop_id, [points_prize(1, 5_000), lpb.Prize(
        kind=lpb.PRIZE_KIND_NOTHING, probability_bp=5_000)]) for _ in range(2)]
    listed, token = [], ""
    while True:
        page = api.ListLotteries(lpb.ListLotteriesRequest(shop_id=shop.shop_id, page_size=2, page_token=token))
        assert len(page.lotteries) <= 2
        listed += [t.lottery_id for t in page.lotteries]
        token = page.next_page_token
        if not token:
            break
    assert sorted(listed) == sorted([created.lottery_id] + [t.lottery_id for t in others])

    # The prize table of a running lottery may change, checked again like a new one.
    renamed = api.UpdateLottery(lpb.UpdateLotteryRequest(
        request_id=rid(), shop_id=shop.shop_id, lottery=lpb.Lottery(
            lottery_id=created.lottery_id, name="九宫格", prizes=[points_prize(10, 9_000), lpb.Prize(
                kind=lpb.PRIZE_KIND_NOTHING, probability_bp=1_000)]),
        update_mask=FieldMask(paths=["name", "prizes"])))
    assert renamed.name == "九宫格" and renamed.cost_points == 30 and len(renamed.prizes) == 2
    failure = refusal(lambda: api.UpdateLottery(lpb.UpdateLotteryRequest(
        request_id=rid(), shop_id=shop.shop_id, lottery=lpb.Lottery(
            lottery_id=created.lottery_id, prizes=[points_prize(10, 9_000), NOTHING]),
        update_mask=FieldMask(paths=["prizes"]))))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "lottery.prizes" in failure.fields
    failure = refusal(lambda: api.UpdateLottery(lpb.UpdateLotteryRequest(
        request_id=rid(), shop_id=shop.shop_id, lottery=lpb.Lottery(lottery_id=created.lottery_id),
        update_mask=FieldMask(paths=["cost_points", "free_draws_per_month"]))))
    assert "lottery.cost_points" in failure.fields  # neither paid nor free


def test_bad_tables_are_refused_clearly(api: Authed, shop: Any, membership: Any, admin: Any, rewards: Any) -> None:
    gift = create_reward(api, shop.shop_id, name="保温杯", kind=rpb.REWARD_KIND_GIFT, gift=rpb.GiftSpec())
    failure = refusal(lambda: create_lottery(api, shop.shop_id, [points_prize(10, 5_000), NOTHING]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "10000" in failure.fields["lottery.prizes"]
    failure = refusal(lambda: create_lottery(api, shop.shop_id, [points_prize(10)]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "NOTHING" in failure.fields["lottery.prizes"]
    failure = refusal(lambda: create_lottery(api, shop.shop_id, [lpb.Prize(
        name="券", kind=lpb.PRIZE_KIND_COUPON, reward_id=gift.reward_id, probability_bp=10_000, stock=5), NOTHING]))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PRIZE_REWARD_MISMATCH")
    failure = refusal(lambda: create_lottery(api, shop.shop_id, [points_prize(10), NOTHING], style=0))
    assert "lottery.style" in failure.fields

    other = create_shop(membership, admin)
    theirs = create_reward(rewards_api(rewards, other), other.shop_id)
    failure = refusal(lambda: create_lottery(api, shop.shop_id, [lpb.Prize(
        name="券", kind=lpb.PRIZE_KIND_COUPON, reward_id=theirs.reward_id, probability_bp=10_000, stock=5), NOTHING]))
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "REWARD_NOT_FOUND")


def test_another_shops_lottery_is_not_found(api: Authed, shop: Any, member: str, membership: Any, admin: Any,
                                            rewards: Any) -> None:
    other = create_shop(membership, admin)
    their_api = rewards_api(rewards, other)
    theirs = create_lottery(their_api, other.shop_id, [points_prize(10), NOTHING])
    for call in (lambda: api.GetLottery(lpb.GetLotteryRequest(shop_id=shop.shop_id, lottery_id=theirs.lottery_id)),
                 lambda: draw(api, shop.shop_id, theirs.lottery_id, member),
                 lambda: api.UpdateLottery(lpb.UpdateLotteryRequest(
                     request_id=rid(), shop_id=shop.shop_id, lottery=lpb.Lottery(lottery_id=theirs.lottery_id,
                                                                                 name="x"),
                     update_mask=FieldMask(paths=["name"])))):
        failure = refusal(call)
        assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "LOTTERY_NOT_FOUND")
    assert api.ListLotteries(lpb.ListLotteriesRequest(shop_id=shop.shop_id)).lotteries == []


# ----- drawing ----------------------------------------------------------------------------------------


def test_a_paid_draw_takes_exactly_its_cost_and_a_coupon_prize_lands_in_the_wallet(
        api: Authed, shop: Any, member: str, points: Any, points_api: Authed) -> None:
    coupon, lottery = coupon_lottery(api, shop.shop_id, stock=5)
    fund(points, shop, member, 100)
    before = balance(points_api, shop.shop_id, member)

    won = draw(api, shop.shop_id, lottery.lottery_id, member)
    assert (won.state, won.free, won.cost_points, won.prize_kind) == (
        lpb.DRAW_STATE_COMPLETED, False, 30, lpb.PRIZE_KIND_COUPON)
    after = balance(points_api, shop.shop_id, member)
    assert (after.available, after.held) == (before.available - 30, 0)
    assert [e.held_delta for e in ledger(points_api, shop.shop_id, member)
            if e.kind == pp.ENTRY_KIND_CAPTURE] == [-30]
    (coupon_id,) = won.coupon_ids
    (in_wallet,) = [c for c in wallet(api, shop.shop_id, member) if c.coupon_id == coupon_id]
    assert (in_wallet.reward_id, in_wallet.source, in_wallet.source_reference) == (
        coupon.reward_id, rpb.COUPON_SOURCE_LOTTERY, won.draw_id)
    assert api.GetLottery(lpb.GetLotteryRequest(shop_id=shop.shop_id, lottery_id=lottery.lottery_id)
                          ).prizes[0].stock == 4
    assert [d.draw_id for d in draws(api, shop.shop_id, member)] == [won.draw_id]


def test_a_points_prize_is_credited_as_an_earn(api: Authed, shop: Any, member: str, points: Any,
                                               points_api: Authed) -> None:
    lottery = create_lottery(api, shop.shop_id, [points_prize(88), NOTHING], cost_points=20)
    fund(points, shop, member, 50)
    before = balance(points_api, shop.shop_id, member).available
    won = draw(api, shop.shop_id, lottery.lottery_id, member)
    assert (won.prize_kind, won.points, won.points_credited) == (lpb.PRIZE_KIND_POINTS, 88, True)
    assert balance(points_api, shop.shop_id, member).available == before - 20 + 88
    earned = [e for e in ledger(points_api, shop.shop_id, member) if e.source.reference == f"lottery:{won.draw_id}"]
    assert [(e.kind, e.amount) for e in earned] == [(pp.ENTRY_KIND_EARN, 88)]


def test_the_free_draw_of_the_month_is_used_before_points(api: Authed, shop: Any, member: str, points: Any,
                                                          points_api: Authed) -> None:
    lottery = create_lottery(api, shop.shop_id, [points_prize(5, 5_000), lpb.Prize(
        kind=lpb.PRIZE_KIND_NOTHING, probability_bp=5_000)], cost_points=20, free_draws_per_month=1)
    fund(points, shop, member, 100)
    start = balance(points_api, shop.shop_id, member).available
    first = draw(api, shop.shop_id, lottery.lottery_id, member)
    assert (first.free, first.cost_points) == (True, 0)
    after_free = balance(points_api, shop.shop_id, member).available
    assert after_free == start + first.points  # nothing spent
    second = draw(api, shop.shop_id, lottery.lottery_id, member)
    assert (second.free, second.cost_points) == (False, 20)
    assert balance(points_api, shop.shop_id, member).available == after_free - 20 + second.points
    assert [d.draw_id for d in draws(api, shop.shop_id, member)] == [second.draw_id, first.draw_id]


def test_free_draws_for_listed_tiers_and_a_free_only_lottery_runs_out(api: Authed, shop: Any, member: str) -> None:
    free_only = create_lottery(api, shop.shop_id, [points_prize(1), NOTHING], cost_points=0,
                               free_draws_per_month=1, free_draw_tier_levels=[2])
    failure = refusal(lambda: draw(api, shop.shop_id, free_only.lottery_id, member))  # tier 0: no free draws
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_DRAWS_LEFT")
    set_tier(shop, member, 2)
    first = _eventually_draws(api, shop.shop_id, free_only.lottery_id, member)
    assert first.free
    failure = refusal(lambda: draw(api, shop.shop_id, free_only.lottery_id, member))
    assert failure.reason == "NO_DRAWS_LEFT"


def _eventually_draws(api: Authed, shop_id: str, lottery_id: str, member_id: str) -> lpb.LotteryDraw:
    """Draws once rewards heard of the member's new tier (until then: NO_DRAWS_LEFT)."""
    return eventually(lambda: draw(api, shop_id, lottery_id, member_id), "rewards heard of the new tier",
                      timeout=30.0)


def test_a_retried_draw_is_the_same_draw_charged_once(api: Authed, shop: Any, member: str, points: Any,
                                                      points_api: Authed) -> None:
    lottery = create_lottery(api, shop.shop_id, [points_prize(7), NOTHING])
    fund(points, shop, member, 100)
    before = balance(points_api, shop.shop_id, member).available
    request_id = rid()
    first = draw(api, shop.shop_id, lottery.lottery_id, member, request_id)
    again = draw(api, shop.shop_id, lottery.lottery_id, member, request_id)
    assert again == first
    assert balance(points_api, shop.shop_id, member).available == before - 30 + 7
    assert len(draws(api, shop.shop_id, member)) == 1
    assert len([e for e in ledger(points_api, shop.shop_id, member) if e.kind == pp.ENTRY_KIND_CAPTURE]) == 1


def test_a_member_short_of_points_draws_nothing_and_holds_nothing(api: Authed, shop: Any, member: str, points: Any,
                                                                  points_api: Authed) -> None:
    fund(points, shop, member, 10)
    before = balance(points_api, shop.shop_id, member)
    gift = create_reward(api, shop.shop_id, name="杯", kind=rpb.REWARD_KIND_GIFT, gift=rpb.GiftSpec())
    lottery = create_lottery(api, shop.shop_id, [lpb.Prize(
        name="保温杯", kind=lpb.PRIZE_KIND_GIFT, probability_bp=10_000, stock=1, reward_id=gift.reward_id), NOTHING],
        cost_points=before.available + 1)
    request_id = rid()
    for _ in range(2):  # a retry is refused alike
        failure = refusal(lambda: draw(api, shop.shop_id, lottery.lottery_id, member, request_id))
        assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_POINTS")
    after = balance(points_api, shop.shop_id, member)
    assert (after.available, after.held) == (before.available, 0)
    assert draws(api, shop.shop_id, member) == []
    prize = api.GetLottery(lpb.GetLotteryRequest(shop_id=shop.shop_id, lottery_id=lottery.lottery_id)).prizes[0]
    assert (prize.stock, prize.won) == (1, 0)


def test_a_prize_of_stock_one_is_won_once_then_the_nothing_slot(api: Authed, shop: Any, member: str,
                                                                points: Any) -> None:
    gift = create_reward(api, shop.shop_id, name="保温杯", kind=rpb.REWARD_KIND_GIFT, gift=rpb.GiftSpec())
    lottery = create_lottery(api, shop.shop_id, [lpb.Prize(
        name="保温杯", kind=lpb.PRIZE_KIND_GIFT, reward_id=gift.reward_id, probability_bp=10_000, stock=1), NOTHING])
    fund(points, shop, member, 100)
    first = draw(api, shop.shop_id, lottery.lottery_id, member)
    assert (first.prize_kind, first.reward_id, first.shipped) == (lpb.PRIZE_KIND_GIFT, gift.reward_id, False)
    second = draw(api, shop.shop_id, lottery.lottery_id, member)
    assert (second.prize_kind, second.prize_name) == (lpb.PRIZE_KIND_NOTHING, "谢谢参与")
    prizes = api.GetLottery(lpb.GetLotteryRequest(shop_id=shop.shop_id, lottery_id=lottery.lottery_id)).prizes
    assert [(p.stock, p.won) for p in prizes] == [(0, 1), (0, 1)]


def test_draws_need_a_member_and_a_running_lottery(api: Authed, shop: Any, member: str, points: Any) -> None:
    lottery = create_lottery(api, shop.shop_id, [points_prize(1), NOTHING])
    failure = refusal(lambda: draw(api, shop.shop_id, lottery.lottery_id, "m_stranger"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_A_MEMBER")
    api.UpdateLottery(lpb.UpdateLotteryRequest(request_id=rid(), shop_id=shop.shop_id, lottery=lpb.Lottery(
        lottery_id=lottery.lottery_id, enabled=False), update_mask=FieldMask(paths=["enabled"])))
    assert refusal(lambda: draw(api, shop.shop_id, lottery.lottery_id, member)).reason == "NOT_ACTIVE"
    ended = create_lottery(api, shop.shop_id, [points_prize(1), NOTHING],
                           start_time=to_timestamp(utcnow() - timedelta(days=2)),
                           end_time=to_timestamp(utcnow() - timedelta(days=1)))
    assert refusal(lambda: draw(api, shop.shop_id, ended.lottery_id, member)).reason == "ENDED"
    failure = refusal(lambda: draw(api, shop.shop_id, lottery.lottery_id, member, request_id=""))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in failure.fields


def test_a_members_draws_page_newest_first(api: Authed, shop: Any, member: str, points: Any) -> None:
    lottery = create_lottery(api, shop.shop_id, [points_prize(1), NOTHING], cost_points=1)
    fund(points, shop, member, 100)
    made = [draw(api, shop.shop_id, lottery.lottery_id, member).draw_id for _ in range(5)]
    assert [d.draw_id for d in draws(api, shop.shop_id, member, page_size=2)] == made[::-1]
    failure = refusal(lambda: api.ListDraws(lpb.ListDrawsRequest(shop_id=shop.shop_id, member_id=member,
                                                                 page_token="bogus")))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT


# ----- races and crashes ---------------------------------------------------------------------------


def test_of_concurrent_draws_for_a_prize_of_stock_one_exactly_one_wins(api: Authed, shop: Any, member: str,
                                                                       points: Any, points_api: Authed) -> None:
    gift = create_reward(api, shop.shop_id, name="保温杯", kind=rpb.REWARD_KIND_GIFT, gift=rpb.GiftSpec())
    lottery = create_lottery(api, shop.shop_id, [lpb.Prize(
        name="保温杯", kind=lpb.PRIZE_KIND_GIFT, reward_id=gift.reward_id, probability_bp=10_000, stock=1), NOTHING],
        cost_points=5)
    fund(points, shop, member, 100)
    before = balance(points_api, shop.shop_id, member).available
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: draw(api, shop.shop_id, lottery.lottery_id, member), range(8)))
    assert sorted(d.prize_kind for d in made) == [lpb.PRIZE_KIND_GIFT] + [lpb.PRIZE_KIND_NOTHING] * 7
    prizes = api.GetLottery(lpb.GetLotteryRequest(shop_id=shop.shop_id, lottery_id=lottery.lottery_id)).prizes
    assert [(p.stock, p.won) for p in prizes] == [(0, 1), (0, 7)]
    after = balance(points_api, shop.shop_id, member)
    assert (after.available, after.held) == (before - 8 * 5, 0)


@pytest.mark.parametrize("crash_after", ["hold", "draw", "capture"])
def test_a_draw_interrupted_after_any_step_is_finished_once_by_the_recovery(
        api: Authed, shop: Any, member: str, points: Any, points_api: Authed, rewards: Any, crash_after: str) -> None:
    """The step took effect and its runner died before recording it: the recovery runs the step
    again (an idempotent call, or a draw its state already claimed) and finishes the saga — one
    prize, one coupon, the cost captured once."""
    coupon, lottery = coupon_lottery(api, shop.shop_id, stock=3)
    fund(points, shop, member, 100)
    before = balance(points_api, shop.shop_id, member).available
    service = rewards.running.app.servicer.service

    def dies_after(action: Any) -> Any:
        def run(ctx: SagaContext) -> Any:
            action(ctx)
            raise RuntimeError("the runner died before recording this step")
        return run

    runner, crashing = runner_with(service, **{crash_after: dies_after})
    cmd = commands.Draw(shop.shop_id, rid(), lottery.lottery_id, member)
    draw_id, saga_id = service.db.transact(lambda uow: lottery_saga.accept(runner, uow, cmd, utcnow()))
    assert not crashing.run(saga_id).finished

    def finished() -> bool:
        service.sagas.recover()  # what the periodic worker of any replica does
        return service.sagas.outcome(saga_id).state == "COMPLETED"

    eventually(finished, "the recovery finished the draw", timeout=30.0)
    (drawn,) = draws(api, shop.shop_id, member)
    assert (drawn.draw_id, drawn.state, drawn.prize_kind, len(drawn.coupon_ids)) == (
        draw_id, lpb.DRAW_STATE_COMPLETED, lpb.PRIZE_KIND_COUPON, 1)
    assert [c.source_reference for c in wallet(api, shop.shop_id, member)] == [draw_id]
    after = balance(points_api, shop.shop_id, member)
    assert (after.available, after.held) == (before - 30, 0)
    assert api.GetLottery(lpb.GetLotteryRequest(shop_id=shop.shop_id, lottery_id=lottery.lottery_id)
                          ).prizes[0].stock == 2


def test_a_capture_refused_after_the_draw_gives_the_prize_back(api: Authed, shop: Any, member: str, points: Any,
                                                                points_api: Authed, rewards: Any) -> None:
    """Should points refuse the capture (the hold released meanwhile), the draw is undone: its
    stock back, its coupon revoked, the draw FAILED and not listed, nothing charged."""
    coupon, lottery = coupon_lottery(api, shop.shop_id, stock=3)
    fund(points, shop, member, 100)
    before = balance(points_api, shop.shop_id, member).available
    service = rewards.running.app.servicer.service

    def then_lose_it(hold: Any) -> Any:
        def run(ctx: SagaContext) -> Any:
            held = hold(ctx)
            points_api.ReleaseHold(pp.ReleaseHoldRequest(request_id=rid(), shop_id=shop.shop_id,
                                                         hold_id=held["hold_id"]))
            return held
        return run

    runner, refusing = runner_with(service, hold=then_lose_it)
    cmd = commands.Draw(shop.shop_id, rid(), lottery.lottery_id, member)
    draw_id, saga_id = service.db.transact(lambda uow: lottery_saga.accept(runner, uow, cmd, utcnow()))
    assert refusing.run(saga_id).state == "COMPENSATED"

    assert draws(api, shop.shop_id, member) == []
    assert [c.state for c in wallet(api, shop.shop_id, member)] == [rpb.COUPON_STATE_REVOKED]
    after = balance(points_api, shop.shop_id, member)
    assert (after.available, after.held) == (before, 0)
    prize = api.GetLottery(lpb.GetLotteryRequest(shop_id=shop.shop_id, lottery_id=lottery.lottery_id)).prizes[0]
    assert (prize.stock, prize.won) == (3, 0)
