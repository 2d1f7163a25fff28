"""Tier lifecycle through the real gRPC API on both backends: tier validity and the downgrade
policies at expiry (with the TierExpiring notice first), the what-if of SimulateTierRules against
what ConfigureTiers + ReevaluateTiers then do, and the two CompleteOrder fixes (time bounds, a
retry's answer). The scheduled job is run for the test's own shop at chosen moments, as the
CronJob would run it then."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.membership.v1 import events_pb2
from loyalty.membership.v1 import membership_service_pb2 as pb
from sqlalchemy import select

from services.kit.timeutil import utcnow
from services.membership import domain, lifecycle
from services.membership.tables import members
from tests.conftest import ServiceUnderTest, Shop
from tests.integration.test_membership import YUAN, buy, join, outbox_events, pay, rid, rpc_error, tier_of

DEFAULT_TIERS = [pb.Tier(level=t.level, code=t.code, name=t.name, min_spend_fen=t.min_spend_fen,
                         min_trades=t.min_trades, discount_bp=t.discount_bp, points_rate_milli=t.points_rate_milli)
                 for t in domain.default_tiers()]


def configure(shop: Shop, policy: int, tiers: list[pb.Tier] | None = None) -> None:
    shop.api.ConfigureTiers(pb.ConfigureTiersRequest(
        request_id=rid(), shop_id=shop.shop_id, tiers=tiers or DEFAULT_TIERS,
        qualification_mode=pb.QUALIFICATION_MODE_CUMULATIVE_SPEND, downgrade_policy=policy))


def set_validity(shop: Shop, months: int, notice_days: int) -> pb.Program:
    return shop.api.UpdateProgram(pb.UpdateProgramRequest(
        request_id=rid(), shop_id=shop.shop_id, tier_validity_months=months, downgrade_notice_days=notice_days,
        update_mask=field_mask_pb2.FieldMask(paths=["tier_validity_months", "downgrade_notice_days"])))


def run_job(membership: ServiceUnderTest, shop: Shop, at: datetime) -> lifecycle.ExpiryRun:
    ctx = membership.running.app.servicer.ctx
    return ctx.db.transact(lambda uow: lifecycle.expire_shop(ctx, uow, shop.shop_id, at))


def expiry_of(membership: ServiceUnderTest, shop: Shop, member_id: str) -> datetime | None:
    return membership.running.app.db.read(lambda c: c.execute(select(members.c.tier_expires_at).where(
        members.c.shop_id == shop.shop_id, members.c.member_id == member_id)).scalar_one())


def notices(shop: Shop) -> list[pb.TierExpiryNotice]:
    return list(shop.api.ListTierExpiryNotices(pb.ListTierExpiryNoticesRequest(shop_id=shop.shop_id)).notices)


def history(shop: Shop, member_id: str) -> list[pb.TierChange]:
    return list(shop.api.ListTierHistory(pb.ListTierHistoryRequest(shop_id=shop.shop_id,
                                                                    member_id=member_id)).changes)


# ----- tier validity and downgrade policies ---------------------------------------------------


@pytest.mark.parametrize(("policy", "after_expiry"), [
    (pb.DOWNGRADE_POLICY_NEVER, 3), (pb.DOWNGRADE_POLICY_DOWN_ONE_LEVEL, 2), (pb.DOWNGRADE_POLICY_RECOMPUTE, 1)])
def test_an_expired_tier_is_requalified_on_the_periods_figures_by_the_policy_with_the_notice_first(
        membership: ServiceUnderTest, shop: Shop, policy: int, after_expiry: int) -> None:
    configure(shop, policy)
    program = set_validity(shop, 12, 14)
    assert program.tier_validity_months == 12 and program.downgrade_notice_days == 14
    member = join(shop, "b1").member_id
    buy(shop, "b1", 1500 * YUAN)  # the period's figures: Silver (1)
    shop.api.SetTier(pb.SetTierRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member, tier_level=3,
                                       reason="VIP", operator="ops"))
    expires = expiry_of(membership, shop, member)
    assert expires is not None and timedelta(days=365) <= expires - utcnow() <= timedelta(days=367)

    assert run_job(membership, shop, expires - timedelta(days=20)).notices == 0  # not yet in the notice window
    run_job(membership, shop, expires - timedelta(days=10))
    run_job(membership, shop, expires - timedelta(days=9))  # once per member and expiry
    if policy == pb.DOWNGRADE_POLICY_NEVER:  # nothing to announce: the tier is kept
        assert notices(shop) == [] and outbox_events(membership, shop.shop_id, events_pb2.TierExpiring) == []
    else:
        (notice,) = notices(shop)
        assert (notice.member_id, notice.tier_level, notice.expected_level) == (member, 3, after_expiry)
        assert notice.expire_time.ToDatetime() == expires
        (sent,) = outbox_events(membership, shop.shop_id, events_pb2.TierExpiring)
        assert sent.member_id == member and sent.expected_level == after_expiry
    assert tier_of(shop, member) == 3  # the notice changes nothing

    run_job(membership, shop, expires + timedelta(hours=1))
    assert tier_of(shop, member) == after_expiry
    changes = history(shop, member)
    if after_expiry != 3:
        assert (changes[0].from_level, changes[0].to_level, changes[0].reason) == (
            3, after_expiry, pb.TIER_CHANGE_REASON_EXPIRED)
        changed = [e for e in outbox_events(membership, shop.shop_id, events_pb2.TierChanged)
                   if e.reason == pb.TIER_CHANGE_REASON_EXPIRED]
        assert len(changed) == 1 and changed[0].to_level == after_expiry
        assert changed[0].changed_at.ToDatetime() - sent.notified_at.ToDatetime() > timedelta(days=10)  # notice first
    renewed = expiry_of(membership, shop, member)
    assert renewed is not None and renewed > expires + timedelta(days=360)  # a new period
    # Idempotent: running again changes nothing more.
    again = run_job(membership, shop, expires + timedelta(hours=2))
    assert (again.moved, again.renewed, again.notices) == (0, 0, 0)
    assert tier_of(shop, member) == after_expiry and len(history(shop, member)) == len(changes)


def test_down_one_level_at_a_time_over_successive_expiries(membership: ServiceUnderTest, shop: Shop) -> None:
    configure(shop, pb.DOWNGRADE_POLICY_DOWN_ONE_LEVEL)
    set_validity(shop, 1, 0)
    member = join(shop, "b1").member_id
    shop.api.SetTier(pb.SetTierRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member, tier_level=2,
                                       reason="VIP", operator="ops"))
    first = expiry_of(membership, shop, member)
    run_job(membership, shop, first + timedelta(minutes=1))
    assert tier_of(shop, member) == 1
    second = expiry_of(membership, shop, member)
    assert second is not None and second > first
    run_job(membership, shop, second + timedelta(minutes=1))
    assert tier_of(shop, member) == 0 and expiry_of(membership, shop, member) is None  # level 0 never expires


def test_without_validity_tiers_hold_forever_and_existing_members_get_an_expiry_when_it_is_turned_on(
        membership: ServiceUnderTest, shop: Shop) -> None:
    configure(shop, pb.DOWNGRADE_POLICY_RECOMPUTE)
    member = join(shop, "b1").member_id
    buy(shop, "b1", 1000 * YUAN)
    assert tier_of(shop, member) == 1 and expiry_of(membership, shop, member) is None
    assert run_job(membership, shop, utcnow() + timedelta(days=4000)) == lifecycle.ExpiryRun(0, 0, 0)
    set_validity(shop, 6, 7)
    expires = expiry_of(membership, shop, member)
    assert expires is not None and timedelta(days=180) <= expires - utcnow() <= timedelta(days=186)
    # The member and the progress bar show when the tier ends.
    shown = shop.api.GetMember(pb.GetMemberRequest(shop_id=shop.shop_id, member_id=member)).tier_expire_time
    progress = shop.api.GetTierProgress(pb.GetTierProgressRequest(shop_id=shop.shop_id, member_id=member))
    assert progress.tier_expire_time == shown and abs((shown.ToDatetime() - expires).total_seconds()) < 1
    set_validity(shop, 0, 0)
    assert expiry_of(membership, shop, member) is None
    assert not shop.api.GetMember(pb.GetMemberRequest(shop_id=shop.shop_id, member_id=member)).HasField(
        "tier_expire_time")


def test_validity_settings_are_checked(shop: Shop) -> None:
    err, _, fields = rpc_error(shop.api.UpdateProgram, pb.UpdateProgramRequest(
        request_id=rid(), shop_id=shop.shop_id, tier_validity_months=-1, downgrade_notice_days=400,
        update_mask=field_mask_pb2.FieldMask(paths=["tier_validity_months", "downgrade_notice_days"])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tier_validity_months" in fields and "downgrade_notice_days" in fields


# ----- what-if --------------------------------------------------------------------------------


def test_simulated_moves_are_what_configure_tiers_and_reevaluate_tiers_then_do(shop: Shop) -> None:
    configure(shop, pb.DOWNGRADE_POLICY_NEVER)
    spends = [0, 500, 1000, 2500, 3000, 9000, 12000, 40000, 1500, 3500]
    ids = []
    for i, spend in enumerate(spends):
        ids.append(join(shop, f"b{i}").member_id)
        if spend:
            buy(shop, f"b{i}", spend * YUAN)
    before = {m: tier_of(shop, m) for m in ids}
    # A 3-tier ladder with other thresholds, recomputed: some move up, some down, the top ones
    # lose their level.
    proposed = [pb.Tier(level=0, code="base", name="Base", discount_bp=10000, points_rate_milli=1000),
                pb.Tier(level=1, code="plus", name="Plus", min_spend_fen=500 * YUAN, discount_bp=9500,
                        points_rate_milli=1500),
                pb.Tier(level=2, code="vip", name="VIP", min_spend_fen=5000 * YUAN, discount_bp=9000,
                        points_rate_milli=2000)]
    what_if = shop.api.SimulateTierRules(pb.SimulateTierRulesRequest(
        shop_id=shop.shop_id, tiers=proposed, qualification_mode=pb.QUALIFICATION_MODE_CUMULATIVE_SPEND,
        downgrade_policy=pb.DOWNGRADE_POLICY_RECOMPUTE, sample_size=2))
    assert {m: tier_of(shop, m) for m in ids} == before  # nothing changed

    shop.api.ConfigureTiers(pb.ConfigureTiersRequest(
        request_id=rid(), shop_id=shop.shop_id, tiers=proposed,
        qualification_mode=pb.QUALIFICATION_MODE_CUMULATIVE_SPEND, downgrade_policy=pb.DOWNGRADE_POLICY_RECOMPUTE))
    shop.api.ReevaluateTiers(pb.ReevaluateTiersRequest(request_id=rid(), shop_id=shop.shop_id))
    after = {m: tier_of(shop, m) for m in ids}
    moved = Counter((before[m], after[m]) for m in ids if before[m] != after[m])
    assert {(mv.from_level, mv.to_level): mv.member_count for mv in what_if.moves} == dict(moved)
    for mv in what_if.moves:
        assert 0 < len(mv.sample_member_ids) <= 2
        assert all((before[m], after[m]) == (mv.from_level, mv.to_level) for m in mv.sample_member_ids)
    assert what_if.unchanged == sum(1 for m in ids if before[m] == after[m])
    assert what_if.upgraded == sum(1 for m in ids if after[m] > before[m])
    assert what_if.downgraded == sum(1 for m in ids if after[m] < before[m])
    assert what_if.upgraded and what_if.downgraded


def test_simulate_checks_the_ladder_like_configure_tiers(shop: Shop) -> None:
    err, _, fields = rpc_error(shop.api.SimulateTierRules, pb.SimulateTierRulesRequest(
        shop_id=shop.shop_id, tiers=[pb.Tier(level=1, code="x", name="X", discount_bp=10000)], sample_size=50))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "sample_size" in fields
    err, _, _ = rpc_error(shop.api.SimulateTierRules, pb.SimulateTierRulesRequest(
        shop_id="shop-of-someone-else", tiers=DEFAULT_TIERS))
    assert err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)


# ----- CompleteOrder fixes --------------------------------------------------------------------


def _ts(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def test_complete_time_is_bounded_like_actions(shop: Shop) -> None:
    join(shop, "b1")
    order = pay(shop, "b1", 100 * YUAN)
    for when in (utcnow() - timedelta(days=150), utcnow() - timedelta(days=32), utcnow() + timedelta(minutes=30)):
        err, _, fields = rpc_error(shop.api.CompleteOrder, pb.CompleteOrderRequest(
            request_id=rid(), shop_id=shop.shop_id, order_id=order, complete_time=_ts(when)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "complete_time" in fields


def test_a_trade_completed_before_the_buyer_joined_does_not_count_for_the_member(shop: Shop) -> None:
    order = pay(shop, "b1", 1500 * YUAN)
    member = join(shop, "b1").member_id
    done = shop.api.CompleteOrder(pb.CompleteOrderRequest(
        request_id=rid(), shop_id=shop.shop_id, order_id=order, complete_time=_ts(utcnow() - timedelta(days=3))))
    assert done.order.status == pb.ORDER_STATUS_COMPLETED and not done.order.counted and not done.order.member_id
    assert not done.tier_changed
    got = shop.api.GetMember(pb.GetMemberRequest(shop_id=shop.shop_id, member_id=member))
    assert (got.cumulative_spend_fen, got.trade_count, got.tier_level) == (0, 0, 0)


def test_a_retry_under_a_new_request_id_answers_what_the_first_completion_did(shop: Shop) -> None:
    join(shop, "b1")
    order = pay(shop, "b1", 1000 * YUAN)
    first = shop.api.CompleteOrder(pb.CompleteOrderRequest(request_id=rid(), shop_id=shop.shop_id, order_id=order))
    assert first.tier_changed and first.tier.code == "silver"
    buy(shop, "b1", 2000 * YUAN)  # now Gold: the retry still tells what the first call did
    retry = shop.api.CompleteOrder(pb.CompleteOrderRequest(request_id=rid(), shop_id=shop.shop_id, order_id=order))
    assert retry.tier_changed and retry.tier.code == "silver" and retry.order == first.order
    plain = buy(shop, "b1", 10 * YUAN)
    again = shop.api.CompleteOrder(pb.CompleteOrderRequest(request_id=rid(), shop_id=shop.shop_id,
                                                           order_id=plain.order.order_id))
    assert not plain.tier_changed and not again.tier_changed and again.tier == plain.tier


def test_a_refund_retried_under_a_new_request_id_answers_what_the_first_did(shop: Shop) -> None:
    configure(shop, pb.DOWNGRADE_POLICY_RECOMPUTE)
    join(shop, "b1")
    order = buy(shop, "b1", 1000 * YUAN).order.order_id  # Silver

    def refund(request_id: str) -> pb.RefundOrderResponse:
        return shop.api.RefundOrder(pb.RefundOrderRequest(request_id=request_id, shop_id=shop.shop_id,
                                                          order_id=order, refund_id="r-1", amount_fen=500 * YUAN))

    first = refund(rid())
    assert first.tier_changed and first.tier.code == "regular"
    buy(shop, "b1", 600 * YUAN)  # Silver again: the retry still tells what the refund did
    retry = refund(rid())
    assert retry.tier_changed and retry.tier.code == "regular" and retry.order == first.order


def test_expiry_notices_page_newest_first(membership: ServiceUnderTest, shop: Shop) -> None:
    configure(shop, pb.DOWNGRADE_POLICY_RECOMPUTE)
    set_validity(shop, 12, 30)
    ids = []
    for buyer in ("b1", "b2", "b3"):
        ids.append(join(shop, buyer).member_id)
        shop.api.SetTier(pb.SetTierRequest(request_id=rid(), shop_id=shop.shop_id, member_id=ids[-1], tier_level=1,
                                           reason="trial", operator="ops"))
    latest = max(expiry_of(membership, shop, m) for m in ids)
    assert run_job(membership, shop, latest - timedelta(days=5)).notices == 3
    seen, token = [], ""
    while True:
        page = shop.api.ListTierExpiryNotices(pb.ListTierExpiryNoticesRequest(
            shop_id=shop.shop_id, page_size=2, page_token=token))
        seen += [n.member_id for n in page.notices]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 3
