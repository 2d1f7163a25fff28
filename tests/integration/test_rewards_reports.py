"""The operators' report through the public API, on both backends: stock left per reward, the
coupons issued in a period with what became of them (an unused coupon past its window counts as
expired, job or not), completed redemptions per reward and shop-local day, and clear refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from loyalty.rewards.v1 import rewards_service_pb2 as rpb

from tests.conftest import Authed, failure_of
from tests.support.builders import rid
from tests.support.coupons import coupon_reward, issue, stamp
from tests.support.rewards import create_reward, join_member, rewards_api


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
