"""Points' per-shop memos of earn rules and multipliers (read per event by the consumers): one
load serves many reads, and a change made through the API is seen by the next read after it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from loyalty.points.v1 import points_service_pb2 as pp

from services.points import program
from services.points.domain import Action
from tests.conftest import Shop
from tests.integration.test_points import points_shop, rid, ts
from tests.support.builders import eventually

T = TypeVar("T")


def settled(read: Callable[[], T]) -> T:
    """The memo's value once the shop's creation has settled: while the consumer that created the
    shop's points program has not finished its after-commit work, reads load afresh (by design)."""
    return eventually(lambda: [first] if (first := read()) is read() else None, "the shop's memo settles")[0]


def test_earn_rules_are_memoised_and_a_change_is_seen_right_after_it(points: Any, shop: Shop) -> None:
    ps = points_shop(points, shop)
    svc = points.running.app.servicer.svc
    before = settled(lambda: program.earn_rules_of(svc, ps.shop_id))
    assert program.earn_rules_of(svc, ps.shop_id) is before  # one load, many reads
    ps.api.UpsertEarnRule(pp.UpsertEarnRuleRequest(request_id=rid(), shop_id=ps.shop_id, rule=pp.EarnRule(
        action=pp.ACTION_SHARE, enabled=True, points=before[Action.SHARE].points + 5)))
    assert program.earn_rules_of(svc, ps.shop_id)[Action.SHARE].points == before[Action.SHARE].points + 5


def test_multipliers_are_memoised_and_a_change_is_seen_right_after_it(points: Any, shop: Shop) -> None:
    ps = points_shop(points, shop)
    svc = points.running.app.servicer.svc
    before = settled(lambda: program.multipliers_of(svc, ps.shop_id))
    assert program.multipliers_of(svc, ps.shop_id) is before
    created = ps.api.CreateMultiplier(pp.CreateMultiplierRequest(request_id=rid(), shop_id=ps.shop_id,
                                                                 multiplier=pp.Multiplier(
        name="元旦三倍", kind=pp.MULTIPLIER_KIND_CAMPAIGN, multiplier_milli=3000,
        start_time=ts("2027-01-01T00:00:00+08:00"), end_time=ts("2027-01-02T00:00:00+08:00"))))
    assert created.multiplier_id in {m.multiplier_id for m in program.multipliers_of(svc, ps.shop_id)}
    ps.api.DeleteMultiplier(pp.DeleteMultiplierRequest(request_id=rid(), shop_id=ps.shop_id,
                                                       multiplier_id=created.multiplier_id))
    assert created.multiplier_id not in {m.multiplier_id for m in program.multipliers_of(svc, ps.shop_id)}
