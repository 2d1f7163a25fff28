"""The operators' report through the public API, on both backends: stock left per reward, the
coupons issued in a period with what became of them (an unused coupon past its window counts as
expired, job or not), completed redemptions per reward and shop-local day, each campaign's reach
and conversion (treated vs held out), and clear refusals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from loyalty.membership.v1 import events_pb2 as mev
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.rewards.v1 import campaigns_pb2 as cpb
from loyalty.rewards.v1 import rewards_service_pb2 as rpb

from services.rewards import checkout, orders
from tests.conftest import Authed, failure_of
from tests.support.builders import eventually, rid
from tests.support.coupons import YUAN, coupon_reward, issue, stamp
from tests.support.events import outbox_events
from tests.support.rewards import create_reward, join_member, rewards_api, set_tier


@pytest.fixture
def api(rewards: Any, shop: Any) -> Authed:
    return rewards_api(rewards, shop)


def _report(api: Authed, shop_id: str, **period: Any) -> rpb.RewardsReport:
    return api.GetRewardsReport(rpb.GetRewardsReportRequest(shop_id=shop_id, **period))


def test_the_report_counts_coupons_issued_and_what_became_of_them(api: Authed, shop: Any) -> None:
    live = coupon_reward(api, shop.shop_id, name="满99减10", valid_days=30)
    past = coupon_reward(api, shop.shop_id, name="过期券", valid_from=datetime.now(UTC) - timedelta(days=3),
                         valid_until=datetime.now(UTC) - timedelta(days=1))
    members = [join_member(shop) for _ in range(4)]
    used = issue(api, shop.shop_id, live.reward_id, members).coupons
    issue(api, shop.shop_id, past.reward_id, members[:2])
    api.UseCoupon(rpb.UseCouponRequest(request_id=rid(), shop_id=shop.shop_id, coupon_id=used[0].coupon_id,
                                       order_id="o-1", order_amount_fen=12_000))

    report = _report(api, shop.shop_id)
    by_reward = {r.reward_id: r.figures for r in report.coupons_by_reward}
    assert (by_reward[live.reward_id].issued, by_reward[live.reward_id].used, by_reward[live.reward_id].unused,
            by_reward[live.reward_id].use_rate_bp) == (4, 1, 3, 2500)
    assert (by_reward[past.reward_id].issued, by_reward[past.reward_id].expired) == (2, 2)  # before any job ran
    assert (report.coupons.issued, report.coupons.used, report.coupons.expired, report.coupons.unused,
            report.coupons.use_rate_bp) == (6, 1, 2, 3, 1666)

    stock = {s.reward_id: s for s in report.stock}
    assert (stock[live.reward_id].stock, stock[live.reward_id].redeemed) == (10, 0)  # issuance takes no stock

    earlier = _report(api, shop.shop_id, start_time=stamp(datetime.now(UTC) - timedelta(days=60)),
                      end_time=stamp(datetime.now(UTC) - timedelta(days=31)))
    assert earlier.coupons.issued == 0 and list(earlier.coupons_by_reward) == []


def test_a_report_is_of_one_shop_and_a_bad_period_is_refused(api: Authed, shop: Any, rewards: Any,
                                                             membership: Any, admin: Any) -> None:
    from tests.conftest import create_shop

    create_reward(api, shop.shop_id, name="ours")
    other = create_shop(membership, admin)
    theirs = rewards_api(rewards, other)
    assert [s.name for s in _report(theirs, other.shop_id).stock] == []
    with pytest.raises(grpc.RpcError) as caught:
        _report(api, shop.shop_id, start_time=stamp(datetime.now(UTC)),
                end_time=stamp(datetime.now(UTC) - timedelta(days=1)))
    assert "end_time" in failure_of(caught.value).fields
    with pytest.raises(grpc.RpcError) as caught:
        _report(api, shop.shop_id, start_time=stamp(datetime.now(UTC) - timedelta(days=400)))
    assert "start_time" in failure_of(caught.value).fields
    with pytest.raises(grpc.RpcError) as caught:
        _report(api, other.shop_id)  # our key, their shop
    assert failure_of(caught.value).code == grpc.StatusCode.PERMISSION_DENIED


# ----- campaigns: reach and conversion, treated vs held out ---------------------------------------------


def _campaign(api: Authed, shop_id: str, start: datetime, end: datetime, **fields: Any) -> cpb.Campaign:
    return api.CreateCampaign(cpb.CreateCampaignRequest(request_id=rid(), shop_id=shop_id, campaign=cpb.Campaign(
        kind=cpb.CAMPAIGN_KIND_PERCENTAGE_DISCOUNT, all_items=True, discount_permille=900, start_time=stamp(start),
        end_time=stamp(end), **fields)))


def _complete(shop: Any, buyer_id: str, fen: int, at: datetime | None = None, order_id: str = "") -> str:
    """An order of the buyer recorded and completed through membership (at `at`, default now)."""
    order_id = order_id or "o-" + uuid.uuid4().hex[:12]
    times = {"paid_time": stamp(at)} if at else {}
    shop.api.RecordOrder(mpb.RecordOrderRequest(request_id=rid(), shop_id=shop.shop_id, order_id=order_id,
                                                buyer_id=buyer_id, amount_fen=fen, **times))
    shop.api.CompleteOrder(mpb.CompleteOrderRequest(request_id=rid(), shop_id=shop.shop_id, order_id=order_id,
                                                    **({"complete_time": stamp(at)} if at else {})))
    return order_id


def _groups(figures: rpb.CampaignFigures) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    def group(g: rpb.CampaignGroup) -> tuple[int, ...]:
        return g.members, g.converted, g.conversion_rate_bp, g.orders, g.spend_fen

    return figures.reach, group(figures.treated), group(figures.held_out)


def test_a_campaigns_reach_and_conversion_of_the_treated_vs_the_held_out(api: Authed, shop: Any, membership: Any,
                                                                       rewards: Any) -> None:
    create_reward(api, shop.shop_id)  # join_member watches an offer
    now = datetime.now(UTC)
    gold_only = _campaign(api, shop.shop_id, now - timedelta(days=1), now + timedelta(days=30), name="金卡专享",
                          holdout_bp=5000, audience=cpb.Audience(kind=cpb.AUDIENCE_KIND_TIERS, tier_levels=[2]))
    later = _campaign(api, shop.shop_id, now + timedelta(days=40), now + timedelta(days=50), name="春节")
    buyers = {}
    for _ in range(8):
        buyer = "b-" + uuid.uuid4().hex[:10]
        member_id = join_member(shop, buyer_id=buyer)
        set_tier(shop, member_id, 2)
        buyers[member_id] = buyer
    gold = list(buyers)
    outsider = "b-" + uuid.uuid4().hex[:10]
    join_member(shop, buyer_id=outsider)

    # (member, fen, completed before the campaign's window?)
    before = now - timedelta(days=3)
    placed = [(gold[0], 100 * YUAN, False), (gold[0], 50 * YUAN, False), (gold[1], 30 * YUAN, False),
              (gold[2], 80 * YUAN, False), (gold[3], 70 * YUAN, True), (gold[4], 20 * YUAN, False),
              (gold[5], 40 * YUAN, True), (gold[5], 60 * YUAN, False)]
    ids = [_complete(shop, buyers[member_id], fen, before if early else None) for member_id, fen, early in placed]
    _complete(shop, outsider, 90 * YUAN)  # not in the audience: not counted
    leaver_buyer = "b-" + uuid.uuid4().hex[:10]
    leaver = join_member(shop, buyer_id=leaver_buyer)  # gold, ordered, then left: not counted
    set_tier(shop, leaver, 2)
    _complete(shop, leaver_buyer, 75 * YUAN)
    shop.api.LeaveMember(mpb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=leaver,
                                                reason="test"))

    # What the report must say, computed here with the same deterministic holdout.
    expected: dict[bool, list[int]] = {False: [0, 0, 0, 0], True: [0, 0, 0, 0]}  # members, converted, orders, fen
    for member_id in gold:
        group = expected[checkout.held_out(gold_only.campaign_id, member_id, 5000)]
        inside = [fen for m, fen, early in placed if m == member_id and not early]
        group[0] += 1
        group[1] += 1 if inside else 0
        group[2] += len(inside)
        group[3] += sum(inside)

    def shaped(g: list[int]) -> tuple[int, ...]:
        return g[0], g[1], g[1] * 10_000 // g[0] if g[0] else 0, g[2], g[3]

    wanted = (8, shaped(expected[False]), shaped(expected[True]))

    def figures() -> rpb.CampaignFigures:
        (only,) = [c for c in _report(api, shop.shop_id).campaigns if c.campaign_id == gold_only.campaign_id]
        return only

    eventually(lambda: _groups(figures()) == wanted, f"the report shows {wanted}", timeout=45.0)
    report = _report(api, shop.shop_id)
    assert [c.campaign_id for c in report.campaigns] == [gold_only.campaign_id]  # 春节 is after the period
    (shown,) = report.campaigns
    assert (shown.name, shown.kind, shown.status, shown.holdout_bp) == (
        "金卡专享", cpb.CAMPAIGN_KIND_PERCENTAGE_DISCOUNT, cpb.CAMPAIGN_STATUS_RUNNING, 5000)
    assert shown.reach == shown.treated.members + shown.held_out.members == 8
    assert shown.measured_start_time == gold_only.start_time and shown.measured_end_time == report.end_time

    # The same order completed again (membership answers it as done) and every OrderCompleted
    # delivered again to rewards' handler, as after a crash before the inbox recorded it: nothing counts twice.
    _complete(shop, buyers[gold[0]], 100 * YUAN, order_id=ids[0])
    service = rewards.running.app.servicer.service
    for event in outbox_events(membership.running.app.db, shop.shop_id, mev.OrderCompleted):
        service.db.transact(lambda uow, e=event: orders.order_completed(uow, e))
    assert _groups(figures()) == wanted

    # Refunds after completion: gold[1]'s only order in full, no longer a conversion; gold[0]'s first
    # in part (still counted at the amount it completed with), then its second in full (one
    # member's events apply in order, so once that shows, the partial refund has been applied too).
    for order_id, fen in ((ids[2], 30 * YUAN), (ids[0], 10 * YUAN), (ids[1], 50 * YUAN)):
        shop.api.RefundOrder(mpb.RefundOrderRequest(request_id=rid(), shop_id=shop.shop_id, order_id=order_id,
                                                    refund_id="r-" + order_id, amount_fen=fen))
    group = expected[checkout.held_out(gold_only.campaign_id, gold[1], 5000)]
    group[1], group[2], group[3] = group[1] - 1, group[2] - 1, group[3] - 30 * YUAN
    group = expected[checkout.held_out(gold_only.campaign_id, gold[0], 5000)]
    group[2], group[3] = group[2] - 1, group[3] - 50 * YUAN
    wanted = (8, shaped(expected[False]), shaped(expected[True]))
    eventually(lambda: _groups(figures()) == wanted, f"after the refunds, the report shows {wanted}", timeout=45.0)

    # A period over the later campaign lists it alone: not started, nobody converted yet. Its
    # audience is everyone: the 8 gold members and the outsider, not the one who left (the leaver
    # counts until rewards hears they left, and the gold figures still hold after that).
    def ahead() -> rpb.RewardsReport:
        return _report(api, shop.shop_id, start_time=stamp(now + timedelta(days=35)),
                       end_time=stamp(now + timedelta(days=45)))

    (spring,) = eventually(lambda: [c for c in ahead().campaigns if c.reach == 9], "the leaver left", timeout=45.0)
    assert [c.campaign_id for c in ahead().campaigns] == [later.campaign_id]
    assert spring.status == cpb.CAMPAIGN_STATUS_NOT_STARTED
    assert spring.treated.converted == spring.held_out.converted == 0
    assert _groups(figures()) == wanted
