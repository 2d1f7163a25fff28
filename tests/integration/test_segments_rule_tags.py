"""Rule-assigned tags (标签规则) through gRPC on both backends, over facts made for real: a tag
created with a rule is carried by the members the rule selects once applied (ApplyTagRule, replayed
by request id, or the apply-tag-rules schedule), and follows the facts when applied again
(TagAssigned / TagRemoved announce who got and lost it); hand tagging and merging refuse it; an
empty rule makes it manual again, keeping its members; a bad rule is refused field by field."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from loyalty.segments.v1 import events_pb2 as sev
from loyalty.segments.v1 import rules_pb2 as rpb
from loyalty.segments.v1 import segments_service_pb2 as spb

from services.kit.timeutil import utcnow
from services.segments import jobs, tags
from tests.conftest import ServiceUnderTest, Shop, failure_of
from tests.integration.test_membership import YUAN, buy, complete, pay, refund, rid
from tests.support.builders import join_member
from tests.support.events import outbox_events
from tests.support.segments import facts_when, segments_api
from tests.support.services import Authed

BOUGHT = rpb.Rule(condition=rpb.Condition(fact=rpb.FACT_TRADES, op=rpb.OPERATOR_GE, values=[1]))


@pytest.fixture
def segments(suite: dict[str, ServiceUnderTest]) -> ServiceUnderTest:
    return suite["segments"]


def rule_tag(api: Authed, shop: Shop, name: str, rule: rpb.Rule = BOUGHT) -> spb.Tag:
    return api.CreateTag(spb.CreateTagRequest(request_id=rid(), shop_id=shop.shop_id,
                                              tag=spb.Tag(name=name, rule=rule)))


def apply(api: Authed, shop: Shop, tag_id: str, request_id: str = "") -> spb.ApplyTagRuleResponse:
    return api.ApplyTagRule(spb.ApplyTagRuleRequest(request_id=request_id or rid(), shop_id=shop.shop_id,
                                                    tag_id=tag_id))


def get_tag(api: Authed, shop: Shop, tag_id: str) -> spb.Tag:
    return api.GetTag(spb.GetTagRequest(shop_id=shop.shop_id, tag_id=tag_id))


def refusal(call: object) -> object:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return failure_of(caught.value)


def events(segments: ServiceUnderTest, shop: Shop, kind: type, tag_id: str) -> list[list[str]]:
    return [sorted(e.member_ids) for e in outbox_events(segments.running.app.db, shop.shop_id, kind)
            if e.tag_id == tag_id]


def test_a_rule_tag_follows_its_rule_each_time_it_is_applied(segments: ServiceUnderTest, shop: Shop) -> None:
    api = segments_api(segments, shop)
    first, second = join_member(shop, "b-first"), join_member(shop, "b-second")
    first_order = pay(shop, "b-first", 80 * YUAN)
    complete(shop, first_order)
    facts_when(api, shop, first, lambda f: f.trades == 1, "the first trade reached segments")
    facts_when(api, shop, second, lambda f: f.member_id, "segments heard of the second member")

    buyers = rule_tag(api, shop, "买过的会员")
    assert buyers.rule == BOUGHT and buyers.member_count == 0 and not buyers.HasField("rule_apply_time")
    request_id = rid()
    applied = apply(api, shop, buyers.tag_id, request_id)
    assert (applied.tagged, applied.untagged, applied.member_count) == (1, 0, 1)
    assert apply(api, shop, buyers.tag_id, request_id) == applied  # replayed: the first answer
    got = get_tag(api, shop, buyers.tag_id)
    assert got.member_count == 1 and got.HasField("rule_apply_time") and got.rule == BOUGHT
    assert [t.tag_id for t in api.ListMemberTags(spb.ListMemberTagsRequest(
        shop_id=shop.shop_id, member_id=first)).tags] == [buyers.tag_id]
    assert events(segments, shop, sev.TagAssigned, buyers.tag_id) == [[first]]

    # The facts change: the second member buys, the first is refunded in full.
    buy(shop, "b-second", 50 * YUAN)
    refund(shop, first_order, 80 * YUAN)
    facts_when(api, shop, second, lambda f: f.trades == 1, "the second trade reached segments")
    facts_when(api, shop, first, lambda f: f.trades == 0, "the full refund reached segments")
    again = apply(api, shop, buyers.tag_id)
    assert (again.tagged, again.untagged, again.member_count) == (1, 1, 1)
    assert events(segments, shop, sev.TagAssigned, buyers.tag_id) == [[first], [second]]
    assert events(segments, shop, sev.TagRemoved, buyers.tag_id) == [[first]]
    assert get_tag(api, shop, buyers.tag_id).rule_apply_time.ToDatetime() > got.rule_apply_time.ToDatetime()
    unchanged = apply(api, shop, buyers.tag_id)
    assert (unchanged.tagged, unchanged.untagged, unchanged.member_count) == (0, 0, 1)


def test_rule_tags_refuse_hand_tagging_and_merging_until_made_manual(segments: ServiceUnderTest,
                                                                      shop: Shop) -> None:
    api = segments_api(segments, shop)
    member = join_member(shop, "b-buyer")
    buy(shop, "b-buyer", 30 * YUAN)
    facts_when(api, shop, member, lambda f: f.trades == 1, "the trade reached segments")
    by_rule = rule_tag(api, shop, "规则标签")
    manual = api.CreateTag(spb.CreateTagRequest(request_id=rid(), shop_id=shop.shop_id, tag=spb.Tag(name="手工标签")))
    assert not manual.HasField("rule")
    apply(api, shop, by_rule.tag_id)

    for call in (
        lambda: api.TagMembers(spb.TagMembersRequest(request_id=rid(), shop_id=shop.shop_id, tag_id=by_rule.tag_id,
                                                     member_ids=[member])),
        lambda: api.UntagMembers(spb.UntagMembersRequest(request_id=rid(), shop_id=shop.shop_id,
                                                         tag_id=by_rule.tag_id, member_ids=[member])),
        lambda: api.MergeTags(spb.MergeTagsRequest(request_id=rid(), shop_id=shop.shop_id,
                                                   source_tag_id=by_rule.tag_id, target_tag_id=manual.tag_id)),
        lambda: api.MergeTags(spb.MergeTagsRequest(request_id=rid(), shop_id=shop.shop_id,
                                                   source_tag_id=manual.tag_id, target_tag_id=by_rule.tag_id))):
        refused = refusal(call)
        assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TAG_IS_RULE_ASSIGNED")
    assert get_tag(api, shop, by_rule.tag_id).member_count == 1 and get_tag(api, shop, manual.tag_id).member_count == 0
    no_rule = refusal(lambda: apply(api, shop, manual.tag_id))
    assert (no_rule.code, no_rule.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TAG_HAS_NO_RULE")
    missing = refusal(lambda: apply(api, shop, "tg_missing"))
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "TAG_NOT_FOUND")

    bad = refusal(lambda: rule_tag(api, shop, "坏规则", rpb.Rule(condition=rpb.Condition(
        fact=rpb.FACT_TRADES, op=rpb.OPERATOR_BETWEEN, values=[3, 1]))))
    assert bad.code is grpc.StatusCode.INVALID_ARGUMENT and set(bad.fields) == {"tag.rule.condition.values"}

    # A new rule waits for its first application; an empty rule makes the tag manual, members kept.
    spender = rpb.Rule(condition=rpb.Condition(fact=rpb.FACT_SPEND_FEN, op=rpb.OPERATOR_GE, values=[100 * YUAN]))
    changed = api.UpdateTag(spb.UpdateTagRequest(request_id=rid(), shop_id=shop.shop_id,
                                                 tag=spb.Tag(tag_id=by_rule.tag_id, rule=spender),
                                                 update_mask=FieldMask(paths=["rule"])))
    assert changed.rule == spender and not changed.HasField("rule_apply_time") and changed.member_count == 1
    manual_again = api.UpdateTag(spb.UpdateTagRequest(request_id=rid(), shop_id=shop.shop_id,
                                                      tag=spb.Tag(tag_id=by_rule.tag_id),
                                                      update_mask=FieldMask(paths=["rule"])))
    assert not manual_again.HasField("rule") and manual_again.member_count == 1
    untagged = api.UntagMembers(spb.UntagMembersRequest(request_id=rid(), shop_id=shop.shop_id,
                                                        tag_id=by_rule.tag_id, member_ids=[member]))
    assert untagged.untagged == 1


def test_the_schedule_applies_the_rules_last_applied_more_than_a_day_ago(segments: ServiceUnderTest,
                                                                         shop: Shop) -> None:
    api = segments_api(segments, shop)
    member = join_member(shop, "b-scheduled")
    buy(shop, "b-scheduled", 20 * YUAN)
    facts_when(api, shop, member, lambda f: f.trades == 1, "the trade reached segments")
    scheduled = rule_tag(api, shop, "定时规则")
    service = segments.running.app.servicer.service
    assert "apply-tag-rules" in [j.name for j in jobs.periodic_jobs(service, batch_jobs=True)]

    done = jobs.commands(lambda settings: service)["apply-tag-rules"](None)
    assert done.startswith("applied ")
    first = get_tag(api, shop, scheduled.tag_id)
    assert first.member_count == 1 and first.HasField("rule_apply_time")
    assert events(segments, shop, sev.TagAssigned, scheduled.tag_id) == [[member]]

    tags.apply_due_rules(service)  # applied less than a day ago: not due
    assert get_tag(api, shop, scheduled.tag_id).rule_apply_time == first.rule_apply_time
    tags.apply_due_rules(service, utcnow() + timedelta(days=1, minutes=1))  # a day later: due again
    assert get_tag(api, shop, scheduled.tag_id).rule_apply_time.ToDatetime() > first.rule_apply_time.ToDatetime()
