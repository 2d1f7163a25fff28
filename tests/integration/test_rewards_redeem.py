"""Contract tests of redemption (兑换) through real gRPC servers (rewards calling points), on both
backends: a redemption spends the points once, takes the stock once and issues what was redeemed;
a refusal takes nothing; points + cash waits for its payment, or gives everything back when
cancelled or late; an operator cancels a gift before shipment; 200 members race for 50 items."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
import pytest
from loyalty.points.v1 import points_service_pb2 as pp
from loyalty.rewards.v1 import events_pb2
from loyalty.rewards.v1 import rewards_service_pb2 as rpb

from services.kit.timeutil import utcnow
from services.rewards import domain, payments, reasons
from services.rewards.service import RewardsService
from tests.conftest import Authed, ServiceUnderTest, Shop, create_shop
from tests.support.builders import rid
from tests.support.coupons import wallet
from tests.support.errors import Failure
from tests.support.events import outbox_events
from tests.support.redemptions import (
    balance,
    get_redemption,
    ledger,
    points_api,
    redeem,
    redeem_retrying,
    refusal,
    stock_of,
)
from tests.support.rewards import create_reward, fund, join_member, rewards_api

PRICE = 100


@pytest.fixture
def api(rewards: ServiceUnderTest, shop: Shop) -> Authed:
    return rewards_api(rewards, shop)


@pytest.fixture
def papi(points: ServiceUnderTest, shop: Shop) -> Authed:
    return points_api(points, shop)


def funded_member(points: ServiceUnderTest, shop: Shop, amount: int = 500) -> str:
    member_id = join_member(shop)
    fund(points, shop, member_id, amount)
    return member_id


def service_of(rewards: ServiceUnderTest) -> RewardsService:
    return rewards.running.app.servicer.service  # type: ignore[attr-defined]


# ----- redeeming ----------------------------------------------------------------------------------


def test_a_coupon_redemption_spends_the_points_takes_the_stock_and_issues_the_coupon(
    api: Authed, papi: Authed, points: ServiceUnderTest, rewards: ServiceUnderTest, shop: Shop
) -> None:
    reward = create_reward(api, shop.shop_id, points_price=PRICE, stock=10)
    member_id = funded_member(points, shop)
    available, _ = balance(papi, shop.shop_id, member_id)

    done = redeem(api, shop.shop_id, member_id, reward.reward_id)

    assert done.state == rpb.REDEMPTION_STATE_COMPLETED and done.redemption_id
    assert (done.points, done.quantity, done.kind) == (PRICE, 1, rpb.REWARD_KIND_COUPON)
    assert len(done.coupon_ids) == 1 and done.complete_time.seconds
    assert balance(papi, shop.shop_id, member_id) == (available - PRICE, 0)
    captured = [e for e in ledger(papi, shop.shop_id, member_id) if e.kind == pp.ENTRY_KIND_CAPTURE]
    assert [(e.held_delta, e.source.redemption_id) for e in captured] == [(-PRICE, done.redemption_id)]
    assert stock_of(api, shop.shop_id, reward.reward_id) == (9, 1)
    assert get_redemption(api, shop.shop_id, done.redemption_id) == done
    (coupon,) = wallet(api, shop.shop_id, member_id)
    assert (coupon.coupon_id, coupon.state, coupon.source, coupon.source_reference, coupon.reward_id) == (
        done.coupon_ids[0], rpb.COUPON_STATE_UNUSED, rpb.COUPON_SOURCE_REDEMPTION, done.redemption_id,
        reward.reward_id)
    events = outbox_events(rewards.running.app.db, shop.shop_id, events_pb2.RewardRedeemed)
    assert [(e.redemption_id, e.member_id, e.points) for e in events] == [(done.redemption_id, member_id, PRICE)]


def test_two_of_a_reward_cost_twice_and_issue_two_coupons(
    api: Authed, papi: Authed, points: ServiceUnderTest, shop: Shop
) -> None:
    reward = create_reward(api, shop.shop_id, points_price=PRICE, stock=10)
    member_id = funded_member(points, shop)
    available, _ = balance(papi, shop.shop_id, member_id)
    done = redeem(api, shop.shop_id, member_id, reward.reward_id, quantity=2)
    assert (done.state, done.points, len(set(done.coupon_ids))) == (rpb.REDEMPTION_STATE_COMPLETED, 2 * PRICE, 2)
    assert balance(papi, shop.shop_id, member_id) == (available - 2 * PRICE, 0)
    assert stock_of(api, shop.shop_id, reward.reward_id) == (8, 2)


def test_a_gift_and_a_virtual_good_are_redeemed(api: Authed, papi: Authed, points: ServiceUnderTest,
                                               shop: Shop) -> None:
    gift = create_reward(api, shop.shop_id, name="Mug", kind=rpb.REWARD_KIND_GIFT, points_price=PRICE,
                         gift=rpb.GiftSpec(gift_class=rpb.GIFT_CLASS_PARTICIPATION))
    card = create_reward(api, shop.shop_id, name="Video card", kind=rpb.REWARD_KIND_VIRTUAL, points_price=PRICE,
                         virtual=rpb.VirtualSpec(virtual_kind=rpb.VIRTUAL_KIND_MEMBERSHIP_CARD, valid_days=30))
    member_id = funded_member(points, shop)
    shipped = redeem(api, shop.shop_id, member_id, gift.reward_id)
    granted = redeem(api, shop.shop_id, member_id, card.reward_id)
    assert (shipped.state, shipped.shipped, list(shipped.coupon_ids)) == (rpb.REDEMPTION_STATE_COMPLETED, False, [])
    assert (granted.state, granted.kind) == (rpb.REDEMPTION_STATE_COMPLETED, rpb.REWARD_KIND_VIRTUAL)


def test_too_few_points_is_refused_and_takes_nothing(api: Authed, papi: Authed, points: ServiceUnderTest,
                                                     shop: Shop) -> None:
    reward = create_reward(api, shop.shop_id, points_price=10**6, stock=10)
    member_id = funded_member(points, shop)
    before = balance(papi, shop.shop_id, member_id)

    failure = refusal(redeem, api, shop.shop_id, member_id, reward.reward_id)

    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, reasons.INSUFFICIENT_POINTS)
    assert balance(papi, shop.shop_id, member_id) == before
    assert stock_of(api, shop.shop_id, reward.reward_id) == (10, 0)
    failed = get_redemption(api, shop.shop_id, failure.metadata["redemption_id"])
    assert (failed.state, failed.failure_reason) == (rpb.REDEMPTION_STATE_FAILED, reasons.INSUFFICIENT_POINTS)


def test_the_last_item_goes_to_the_first_and_the_next_is_refused_out_of_stock(
    api: Authed, papi: Authed, points: ServiceUnderTest, shop: Shop
) -> None:
    reward = create_reward(api, shop.shop_id, points_price=PRICE, stock=1)
    first, second = funded_member(points, shop), funded_member(points, shop)
    before = balance(papi, shop.shop_id, second)
    assert redeem(api, shop.shop_id, first, reward.reward_id).state == rpb.REDEMPTION_STATE_COMPLETED
    failure = refusal(redeem, api, shop.shop_id, second, reward.reward_id)
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, reasons.OUT_OF_STOCK)
    assert balance(papi, shop.shop_id, second) == before
    assert stock_of(api, shop.shop_id, reward.reward_id) == (0, 1)


def test_a_members_limit_and_tier_are_kept(api: Authed, papi: Authed, points: ServiceUnderTest, shop: Shop) -> None:
    limited = create_reward(api, shop.shop_id, points_price=PRICE, limit_per_member=1)
    gold = create_reward(api, shop.shop_id, points_price=PRICE, min_tier_level=9)
    member_id = funded_member(points, shop)
    redeem(api, shop.shop_id, member_id, limited.reward_id)
    before = balance(papi, shop.shop_id, member_id)
    again = refusal(redeem, api, shop.shop_id, member_id, limited.reward_id)
    too_low = refusal(redeem, api, shop.shop_id, member_id, gold.reward_id)
    assert (again.code, again.reason) == (grpc.StatusCode.FAILED_PRECONDITION, reasons.LIMIT_REACHED)
    assert (too_low.code, too_low.reason) == (grpc.StatusCode.FAILED_PRECONDITION, reasons.TIER_TOO_LOW)
    assert balance(papi, shop.shop_id, member_id) == before
    assert stock_of(api, shop.shop_id, limited.reward_id) == (9, 1)
    assert stock_of(api, shop.shop_id, gold.reward_id) == (10, 0)


def test_a_retried_redeem_is_the_same_redemption_and_takes_nothing_twice(
    api: Authed, papi: Authed, points: ServiceUnderTest, shop: Shop
) -> None:
    reward = create_reward(api, shop.shop_id, points_price=PRICE, stock=10)
    member_id = funded_member(points, shop)
    available, _ = balance(papi, shop.shop_id, member_id)
    request_id = rid()
    first = redeem(api, shop.shop_id, member_id, reward.reward_id, request_id=request_id)
    second = redeem(api, shop.shop_id, member_id, reward.reward_id, request_id=request_id)
    assert first == second
    assert balance(papi, shop.shop_id, member_id) == (available - PRICE, 0)
    assert stock_of(api, shop.shop_id, reward.reward_id) == (9, 1)


def test_a_retried_refusal_is_the_same_refusal(api: Authed, points: ServiceUnderTest, shop: Shop) -> None:
    reward = create_reward(api, shop.shop_id, points_price=10**6)
    member_id = funded_member(points, shop)
    request_id = rid()
    first = refusal(redeem, api, shop.shop_id, member_id, reward.reward_id, request_id=request_id)
    second = refusal(redeem, api, shop.shop_id, member_id, reward.reward_id, request_id=request_id)
    assert first == second and first.reason == reasons.INSUFFICIENT_POINTS


def test_validation_says_why_not_and_reserves_nothing(api: Authed, papi: Authed, points: ServiceUnderTest,
                                                      shop: Shop) -> None:
    reward = create_reward(api, shop.shop_id, points_price=PRICE, stock=10, cash_price_fen=500)
    rich, poor = funded_member(points, shop), join_member(shop)
    before = balance(papi, shop.shop_id, rich)

    def validate(member_id: str, quantity: int = 1) -> rpb.ValidateRedemptionResponse:
        return api.ValidateRedemption(rpb.ValidateRedemptionRequest(
            shop_id=shop.shop_id, member_id=member_id, reward_id=reward.reward_id, quantity=quantity))

    assert validate(rich) == rpb.ValidateRedemptionResponse(redeemable=True, points=PRICE, cash_fen=500)
    assert list(validate(poor, 11).unavailable_reasons) == [reasons.OUT_OF_STOCK, reasons.INSUFFICIENT_POINTS]
    assert balance(papi, shop.shop_id, rich) == before
    assert stock_of(api, shop.shop_id, reward.reward_id) == (10, 0)


def test_bad_requests_name_the_field(api: Authed, shop: Shop) -> None:
    failure = refusal(api.Redeem, rpb.RedeemRequest(shop_id=shop.shop_id, member_id="m", reward_id="r",
                                                    quantity=100))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"request_id", "quantity"} <= failure.fields.keys()
    unpaid = refusal(api.ConfirmPayment, rpb.ConfirmPaymentRequest(request_id=rid(), shop_id=shop.shop_id,
                                                                   redemption_id="rd_x"))
    assert (unpaid.code, set(unpaid.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, {"payment_reference"})


# ----- points + cash ------------------------------------------------------------------------------


def awaiting(api: Authed, papi: Authed, points: ServiceUnderTest, shop: Shop) -> tuple[rpb.Redemption, str, int]:
    """A points + cash redemption waiting for its payment; the reward's id and the points the
    member had before."""
    reward = create_reward(api, shop.shop_id, points_price=PRICE, cash_price_fen=990, stock=10)
    member_id = funded_member(points, shop)
    available, _ = balance(papi, shop.shop_id, member_id)
    waiting = redeem(api, shop.shop_id, member_id, reward.reward_id)
    assert (waiting.state, waiting.cash_fen) == (rpb.REDEMPTION_STATE_AWAITING_PAYMENT, 990)
    assert waiting.payment_deadline.ToDatetime() > utcnow() + domain.PAYMENT_WINDOW - timedelta(minutes=1)
    assert balance(papi, shop.shop_id, member_id) == (available - PRICE, PRICE)
    assert stock_of(api, shop.shop_id, reward.reward_id) == (9, 1)
    return waiting, reward.reward_id, available


def confirm(api: Authed, shop: Shop, redemption_id: str, reference: str = "pay-1") -> rpb.Redemption:
    return api.ConfirmPayment(rpb.ConfirmPaymentRequest(request_id=rid(), shop_id=shop.shop_id,
                                                        redemption_id=redemption_id, payment_reference=reference))


def cancel(api: Authed, shop: Shop, redemption_id: str, **fields: str) -> rpb.Redemption:
    return api.CancelRedemption(rpb.CancelRedemptionRequest(request_id=rid(), shop_id=shop.shop_id,
                                                            redemption_id=redemption_id, **fields))


def test_a_paid_redemption_completes_and_cannot_be_cancelled(api: Authed, papi: Authed, points: ServiceUnderTest,
                                                             shop: Shop) -> None:
    waiting, reward_id, available = awaiting(api, papi, points, shop)
    paid = confirm(api, shop, waiting.redemption_id, "wx-4200001")
    assert (paid.state, paid.payment_reference, len(paid.coupon_ids)) == (rpb.REDEMPTION_STATE_COMPLETED,
                                                                          "wx-4200001", 1)
    assert balance(papi, shop.shop_id, waiting.member_id) == (available - PRICE, 0)
    assert stock_of(api, shop.shop_id, reward_id) == (9, 1)
    assert refusal(cancel, api, shop, waiting.redemption_id).reason == reasons.NOT_CANCELLABLE
    assert refusal(confirm, api, shop, waiting.redemption_id).reason == reasons.NOT_AWAITING_PAYMENT


def test_cancelling_before_payment_gives_points_and_stock_back(api: Authed, papi: Authed,
                                                               points: ServiceUnderTest, shop: Shop) -> None:
    waiting, reward_id, available = awaiting(api, papi, points, shop)
    request = rpb.CancelRedemptionRequest(request_id=rid(), shop_id=shop.shop_id, redemption_id=waiting.redemption_id,
                                          reason="changed my mind")
    cancelled = api.CancelRedemption(request)
    assert api.CancelRedemption(request) == cancelled, "a retry is answered alike"
    assert (cancelled.state, cancelled.failure_reason, cancelled.cancel_reason) == (
        rpb.REDEMPTION_STATE_CANCELLED, reasons.CANCELLED_BY_MEMBER, "changed my mind")
    assert balance(papi, shop.shop_id, waiting.member_id) == (available, 0)
    assert stock_of(api, shop.shop_id, reward_id) == (10, 0)
    failure = refusal(confirm, api, shop, waiting.redemption_id)
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, reasons.NOT_AWAITING_PAYMENT)


def test_an_unpaid_redemption_past_its_deadline_gives_everything_back_by_itself(
    api: Authed, papi: Authed, points: ServiceUnderTest, rewards: ServiceUnderTest, shop: Shop
) -> None:
    waiting, reward_id, available = awaiting(api, papi, points, shop)
    # The deadline job, run as its worker does but at a clock past the payment window.
    service = service_of(rewards)
    payments.cancel_overdue(service, now=utcnow() + domain.PAYMENT_WINDOW - timedelta(minutes=1))
    assert get_redemption(api, shop.shop_id, waiting.redemption_id).state == rpb.REDEMPTION_STATE_AWAITING_PAYMENT
    assert payments.cancel_overdue(service, now=utcnow() + domain.PAYMENT_WINDOW + timedelta(minutes=1)) >= 1
    late = get_redemption(api, shop.shop_id, waiting.redemption_id)
    assert (late.state, late.failure_reason) == (rpb.REDEMPTION_STATE_CANCELLED, reasons.PAYMENT_TIMEOUT)
    assert balance(papi, shop.shop_id, waiting.member_id) == (available, 0)
    assert stock_of(api, shop.shop_id, reward_id) == (10, 0)
    assert refusal(confirm, api, shop, waiting.redemption_id).reason == reasons.NOT_AWAITING_PAYMENT



def test_a_cash_only_reward_holds_no_points_and_completes_when_paid(api: Authed, papi: Authed,
                                                                    points: ServiceUnderTest, shop: Shop) -> None:
    reward = create_reward(api, shop.shop_id, points_price=0, cash_price_fen=500, stock=3)
    member_id = funded_member(points, shop)
    before = balance(papi, shop.shop_id, member_id)
    waiting = redeem(api, shop.shop_id, member_id, reward.reward_id)
    assert (waiting.state, waiting.points, waiting.cash_fen) == (rpb.REDEMPTION_STATE_AWAITING_PAYMENT, 0, 500)
    assert balance(papi, shop.shop_id, member_id) == before
    assert confirm(api, shop, waiting.redemption_id).state == rpb.REDEMPTION_STATE_COMPLETED
    assert balance(papi, shop.shop_id, member_id) == before
    assert stock_of(api, shop.shop_id, reward.reward_id) == (2, 1)


def test_of_a_payment_and_a_cancellation_at_once_exactly_one_wins(api: Authed, papi: Authed,
                                                                   points: ServiceUnderTest, shop: Shop) -> None:
    waiting, reward_id, available = awaiting(api, papi, points, shop)
    calls = [lambda: confirm(api, shop, waiting.redemption_id), lambda: cancel(api, shop, waiting.redemption_id)]

    def outcome(call: Callable[[], rpb.Redemption]) -> object:
        try:
            return call().state
        except grpc.RpcError as exc:
            return exc.code()

    with ThreadPoolExecutor(max_workers=2) as pool:
        paid, cancelled = pool.map(outcome, calls)

    final = get_redemption(api, shop.shop_id, waiting.redemption_id)
    if final.state == rpb.REDEMPTION_STATE_COMPLETED:
        assert (paid, cancelled) == (rpb.REDEMPTION_STATE_COMPLETED, grpc.StatusCode.FAILED_PRECONDITION)
        assert balance(papi, shop.shop_id, waiting.member_id) == (available - PRICE, 0)
        assert stock_of(api, shop.shop_id, reward_id) == (9, 1)
    else:
        assert (paid, cancelled) == (grpc.StatusCode.FAILED_PRECONDITION, rpb.REDEMPTION_STATE_CANCELLED)
        assert balance(papi, shop.shop_id, waiting.member_id) == (available, 0)
        assert stock_of(api, shop.shop_id, reward_id) == (10, 0)

# ----- an operator's cancellation of a gift ---------------------------------------------------------


def test_an_operator_cancels_a_gift_before_shipment_and_the_points_come_back(
    api: Authed, papi: Authed, points: ServiceUnderTest, rewards: ServiceUnderTest, shop: Shop
) -> None:
    gift = create_reward(api, shop.shop_id, name="Mug", kind=rpb.REWARD_KIND_GIFT, points_price=PRICE, stock=5,
                         limit_per_member=1, gift=rpb.GiftSpec(gift_class=rpb.GIFT_CLASS_MID_VALUE))
    coupon = create_reward(api, shop.shop_id, points_price=PRICE)
    member_id = funded_member(points, shop)
    available, _ = balance(papi, shop.shop_id, member_id)
    done = redeem(api, shop.shop_id, member_id, gift.reward_id)
    no_operator = refusal(cancel, api, shop, done.redemption_id, reason="out of mugs")
    assert (no_operator.code, no_operator.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reasons.OPERATOR_REQUIRED)

    cancelled = cancel(api, shop, done.redemption_id, reason="out of mugs", operator="alice")

    assert (cancelled.state, cancelled.failure_reason, cancelled.cancel_reason) == (
        rpb.REDEMPTION_STATE_CANCELLED, reasons.CANCELLED_BY_OPERATOR, "out of mugs")
    assert balance(papi, shop.shop_id, member_id) == (available, 0)
    (adjusted,) = [e for e in ledger(papi, shop.shop_id, member_id) if e.kind == pp.ENTRY_KIND_ADJUST]
    assert (adjusted.amount, adjusted.source.operator) == (PRICE, "alice")
    assert done.redemption_id in adjusted.source.reason
    assert stock_of(api, shop.shop_id, gift.reward_id) == (5, 0)
    events = outbox_events(rewards.running.app.db, shop.shop_id, events_pb2.RedemptionCancelled)
    assert [(e.redemption_id, e.points_returned, e.reason) for e in events] == [
        (done.redemption_id, PRICE, "out of mugs")]
    # The limit was given back too: the member may redeem the gift again.
    assert redeem(api, shop.shop_id, member_id, gift.reward_id).state == rpb.REDEMPTION_STATE_COMPLETED
    coupon_done = redeem(api, shop.shop_id, member_id, coupon.reward_id)
    assert refusal(cancel, api, shop, coupon_done.redemption_id, operator="alice").reason == reasons.NOT_CANCELLABLE


def _ship(api: Authed, shop: Shop, redemption_id: str, reference: str, request_id: str | None = None
          ) -> rpb.Redemption:
    return api.ShipRedemption(rpb.ShipRedemptionRequest(request_id=request_id or rid(), shop_id=shop.shop_id,
                                                        redemption_id=redemption_id, shipment_reference=reference))


def test_a_shipped_gift_can_no_longer_be_cancelled(api: Authed, papi: Authed, points: ServiceUnderTest,
                                                  shop: Shop) -> None:
    gift = create_reward(api, shop.shop_id, name="Tote", kind=rpb.REWARD_KIND_GIFT, points_price=PRICE, stock=5,
                         gift=rpb.GiftSpec(gift_class=rpb.GIFT_CLASS_PARTICIPATION, ship_with_next_order=True))
    coupon = create_reward(api, shop.shop_id, points_price=PRICE)
    member_id = funded_member(points, shop)
    done = redeem(api, shop.shop_id, member_id, gift.reward_id)
    assert not done.shipped

    shipped = _ship(api, shop, done.redemption_id, "order-778899")  # 随单发货: with the member's next order
    assert (shipped.shipped, shipped.shipment_reference, shipped.state) == (
        True, "order-778899", rpb.REDEMPTION_STATE_COMPLETED)
    assert shipped.ship_time.seconds > 0
    again = _ship(api, shop, done.redemption_id, "order-778899")  # the same shipment reported twice
    assert again.ship_time == shipped.ship_time
    assert refusal(_ship, api, shop, done.redemption_id, "SF123").reason == reasons.ALREADY_SHIPPED
    assert refusal(cancel, api, shop, done.redemption_id, operator="alice", reason="late").reason == (
        reasons.ALREADY_SHIPPED)
    available, _ = balance(papi, shop.shop_id, member_id)
    assert stock_of(api, shop.shop_id, gift.reward_id) == (4, 1)  # nothing came back

    coupon_done = redeem(api, shop.shop_id, member_id, coupon.reward_id)
    assert refusal(_ship, api, shop, coupon_done.redemption_id, "SF1").reason == reasons.NOT_A_GIFT
    other = redeem(api, shop.shop_id, member_id, gift.reward_id)
    cancel(api, shop, other.redemption_id, operator="alice", reason="out of totes")
    assert refusal(_ship, api, shop, other.redemption_id, "SF2").reason == reasons.NOT_SHIPPABLE
    bad = refusal(_ship, api, shop, done.redemption_id, "")
    assert (bad.code, "shipment_reference" in bad.fields) == (grpc.StatusCode.INVALID_ARGUMENT, True)
    assert balance(papi, shop.shop_id, member_id)[0] == available - PRICE  # the coupon; the cancelled tote came back


# ----- shops and lists ----------------------------------------------------------------------------------


def test_another_shops_redemption_is_not_found(api: Authed, points: ServiceUnderTest, rewards: ServiceUnderTest,
                                               membership: ServiceUnderTest, admin: Authed, shop: Shop) -> None:
    reward = create_reward(api, shop.shop_id, points_price=PRICE)
    done = redeem(api, shop.shop_id, funded_member(points, shop), reward.reward_id)
    other = create_shop(membership, admin)
    theirs = rewards_api(rewards, other)
    for call in (lambda: get_redemption(theirs, other.shop_id, done.redemption_id),
                 lambda: confirm(theirs, other, done.redemption_id),
                 lambda: cancel(theirs, other, done.redemption_id, operator="eve"),
                 lambda: _ship(theirs, other, done.redemption_id, "SF9")):
        failure = refusal(call)
        assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, reasons.REDEMPTION_NOT_FOUND)
    assert theirs.ListRedemptions(rpb.ListRedemptionsRequest(shop_id=other.shop_id)).redemptions == []


def test_redemptions_are_listed_newest_first_in_pages_and_filtered(api: Authed, points: ServiceUnderTest,
                                                                   shop: Shop) -> None:
    reward = create_reward(api, shop.shop_id, points_price=PRICE)
    pricey = create_reward(api, shop.shop_id, points_price=10**6)
    member_id, other_id = funded_member(points, shop), funded_member(points, shop)
    made = [redeem(api, shop.shop_id, m, reward.reward_id).redemption_id for m in (member_id, other_id, member_id)]
    refusal(redeem, api, shop.shop_id, member_id, pricey.reward_id)

    def listed(**request: object) -> list[str]:
        ids, token = [], ""
        while True:
            page = api.ListRedemptions(rpb.ListRedemptionsRequest(shop_id=shop.shop_id, page_size=2,
                                                                  page_token=token, **request))
            assert len(page.redemptions) <= 2
            ids += [r.redemption_id for r in page.redemptions]
            token = page.next_page_token
            if not token:
                return ids

    assert listed(reward_id=reward.reward_id) == made[::-1]
    assert listed(member_id=member_id, reward_id=reward.reward_id) == [made[2], made[0]]
    assert len(listed(state=rpb.REDEMPTION_STATE_FAILED)) == 1
    assert len(listed()) == 4
    bad = refusal(api.ListRedemptions, rpb.ListRedemptionsRequest(shop_id=shop.shop_id, page_token="nonsense"))
    assert (bad.code, set(bad.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, {"page_token"})


# ----- 先兑先得: many members, little stock --------------------------------------------------------------


def test_two_hundred_members_racing_for_fifty_items_get_exactly_fifty(
    backend, api: Authed, papi: Authed, points: ServiceUnderTest, shop: Shop  # noqa: ANN001
) -> None:
    if backend.name != "postgres":
        pytest.skip("the race is run on PostgreSQL (SQLite serializes every writer)")
    reward = create_reward(api, shop.shop_id, points_price=PRICE, stock=50)
    member_ids = [funded_member(points, shop, 300) for _ in range(200)]
    before = {m: balance(papi, shop.shop_id, m) for m in member_ids}
    requests = [rpb.RedeemRequest(request_id=rid(), shop_id=shop.shop_id, member_id=m, reward_id=reward.reward_id)
                for m in member_ids]

    with ThreadPoolExecutor(max_workers=40) as pool:
        outcomes = list(pool.map(lambda r: redeem_retrying(api, r), requests))

    won = [o for o in outcomes if isinstance(o, rpb.Redemption)]
    lost = [(m, o) for m, o in zip(member_ids, outcomes, strict=True) if isinstance(o, Failure)]
    assert len(won) == 50 and all(o.state == rpb.REDEMPTION_STATE_COMPLETED for o in won)
    assert {o.reason for _, o in lost} == {reasons.OUT_OF_STOCK}
    assert stock_of(api, shop.shop_id, reward.reward_id) == (0, 50)
    for member_id, _ in lost:
        assert balance(papi, shop.shop_id, member_id) == before[member_id], "a failed member's points are whole"
    for redemption in won:
        available, held = before[redemption.member_id]
        assert balance(papi, shop.shop_id, redemption.member_id) == (available - PRICE, held)
