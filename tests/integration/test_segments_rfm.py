"""RFM through gRPC on both backends, over facts made for real: members imported as having joined
40 days ago complete orders dated days back (membership accepts completions up to 31 days late),
segments hears the events; RecomputeRfm scores them by quintiles and the scores, classes, bounds
and counts equal a hand computation; equal values score the same; a rule on the class previews the
right members; a replayed request_id answers the first answer; members who left or never bought
are not scored; another shop sees nothing of it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.segments.v1 import rules_pb2 as rpb
from loyalty.segments.v1 import segments_service_pb2 as spb

from services.kit.config import Settings
from services.segments import jobs
from services.segments.service import SegmentsService
from tests.conftest import ServiceUnderTest, Shop, create_shop, failure_of
from tests.integration.test_membership import YUAN, rid
from tests.support.builders import join_member
from tests.support.segments import facts_of, facts_when, segments_api
from tests.support.services import Authed

# name: (days since the last purchase, trades, spend in yuan). Ten buyers: two per fifth.
BUYERS = {
    "a": (1, 4, 400), "b": (1, 3, 300), "c": (3, 3, 100), "d": (5, 2, 500), "e": (8, 1, 200),
    "f": (10, 1, 600), "g": (12, 2, 50), "h": (20, 3, 800), "i": (25, 1, 700), "j": (30, 1, 30),
}
# By hand. Recency, days worst first: j30 i25 | h20 g12 | f10 e8 | d5 c3 | b1 a1; each bound is the
# fewest days of the first k fifths: 25, 12, 8, 3; a member scores 1 + the bounds they have fewer
# days than. Frequency, trades: 1 1 | 1 1 | 1 2 | 2 3 | 3 4, bounds (most of the first k fifths)
# 1, 1, 2, 3: one trade scores 1 wherever NTILE put it, 2 trades 3, 3 trades 4, 4 trades 5.
# Monetary, yuan: j30 g50 | c100 e200 | b300 a400 | d500 f600 | i700 h800, bounds 50, 200, 400, 600.
EXPECTED = {  # name: (R, F, M, class); a dimension is high at 3 or more
    "a": (5, 5, 3, rpb.RFM_CLASS_IMPORTANT_VALUE),
    "b": (5, 4, 3, rpb.RFM_CLASS_IMPORTANT_VALUE),
    "c": (4, 4, 2, rpb.RFM_CLASS_GENERAL_VALUE),
    "d": (4, 3, 4, rpb.RFM_CLASS_IMPORTANT_VALUE),
    "e": (3, 1, 2, rpb.RFM_CLASS_GENERAL_DEVELOP),
    "f": (3, 1, 4, rpb.RFM_CLASS_IMPORTANT_DEVELOP),
    "g": (2, 3, 1, rpb.RFM_CLASS_GENERAL_KEEP),
    "h": (2, 4, 5, rpb.RFM_CLASS_IMPORTANT_KEEP),
    "i": (1, 1, 5, rpb.RFM_CLASS_IMPORTANT_RETAIN),
    "j": (1, 1, 1, rpb.RFM_CLASS_GENERAL_RETAIN),
}
BOUNDS = ([25, 12, 8, 3], [1, 1, 2, 3], [50 * YUAN, 200 * YUAN, 400 * YUAN, 600 * YUAN])
COUNTS = [3, 1, 1, 1, 1, 1, 1, 1]  # IMPORTANT_VALUE .. GENERAL_RETAIN


@pytest.fixture
def segments(suite: dict[str, ServiceUnderTest]) -> ServiceUnderTest:
    return suite["segments"]


def at(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def complete_on(shop: Shop, buyer: str, fen: int, when: datetime) -> None:
    order_id = "o-" + rid()[:12]
    shop.api.RecordOrder(mpb.RecordOrderRequest(shop_id=shop.shop_id, order_id=order_id, buyer_id=buyer,
                                                amount_fen=fen, paid_time=at(when)))
    shop.api.CompleteOrder(mpb.CompleteOrderRequest(shop_id=shop.shop_id, order_id=order_id,
                                                    complete_time=at(when)))


@pytest.fixture
def buyers(segments: ServiceUnderTest, shop: Shop) -> dict[str, str]:
    """The ten buyers (each order a day before the next, the last one `days` and an hour ago, the
    spend split evenly), one member who bought and left, one who never bought: name -> member id."""
    api = segments_api(segments, shop)
    now = datetime.now(UTC).replace(tzinfo=None)
    names = [*BUYERS, "left", "never"]
    imported = shop.api.ImportMembers(mpb.ImportMembersRequest(request_id=rid(), shop_id=shop.shop_id, members=[
        mpb.ImportedMember(buyer_id=f"b-{n}", join_time=at(now - timedelta(days=40))) for n in names]))
    ids = dict(zip(names, imported.member_ids, strict=True))
    for name, (days, trades, yuan) in BUYERS.items():
        share = yuan * YUAN // trades
        for k in range(trades):
            fen = share if k < trades - 1 else yuan * YUAN - share * (trades - 1)
            complete_on(shop, f"b-{name}", fen, now - timedelta(days=days + trades - 1 - k, hours=1))
    complete_on(shop, "b-left", 5000 * YUAN, now - timedelta(days=2))
    for name, (_, trades, _) in BUYERS.items():
        facts_when(api, shop, ids[name], lambda f, t=trades: f.trades == t, f"{name}'s trades reached segments")
    facts_when(api, shop, ids["left"], lambda f: f.trades == 1, "the leaver's trade reached segments")
    facts_when(api, shop, ids["never"], lambda f: f.member_id, "segments heard of the member who never bought")
    shop.api.LeaveMember(mpb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=ids["left"]))
    facts_when(api, shop, ids["left"], lambda f: f.left, "the leave reached segments")
    return ids


def recompute(api: Authed, shop: Shop, request_id: str | None = None) -> spb.RfmSummary:
    return api.RecomputeRfm(spb.RecomputeRfmRequest(request_id=request_id or rid(), shop_id=shop.shop_id))


def summary_of(api: Authed, shop: Shop) -> spb.RfmSummary:
    return api.GetRfmSummary(spb.GetRfmSummaryRequest(shop_id=shop.shop_id))


def counts(summary: spb.RfmSummary) -> list[int]:
    assert [c.rfm_class for c in summary.classes] == list(range(1, 9))  # all eight, in enum order
    return [c.members for c in summary.classes]


def preview(api: Authed, shop: Shop, rule: rpb.Rule) -> list[str]:
    return list(api.PreviewSegment(spb.PreviewSegmentRequest(shop_id=shop.shop_id, rule=rule,
                                                             sample_size=100)).sample_member_ids)


def cond(fact: int, op: int, *values: int) -> rpb.Rule:
    return rpb.Rule(condition=rpb.Condition(fact=fact, op=op, values=list(values)))


def test_buyers_are_scored_by_quintiles_as_by_hand(segments: ServiceUnderTest, shop: Shop,
                                                   buyers: dict[str, str]) -> None:
    api = segments_api(segments, shop)
    before = summary_of(api, shop)
    assert (before.scored_members, counts(before), before.HasField("compute_time")) == (0, [0] * 8, False)
    assert not facts_of(api, shop, buyers["a"]).HasField("rfm")

    done = recompute(api, shop)
    assert done.shop_id == shop.shop_id and done.scored_members == 10 and done.HasField("compute_time")
    assert counts(done) == COUNTS
    assert (list(done.recency_days_bounds), list(done.frequency_bounds), list(done.monetary_fen_bounds)) == BOUNDS
    assert summary_of(api, shop) == done

    for name, (r, f, m, rfm_class) in EXPECTED.items():
        got = facts_of(api, shop, buyers[name]).rfm
        assert (name, got.recency, got.frequency, got.monetary, got.rfm_class) == (name, r, f, m, rfm_class)
        assert got.compute_time == done.compute_time
    # Equal values, equal scores: a and b bought on the same day; one trade scores 1 for all five
    # one-trade buyers though the fifths split them.
    scored = {n: facts_of(api, shop, buyers[n]).rfm for n in BUYERS}
    assert scored["a"].recency == scored["b"].recency == 5
    assert {scored[n].frequency for n in BUYERS if BUYERS[n][1] == 1} == {1}
    # Who left or never bought has no score.
    for name in ("left", "never"):
        assert not facts_of(api, shop, buyers[name]).HasField("rfm")
    # A scored member who leaves keeps no score (nothing of them is kept); the others keep theirs.
    shop.api.LeaveMember(mpb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=buyers["j"]))
    assert not facts_when(api, shop, buyers["j"], lambda f: f.left, "the leave reached segments").HasField("rfm")
    assert facts_of(api, shop, buyers["i"]).rfm.rfm_class == rpb.RFM_CLASS_IMPORTANT_RETAIN


def test_rules_on_rfm_select_the_scored_members(segments: ServiceUnderTest, shop: Shop,
                                                buyers: dict[str, str]) -> None:
    api = segments_api(segments, shop)
    value = cond(rpb.FACT_RFM_CLASS, rpb.OPERATOR_EQ, rpb.RFM_CLASS_IMPORTANT_VALUE)
    assert preview(api, shop, value) == []  # no recompute yet: nobody has a class
    recompute(api, shop)

    def ids(*names: str) -> list[str]:
        return sorted(buyers[n] for n in names)

    assert preview(api, shop, value) == ids("a", "b", "d")
    important = cond(rpb.FACT_RFM_CLASS, rpb.OPERATOR_IN, rpb.RFM_CLASS_IMPORTANT_KEEP,
                     rpb.RFM_CLASS_IMPORTANT_RETAIN)
    assert preview(api, shop, important) == ids("h", "i")
    # NE holds only for members with a class; NOT also selects the member who never bought.
    assert preview(api, shop, cond(rpb.FACT_RFM_CLASS, rpb.OPERATOR_NE, rpb.RFM_CLASS_IMPORTANT_VALUE)) == ids(
        "c", "e", "f", "g", "h", "i", "j")
    assert preview(api, shop, rpb.Rule(**{"not": value})) == ids("c", "e", "f", "g", "h", "i", "j", "never")
    assert preview(api, shop, cond(rpb.FACT_RFM_MONETARY, rpb.OPERATOR_GE, 5)) == ids("h", "i")
    recent_and_frequent = rpb.Rule(all=rpb.RuleGroup(rules=[
        cond(rpb.FACT_RFM_RECENCY, rpb.OPERATOR_GE, 4), cond(rpb.FACT_RFM_FREQUENCY, rpb.OPERATOR_BETWEEN, 4, 5)]))
    assert preview(api, shop, recent_and_frequent) == ids("a", "b", "c")

    with pytest.raises(grpc.RpcError) as caught:
        preview(api, shop, rpb.Rule(all=rpb.RuleGroup(rules=[
            cond(rpb.FACT_RFM_CLASS, rpb.OPERATOR_GT, 1), cond(rpb.FACT_RFM_RECENCY, rpb.OPERATOR_EQ, 6),
            cond(rpb.FACT_RFM_CLASS, rpb.OPERATOR_IN, 1, 9)])))
    found = failure_of(caught.value)
    assert found.code is grpc.StatusCode.INVALID_ARGUMENT
    assert set(found.fields) == {f"rule.all.rules[{i}].condition.{f}" for i, f in
                                 ((0, "op"), (1, "values"), (2, "values"))}


def test_recomputes_of_one_shop_at_once_each_finish_whole(segments: ServiceUnderTest, shop: Shop,
                                                          buyers: dict[str, str]) -> None:
    """The shop's first recompute and the next ones, six at once: each waits for the one before
    (no duplicate score, no error), and every answer is the whole scoring."""
    api = segments_api(segments, shop)
    for _ in range(2):
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: recompute(api, shop), range(6)))
        assert [(a.scored_members, counts(a)) for a in answers] == [(10, COUNTS)] * 6
    assert (summary_of(api, shop).scored_members, counts(summary_of(api, shop))) == (10, COUNTS)
    assert facts_of(api, shop, buyers["h"]).rfm.rfm_class == rpb.RFM_CLASS_IMPORTANT_KEEP


def test_a_replay_answers_the_first_answer_and_other_shops_see_nothing(
        segments: ServiceUnderTest, membership: ServiceUnderTest, admin: Authed, shop: Shop,
        buyers: dict[str, str]) -> None:
    api = segments_api(segments, shop)
    request_id = rid()
    first = recompute(api, shop, request_id)
    assert recompute(api, shop, request_id) == first  # replayed: not recomputed
    # A new buyer is scored by the next recompute, not by the replay.
    newcomer = join_member(shop, "b-new")
    complete_on(shop, "b-new", 10 * YUAN, datetime.now(UTC).replace(tzinfo=None))
    facts_when(api, shop, newcomer, lambda f: f.trades == 1, "the newcomer's trade reached segments")
    assert recompute(api, shop, request_id).scored_members == 10
    again = recompute(api, shop)
    assert again.scored_members == 11 and again.compute_time.ToDatetime() >= first.compute_time.ToDatetime()
    assert facts_of(api, shop, newcomer).rfm.recency == 5

    other = create_shop(membership, admin)
    other_api = segments_api(segments, other)
    assert summary_of(other_api, other).scored_members == 0
    theirs = recompute(other_api, other)
    assert (theirs.scored_members, counts(theirs), list(theirs.recency_days_bounds)) == (0, [0] * 8, [])
    assert preview(other_api, other, cond(rpb.FACT_RFM_RECENCY, rpb.OPERATOR_GE, 1)) == []
    assert summary_of(api, shop).scored_members == 11  # theirs did not touch ours
    with pytest.raises(grpc.RpcError) as caught:
        api.RecomputeRfm(spb.RecomputeRfmRequest(shop_id=shop.shop_id))
    required = failure_of(caught.value)
    assert (required.code, set(required.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, {"request_id"})


def test_the_daily_job_and_its_command_recompute_every_shop(segments: ServiceUnderTest, settings: Settings,
                                                             shop: Shop, buyers: dict[str, str]) -> None:
    api = segments_api(segments, shop)
    service = SegmentsService(segments.running.app.db)
    job = next(j for j in jobs.periodic_jobs(service, batch_jobs=True) if j.name == "recompute-rfm")
    assert job.interval == jobs.RFM_CHECK_SECONDS
    job.fn()  # the shop never had a recompute: it is due
    first = summary_of(api, shop)
    assert (first.scored_members, counts(first)) == (10, COUNTS)
    job.fn()  # recomputed less than a day ago: not due
    assert summary_of(api, shop).compute_time == first.compute_time
    line = jobs.commands(lambda _: service)["recompute-rfm"](settings)  # the CronJob's: every shop
    assert line.startswith("RFM recomputed for ")
    again = summary_of(api, shop)
    assert again.compute_time.ToDatetime() > first.compute_time.ToDatetime() and counts(again) == COUNTS
