"""Contract tests of growth value (成长值) through the real gRPC API, on both backends: growth from
each source under its caps (actions reported once, to points), refunds taking growth back,
qualification by growth, decay moving members down under the downgrade policy, and milestones
reached once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.membership.v1 import events_pb2
from loyalty.membership.v1 import membership_service_pb2 as pb
from loyalty.points.v1 import points_service_pb2 as pp
from loyalty.points.v1 import points_service_pb2_grpc
from loyalty.rewards.v1 import rewards_service_pb2 as rpb

from services.membership import lifecycle
from tests.conftest import Authed, ServiceUnderTest, Shop, create_shop, failure_of
from tests.integration.test_membership import buy, complete, join, outbox_events, pay, refund, rid, tier_of
from tests.support.builders import eventually
from tests.support.rewards import rewards_api

YUAN = 100
S = pb.GrowthSource


def ts(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at.astimezone(UTC).replace(tzinfo=None))
    return stamp


def growth_of(shop: Shop, member_id: str) -> int:
    return shop.api.GetGrowth(pb.GetGrowthRequest(shop_id=shop.shop_id, member_id=member_id)).growth_value


def ledger_of(shop: Shop, member_id: str) -> list[pb.GrowthEntry]:
    """The whole ledger, oldest first, read two entries a page."""
    entries, token = [], ""
    while True:
        page = shop.api.ListGrowthLedger(pb.ListGrowthLedgerRequest(shop_id=shop.shop_id, member_id=member_id,
                                                                    page_size=2, page_token=token))
        entries += page.entries
        token = page.next_page_token
        if not token:
            return list(reversed(entries))


def adjust(shop: Shop, member_id: str, amount: int, reason: str = "goodwill") -> pb.AdjustGrowthResponse:
    return shop.api.AdjustGrowth(pb.AdjustGrowthRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member_id,
                                                        amount=amount, reason=reason, operator="ops-li"))


def update_rules(shop: Shop, paths: list[str], **rules: Any) -> pb.GrowthRules:
    return shop.api.UpdateGrowthRules(pb.UpdateGrowthRulesRequest(
        request_id=rid(), shop_id=shop.shop_id, growth_rules=pb.GrowthRules(**rules),
        update_mask=FieldMask(paths=paths)))


def points_api(points: ServiceUnderTest, shop: Shop) -> Authed:
    return Authed(points_service_pb2_grpc.PointsServiceStub(points.channel), shop.key)


def record(api: Authed, shop: Shop, member_id: str, action: int, subject: str = "") -> pp.RecordActionResponse:
    """An action reported once, to points (as a storefront does)."""
    request = pp.RecordActionRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member_id, action=action,
                                     subject=subject)
    return eventually(lambda: api.RecordAction(request), "points knows the member")


def growth_shop(membership: ServiceUnderTest, admin: Authed, policy: int = pb.DOWNGRADE_POLICY_RECOMPUTE) -> Shop:
    return create_shop(membership, admin, qualification_mode=pb.QUALIFICATION_MODE_GROWTH, downgrade_policy=policy)


# ----- sources and caps -------------------------------------------------------------------------


def test_each_source_gives_its_growth_under_its_caps_and_an_action_is_reported_once(
        shop: Shop, points: ServiceUnderTest) -> None:
    member = join(shop, "buyer-growth-sources").member_id
    api = points_api(points, shop)
    for _ in range(2):
        record(api, shop, member, pp.ACTION_DAILY_SIGN_IN)  # 5, once a day
        record(api, shop, member, pp.ACTION_COMPLETE_PROFILE)  # 20, once
        record(api, shop, member, pp.ACTION_FOLLOW_SHOP)  # 10, once
    for i in range(4):
        record(api, shop, member, pp.ACTION_REVIEW, subject=f"order-{i}")  # 10, 3 a day
        record(api, shop, member, pp.ACTION_SHARE)  # 2, 3 a day
    record(api, shop, member, pp.ACTION_REVIEW, subject="order-0")  # the same review again: nothing
    for i in range(11):
        record(api, shop, member, pp.ACTION_INVITE_FRIEND, subject=f"friend-{i}")  # 20, 10 a month
    record(api, shop, member, pp.ACTION_BROWSE)  # gives no growth
    actions = 5 + 20 + 10 + 3 * 10 + 3 * 2 + 10 * 20
    eventually(lambda: growth_of(shop, member) == actions, "the actions' growth")

    buy(shop, "buyer-growth-sources", 123 * YUAN + 45)  # 1 growth per whole yuan
    done = adjust(shop, member, 50, reason="complaint handled")
    assert done.entry.amount == 50 and done.entry.balance_after == actions + 123 + 50
    assert growth_of(shop, member) == actions + 123 + 50

    entries = ledger_of(shop, member)
    by_source: dict[int, int] = {}
    for e in entries:
        by_source[e.source] = by_source.get(e.source, 0) + e.amount
    assert by_source == {S.GROWTH_SOURCE_SIGN_IN: 5, S.GROWTH_SOURCE_PROFILE_COMPLETED: 20,
                         S.GROWTH_SOURCE_FOLLOW: 10, S.GROWTH_SOURCE_REVIEW: 30, S.GROWTH_SOURCE_SHARE: 6,
                         S.GROWTH_SOURCE_INVITE: 200, S.GROWTH_SOURCE_SPEND: 123, S.GROWTH_SOURCE_ADJUSTMENT: 50}
    assert entries[-1].reason == "complaint handled" and entries[-1].operator == "ops-li"
    assert [e.balance_after for e in entries] == [sum(x.amount for x in entries[:i + 1]) for i in range(len(entries))]
    # The same ActionRecorded delivered again changes nothing (the inbox applies it once).
    assert growth_of(shop, member) == actions + 123 + 50


def test_growth_rules_are_seeded_with_the_defaults_and_updated_by_mask(shop: Shop, points: ServiceUnderTest) -> None:
    rules = shop.api.GetGrowthRules(pb.GetGrowthRulesRequest(shop_id=shop.shop_id))
    by_source = {r.source: r for r in rules.rules}
    assert by_source[S.GROWTH_SOURCE_SPEND].growth == 1
    assert (by_source[S.GROWTH_SOURCE_SIGN_IN].growth, by_source[S.GROWTH_SOURCE_SIGN_IN].daily_cap) == (5, 1)
    assert rules.decay.kind == pb.GROWTH_DECAY_KIND_NONE and not rules.milestones

    changed = update_rules(shop, ["rules"], rules=[pb.GrowthRule(source=S.GROWTH_SOURCE_SIGN_IN, growth=8,
                                                                 daily_cap=1)])
    by_source = {r.source: r for r in changed.rules}
    assert by_source[S.GROWTH_SOURCE_SIGN_IN].growth == 8 and by_source[S.GROWTH_SOURCE_REVIEW].growth == 10
    member = join(shop, "buyer-growth-rules").member_id
    record(points_api(points, shop), shop, member, pp.ACTION_DAILY_SIGN_IN)
    eventually(lambda: growth_of(shop, member) == 8, "the shop's own sign-in growth")

    with pytest.raises(grpc.RpcError) as caught:
        update_rules(shop, ["rules", "decay"], rules=[pb.GrowthRule(source=S.GROWTH_SOURCE_DECAY, growth=-1)],
                     decay=pb.GrowthDecay(kind=pb.GROWTH_DECAY_KIND_PERCENT_PER_IDLE_MONTH, percent=101))
    failure = failure_of(caught.value)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"growth_rules.rules[0].source", "growth_rules.rules[0].growth",
            "growth_rules.decay.percent"} <= set(failure.fields)


def test_growth_of_another_shops_member_is_not_found(shop: Shop, membership: ServiceUnderTest,
                                                     admin: Authed) -> None:
    member = join(shop, "buyer-growth-other").member_id
    other = create_shop(membership, admin)
    for call in (lambda: other.api.GetGrowth(pb.GetGrowthRequest(shop_id=other.shop_id, member_id=member)),
                 lambda: adjust(other, member, 10)):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        shop.api.AdjustGrowth(pb.AdjustGrowthRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member))
    failure = failure_of(caught.value)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and {"amount", "reason", "operator"} <= set(failure.fields)


# ----- refunds ----------------------------------------------------------------------------------


def test_refunds_take_back_the_growth_their_spend_gave(shop: Shop) -> None:
    buyer = "buyer-growth-refund"
    member = join(shop, buyer).member_id
    order = pay(shop, buyer, 1000 * YUAN)
    complete(shop, order)
    assert growth_of(shop, member) == 1000
    refund(shop, order, 250 * YUAN)
    assert growth_of(shop, member) == 750
    refund(shop, order, 750 * YUAN)
    assert growth_of(shop, member) == 0
    taken = [e for e in ledger_of(shop, member) if e.source == S.GROWTH_SOURCE_REFUND]
    assert [(e.amount, e.reference) for e in taken] == [(-250, order), (-750, order)]

    # Refunded before the trade succeeded: only what was kept counts.
    early = pay(shop, buyer, 100 * YUAN)
    refund(shop, early, 40 * YUAN)
    complete(shop, early)
    assert growth_of(shop, member) == 60


# ----- qualification by growth ------------------------------------------------------------------


def test_cumulative_spend_ladders_show_only_the_spend_thresholds(shop: Shop) -> None:
    program = shop.api.GetProgram(pb.GetProgramRequest(shop_id=shop.shop_id))
    assert [t.min_spend_fen for t in program.tiers] == [0, 100_000, 300_000, 1_000_000, 3_000_000]
    assert all(t.min_trades == 0 and t.min_growth == 0 for t in program.tiers)


def test_in_growth_mode_growth_value_qualifies_and_progress_shows_what_is_missing(
        membership: ServiceUnderTest, admin: Authed) -> None:
    shop = growth_shop(membership, admin)
    program = shop.api.GetProgram(pb.GetProgramRequest(shop_id=shop.shop_id))
    assert [t.min_growth for t in program.tiers] == [0, 1_000, 3_000, 10_000, 30_000]
    assert all(t.min_spend_fen == 0 and t.min_trades == 0 for t in program.tiers)
    buyer = "buyer-growth-mode"
    member = join(shop, buyer).member_id
    done = buy(shop, buyer, 1000 * YUAN)
    assert done.tier_changed and done.tier.level == 1
    progress = shop.api.GetTierProgress(pb.GetTierProgressRequest(shop_id=shop.shop_id, member_id=member))
    assert (progress.qualification_mode, progress.growth_value, progress.growth_missing) == (
        pb.QUALIFICATION_MODE_GROWTH, 1000, 2000)
    assert progress.spend_missing_fen == 0 and progress.trades_missing == 0 and progress.next.min_growth == 3000
    assert progress.progress_permille == 0

    raised = adjust(shop, member, 2000)
    assert raised.tier_changed and raised.tier.level == 2
    re = shop.api.ReevaluateTiers(pb.ReevaluateTiersRequest(request_id=rid(), shop_id=shop.shop_id))
    assert (re.upgraded, re.downgraded) == (0, 0)  # the set-based SQL agrees with the member's tier


# ----- decay ------------------------------------------------------------------------------------


def decay(admin: Authed, shop: Shop, as_of: datetime) -> pb.DecayGrowthResponse:
    """DecayGrowth ahead of time: only the admin key may."""
    return admin.DecayGrowth(pb.DecayGrowthRequest(request_id=rid(), shop_id=shop.shop_id, as_of=ts(as_of)))


def test_idle_decay_takes_a_member_below_their_threshold_down_under_recompute(
        membership: ServiceUnderTest, admin: Authed) -> None:
    shop = growth_shop(membership, admin)
    update_rules(shop, ["decay"], decay=pb.GrowthDecay(kind=pb.GROWTH_DECAY_KIND_PERCENT_PER_IDLE_MONTH, percent=50))
    member = join(shop, "buyer-growth-idle").member_id
    assert adjust(shop, member, 3000).tier.level == 2
    now = datetime.now(UTC)
    assert decay(admin, shop, now + timedelta(days=10)).members == 0  # not idle for a month yet
    done = decay(admin, shop, now + timedelta(days=32))
    assert (done.members, done.growth, done.downgraded) == (1, 1500, 1)
    assert growth_of(shop, member) == 1500 and tier_of(shop, member) == 1
    last = ledger_of(shop, member)[-1]
    assert (last.source, last.amount, last.balance_after) == (S.GROWTH_SOURCE_DECAY, -1500, 1500)
    assert decay(admin, shop, now + timedelta(days=33)).members == 0  # counted once a month
    assert decay(admin, shop, now + timedelta(days=64)).growth == 750

    with pytest.raises(grpc.RpcError) as caught:  # a shop key decays only what is due now
        shop.api.DecayGrowth(pb.DecayGrowthRequest(request_id=rid(), shop_id=shop.shop_id,
                                                   as_of=ts(now + timedelta(days=90))))
    assert failure_of(caught.value).reason == "DECAY_AHEAD_ADMIN_ONLY"


def test_expiring_growth_older_than_the_policy_keeps_the_tier_under_never(
        membership: ServiceUnderTest, admin: Authed) -> None:
    shop = growth_shop(membership, admin, policy=pb.DOWNGRADE_POLICY_NEVER)
    update_rules(shop, ["decay"], decay=pb.GrowthDecay(kind=pb.GROWTH_DECAY_KIND_EXPIRE_AFTER_MONTHS, months=12))
    member = join(shop, "buyer-growth-expire").member_id
    assert adjust(shop, member, 1500).tier.level == 1
    now = datetime.now(UTC)
    assert decay(admin, shop, now + timedelta(days=300)).members == 0
    done = decay(admin, shop, now + timedelta(days=400))
    assert (done.members, done.growth, done.downgraded) == (1, 1500, 0)
    assert growth_of(shop, member) == 0 and tier_of(shop, member) == 1  # NEVER: nobody moves down


@pytest.mark.parametrize(("policy", "after"), [(pb.DOWNGRADE_POLICY_DOWN_ONE_LEVEL, 1),
                                               (pb.DOWNGRADE_POLICY_RECOMPUTE, 0)])
def test_a_downgrade_by_decay_is_announced_first_and_made_at_its_expiry_by_the_policy(
        membership: ServiceUnderTest, admin: Authed, policy: int, after: int) -> None:
    shop = growth_shop(membership, admin, policy=policy)
    shop.api.UpdateProgram(pb.UpdateProgramRequest(request_id=rid(), shop_id=shop.shop_id, downgrade_notice_days=7,
                                                   update_mask=FieldMask(paths=["downgrade_notice_days"])))
    update_rules(shop, ["decay"], decay=pb.GrowthDecay(kind=pb.GROWTH_DECAY_KIND_PERCENT_PER_IDLE_MONTH, percent=90))
    lapsing, saved = join(shop, "buyer-growth-lapsing").member_id, join(shop, "buyer-growth-saved").member_id
    for member in (lapsing, saved):
        assert adjust(shop, member, 3000).tier.level == 2
    done = decay(admin, shop, datetime.now(UTC) + timedelta(days=32))  # 3,000 → 300: tier 0's figures
    assert (done.members, done.downgraded, done.downgrades_announced) == (2, 0, 2)
    assert tier_of(shop, lapsing) == 2 and tier_of(shop, saved) == 2  # announced, not yet made
    notices = shop.api.ListTierExpiryNotices(pb.ListTierExpiryNoticesRequest(shop_id=shop.shop_id)).notices
    assert sorted((n.member_id, n.tier_level, n.expected_level) for n in notices) == sorted(
        [(lapsing, 2, after), (saved, 2, after)])
    announced = outbox_events(membership, shop.shop_id, events_pb2.TierExpiring)
    assert sorted(e.member_id for e in announced) == sorted([lapsing, saved])
    adjust(shop, saved, 2700)  # back to 3,000 before the expiry

    ctx = membership.running.app.servicer.ctx
    lifecycle.expire_all(ctx, datetime.now(UTC).replace(tzinfo=None) + timedelta(days=3))  # not yet due
    assert tier_of(shop, lapsing) == 2
    lifecycle.expire_all(ctx, datetime.now(UTC).replace(tzinfo=None) + timedelta(days=9))
    assert (tier_of(shop, lapsing), tier_of(shop, saved)) == (after, 2)
    newest = shop.api.ListTierHistory(pb.ListTierHistoryRequest(shop_id=shop.shop_id, member_id=lapsing)).changes[0]
    assert (newest.from_level, newest.to_level, newest.reason) == (2, after, pb.TIER_CHANGE_REASON_EXPIRED)
    lifecycle.expire_all(ctx, datetime.now(UTC).replace(tzinfo=None) + timedelta(days=40))  # nothing more expires
    assert (tier_of(shop, lapsing), tier_of(shop, saved)) == (after, 2)


# ----- milestones -------------------------------------------------------------------------------


def test_a_milestone_is_reached_once_per_member(membership: ServiceUnderTest, shop: Shop) -> None:
    update_rules(shop, ["milestones"], milestones=[pb.GrowthMilestone(threshold=500),
                                                   pb.GrowthMilestone(threshold=100, pack_id="pack-100")])
    member = join(shop, "buyer-growth-milestone").member_id
    adjust(shop, member, 150)
    adjust(shop, member, -100)
    adjust(shop, member, 100)  # 100 again: reached before, not again
    adjust(shop, member, 400)
    reached = [(e.member_id, e.threshold, e.pack_id, e.growth_value)
               for e in outbox_events(membership, shop.shop_id, events_pb2.GrowthMilestoneReached)]
    assert reached == [(member, 100, "pack-100", 150), (member, 500, "", 550)]


def test_rewards_grants_the_milestone_pack_once(shop: Shop, rewards: ServiceUnderTest) -> None:
    api = rewards_api(rewards, shop)
    named = api.CreateBenefitPack(rpb.CreateBenefitPackRequest(
        request_id=rid(), shop_id=shop.shop_id,
        pack=rpb.BenefitPack(name="成长礼", trigger=rpb.PACK_TRIGGER_GROWTH_MILESTONE, enabled=True, points=10)))
    update_rules(shop, ["milestones"], milestones=[pb.GrowthMilestone(threshold=100, pack_id=named.pack_id)])
    member = join(shop, "buyer-growth-pack").member_id
    adjust(shop, member, 120)
    adjust(shop, member, -50)
    adjust(shop, member, 50)

    def grants() -> list[rpb.PackGrant]:
        return list(api.ListPackGrants(rpb.ListPackGrantsRequest(shop_id=shop.shop_id, member_id=member)).grants)

    (grant,) = eventually(grants, "the milestone pack")
    assert (grant.pack_id, grant.period, grant.trigger) == (named.pack_id, "milestone-100",
                                                            rpb.PACK_TRIGGER_GROWTH_MILESTONE)
    assert len(grants()) == 1
