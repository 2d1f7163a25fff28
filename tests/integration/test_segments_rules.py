"""Rule segments through gRPC on both backends, over facts made for real (members join and complete
orders in membership; segments hears the events): previews, the saved segments' life
(create, get, update, list, delete, replayed request ids), counts, the streamed member list,
IsMember, field-level errors, and another shop's segments not found."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.segments.v1 import rules_pb2 as rpb
from loyalty.segments.v1 import segments_service_pb2 as spb

from tests.conftest import ServiceUnderTest, Shop, create_shop, failure_of
from tests.integration.test_membership import YUAN, buy, rid
from tests.support.builders import join_member
from tests.support.segments import facts_when, segments_api
from tests.support.services import Authed


@pytest.fixture
def segments(suite: dict[str, ServiceUnderTest]) -> ServiceUnderTest:
    return suite["segments"]


def cond(fact: int, op: int, *values: int, window_days: int = 0, tag_id: str = "") -> rpb.Rule:
    return rpb.Rule(condition=rpb.Condition(fact=fact, op=op, values=list(values), window_days=window_days,
                                            tag_id=tag_id))


def all_of(*rules: rpb.Rule) -> rpb.Rule:
    return rpb.Rule(all=rpb.RuleGroup(rules=list(rules)))


def not_(rule: rpb.Rule) -> rpb.Rule:
    return rpb.Rule(**{"not": rule})


BOUGHT = cond(rpb.FACT_TRADES, rpb.OPERATOR_GE, 1)


def preview(api: Authed, shop: Shop, rule: rpb.Rule, sample_size: int = 0) -> spb.PreviewSegmentResponse:
    return api.PreviewSegment(spb.PreviewSegmentRequest(shop_id=shop.shop_id, rule=rule, sample_size=sample_size))


def failure(call: object, *args: object) -> object:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args)
    return failure_of(caught.value)


@pytest.fixture
def people(segments: ServiceUnderTest, shop: Shop) -> dict[str, str]:
    """Three members: one who bought twice (80 and 120 yuan, born in July), one who bought once
    (50 yuan), one who never bought; their facts known to segments."""
    api = segments_api(segments, shop)
    twice = shop.api.JoinMember(mpb.JoinMemberRequest(
        request_id=rid(), shop_id=shop.shop_id, buyer_id="b-twice", join_channel=mpb.JOIN_CHANNEL_LIVE_STREAM,
        profile=mpb.Profile(birthday={"year": 1990, "month": 7, "day": 3}),
        consent_fields=[mpb.PROFILE_FIELD_BIRTHDAY])).member_id
    once = join_member(shop, "b-once")
    never = join_member(shop, "b-never")
    buy(shop, "b-twice", 80 * YUAN)
    buy(shop, "b-twice", 120 * YUAN)
    buy(shop, "b-once", 50 * YUAN)
    facts_when(api, shop, twice, lambda f: f.trades == 2, "both trades reached segments")
    facts_when(api, shop, once, lambda f: f.trades == 1, "the trade reached segments")
    facts_when(api, shop, never, lambda f: f.member_id, "segments heard of the member")
    return {"twice": twice, "once": once, "never": never}


def test_a_preview_counts_and_samples_what_a_rule_selects_now(segments: ServiceUnderTest, shop: Shop,
                                                               people: dict[str, str]) -> None:
    api = segments_api(segments, shop)
    bought = preview(api, shop, BOUGHT)
    assert bought.count == 2 and list(bought.sample_member_ids) == sorted([people["twice"], people["once"]])
    assert len(preview(api, shop, BOUGHT, sample_size=1).sample_member_ids) == 1
    assert list(preview(api, shop, not_(BOUGHT)).sample_member_ids) == [people["never"]]
    recent = cond(rpb.FACT_LAST_PURCHASE, rpb.OPERATOR_WITHIN_DAYS, 1)
    assert preview(api, shop, recent).count == 2
    # A member who never purchased has not purchased within any window.
    idle = preview(api, shop, cond(rpb.FACT_LAST_PURCHASE, rpb.OPERATOR_NOT_WITHIN_DAYS, 1))
    assert list(idle.sample_member_ids) == [people["never"]]
    in_window = preview(api, shop, cond(rpb.FACT_TRADES, rpb.OPERATOR_GE, 2, window_days=30))
    assert list(in_window.sample_member_ids) == [people["twice"]]
    spend = preview(api, shop, cond(rpb.FACT_SPEND_FEN, rpb.OPERATOR_BETWEEN, 50 * YUAN, 100 * YUAN, window_days=7))
    assert list(spend.sample_member_ids) == [people["once"]]
    average = preview(api, shop, cond(rpb.FACT_AVERAGE_ORDER_FEN, rpb.OPERATOR_EQ, 100 * YUAN))
    assert list(average.sample_member_ids) == [people["twice"]]
    window_average = cond(rpb.FACT_AVERAGE_ORDER_FEN, rpb.OPERATOR_GE, 100 * YUAN, window_days=30)
    assert list(preview(api, shop, window_average).sample_member_ids) == [people["twice"]]
    # Without a trade there is no average: NOT selects exactly the members the rule does not.
    assert list(preview(api, shop, not_(window_average)).sample_member_ids) == sorted(
        [people["once"], people["never"]])
    # Without a birth month no comparison on it holds, not even "not July".
    assert list(preview(api, shop, cond(rpb.FACT_BIRTH_MONTH, rpb.OPERATOR_EQ, 7)).sample_member_ids) == [
        people["twice"]]
    assert preview(api, shop, cond(rpb.FACT_BIRTH_MONTH, rpb.OPERATOR_NE, 7)).count == 0
    three = all_of(cond(rpb.FACT_JOIN_CHANNEL, rpb.OPERATOR_IN, mpb.JOIN_CHANNEL_HOME_PAGE_MODULE),
                   recent, cond(rpb.FACT_SPEND_FEN, rpb.OPERATOR_LT, 100 * YUAN))
    assert list(preview(api, shop, three).sample_member_ids) == [people["once"]]
    # A tag that does not exist selects nobody.
    assert preview(api, shop, cond(rpb.FACT_TAG, rpb.OPERATOR_HAS_TAG, tag_id="no-such-tag")).count == 0


def test_a_bad_rule_is_refused_field_by_field(segments: ServiceUnderTest, shop: Shop) -> None:
    api = segments_api(segments, shop)
    bad = all_of(BOUGHT, cond(rpb.FACT_TRADES, rpb.OPERATOR_BETWEEN, 5, 1),
                 cond(rpb.FACT_TIER_LEVEL, rpb.OPERATOR_WITHIN_DAYS, 3))
    found = failure(api.CreateSegment, spb.CreateSegmentRequest(
        request_id=rid(), shop_id=shop.shop_id, segment=spb.Segment(name="", rule=bad)))
    assert found.code is grpc.StatusCode.INVALID_ARGUMENT
    assert set(found.fields) == {"segment.name", "segment.rule.all.rules[1].condition.values",
                                 "segment.rule.all.rules[2].condition.op"}
    found = failure(api.PreviewSegment, spb.PreviewSegmentRequest(shop_id=shop.shop_id, rule=BOUGHT,
                                                                  sample_size=101))
    assert (found.code, set(found.fields)) == (grpc.StatusCode.INVALID_ARGUMENT, {"sample_size"})
    found = failure(api.PreviewSegment, spb.PreviewSegmentRequest(shop_id=shop.shop_id))
    assert (found.reason, set(found.fields)) == ("RULE_REQUIRED", {"rule"})


def test_a_saved_segment_lives_and_dies(segments: ServiceUnderTest, membership: ServiceUnderTest, admin: Authed,
                                        shop: Shop, people: dict[str, str]) -> None:
    api = segments_api(segments, shop)
    create = spb.CreateSegmentRequest(request_id=rid(), shop_id=shop.shop_id, segment=spb.Segment(
        name="买过的会员", description="至少成交一笔", rule=BOUGHT))
    made = api.CreateSegment(create)
    assert api.CreateSegment(create) == made  # a replay answers the first answer
    assert made.segment_id and not made.predefined and made.rule == BOUGHT and made.HasField("create_time")
    taken = failure(api.CreateSegment, spb.CreateSegmentRequest(request_id=rid(), shop_id=shop.shop_id,
                                                                segment=spb.Segment(name="买过的会员", rule=BOUGHT)))
    assert (taken.code, taken.reason) == (grpc.StatusCode.ALREADY_EXISTS, "SEGMENT_NAME_TAKEN")
    got = api.GetSegment(spb.GetSegmentRequest(shop_id=shop.shop_id, segment_id=made.segment_id))
    assert (got.name, got.description, got.rule, got.last_count) == (made.name, made.description, BOUGHT, 0)

    twice = cond(rpb.FACT_TRADES, rpb.OPERATOR_GE, 2)
    changed = api.UpdateSegment(spb.UpdateSegmentRequest(
        request_id=rid(), shop_id=shop.shop_id, segment=spb.Segment(segment_id=made.segment_id, rule=twice,
                                                                    name="ignored"),
        update_mask=FieldMask(paths=["rule"])))
    assert (changed.name, changed.rule) == ("买过的会员", twice)

    counted = api.CountSegment(spb.CountSegmentRequest(shop_id=shop.shop_id, segment_id=made.segment_id))
    assert counted.count == 1
    got = api.GetSegment(spb.GetSegmentRequest(shop_id=shop.shop_id, segment_id=made.segment_id))
    assert (got.last_count, got.count_time) == (1, counted.count_time)

    listed = api.ListSegments(spb.ListSegmentsRequest(shop_id=shop.shop_id))
    assert [s.segment_id for s in listed.segments if not s.predefined] == [made.segment_id]
    assert listed.segments[-1].last_count == 1

    other = create_shop(membership, admin)
    other_api = segments_api(segments, other)
    hidden = failure(other_api.GetSegment, spb.GetSegmentRequest(shop_id=other.shop_id, segment_id=made.segment_id))
    assert (hidden.code, hidden.reason) == (grpc.StatusCode.NOT_FOUND, "SEGMENT_NOT_FOUND")
    hidden = failure(other_api.DeleteSegment, spb.DeleteSegmentRequest(request_id=rid(), shop_id=other.shop_id,
                                                                       segment_id=made.segment_id))
    assert hidden.code is grpc.StatusCode.NOT_FOUND

    delete = spb.DeleteSegmentRequest(request_id=rid(), shop_id=shop.shop_id, segment_id=made.segment_id)
    assert api.DeleteSegment(delete).segment_id == made.segment_id
    assert api.DeleteSegment(delete).segment_id == made.segment_id  # replayed
    gone = failure(api.GetSegment, spb.GetSegmentRequest(shop_id=shop.shop_id, segment_id=made.segment_id))
    assert gone.reason == "SEGMENT_NOT_FOUND"


def test_members_stream_in_order_and_membership_is_answered(segments: ServiceUnderTest, shop: Shop,
                                                            people: dict[str, str]) -> None:
    api = segments_api(segments, shop)
    everyone = api.CreateSegment(spb.CreateSegmentRequest(request_id=rid(), shop_id=shop.shop_id, segment=spb.Segment(
        name="全部会员", rule=cond(rpb.FACT_TIER_LEVEL, rpb.OPERATOR_GE, 0))))
    streamed = [m.member_id for m in api.ListSegmentMembers(spb.ListSegmentMembersRequest(
        shop_id=shop.shop_id, segment_id=everyone.segment_id))]
    assert streamed == sorted(people.values())
    buyers = api.CreateSegment(spb.CreateSegmentRequest(request_id=rid(), shop_id=shop.shop_id, segment=spb.Segment(
        name="买过的会员", rule=BOUGHT)))

    def is_member(member_id: str) -> bool:
        return api.IsMember(spb.IsMemberRequest(shop_id=shop.shop_id, segment_id=buyers.segment_id,
                                                member_id=member_id)).is_member

    assert is_member(people["once"]) and not is_member(people["never"]) and not is_member("m-unknown")
    missing = failure(api.ListSegmentMembers(spb.ListSegmentMembersRequest(
        shop_id=shop.shop_id, segment_id="sg_missing")).__iter__().__next__)
    assert missing.reason == "SEGMENT_NOT_FOUND"

    # A member who left is never selected.
    shop.api.LeaveMember(mpb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=people["once"]))
    facts_when(segments_api(segments, shop), shop, people["once"], lambda f: f.left, "the leave reached segments")
    streamed = [m.member_id for m in api.ListSegmentMembers(spb.ListSegmentMembersRequest(
        shop_id=shop.shop_id, segment_id=buyers.segment_id))]
    assert streamed == [people["twice"]]
