"""Issuing coupons to a segment (定向发券 to a 人群) as a job, through gRPC on both backends: the job
streams the segment's members from segments and ends DONE with one coupon per current member
(the job id as the coupons' reference); a retried request answers the same job and issues nothing
more; a job taken up again from the start after a crash issues nothing twice; a member who left
gets nothing; a predefined group is a segment too; bad rewards, unknown segments and jobs are
refused clearly, and another shop's job is not found."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from loyalty.rewards.v1 import rewards_service_pb2 as rp
from loyalty.segments.v1 import rules_pb2
from loyalty.segments.v1 import segments_service_pb2 as spb
from sqlalchemy import update

from services.rewards.tables import issuance_jobs
from tests.conftest import Authed, ServiceUnderTest, Shop, create_shop, failure_of
from tests.support.builders import eventually, rid
from tests.support.coupons import coupon_reward, leave, wallet
from tests.support.errors import Failure
from tests.support.rewards import create_reward, join_member, rewards_api
from tests.support.segments import facts_when, segments_api

DONE, RUNNING, FAILED = rp.ISSUANCE_JOB_STATE_DONE, rp.ISSUANCE_JOB_STATE_RUNNING, rp.ISSUANCE_JOB_STATE_FAILED


@pytest.fixture
def api(rewards: ServiceUnderTest, shop: Shop) -> Authed:
    return rewards_api(rewards, shop)


@pytest.fixture
def segments(suite: dict[str, ServiceUnderTest], shop: Shop) -> Authed:
    return segments_api(suite["segments"], shop)


def refused(call: Any, request: Any) -> Failure:
    with pytest.raises(grpc.RpcError) as raised:
        call(request)
    return failure_of(raised.value)


def tagged_segment(segments: Authed, shop: Shop, member_ids: list[str]) -> str:
    """A segment of the members carrying a new tag given to `member_ids`."""
    tag_id = segments.CreateTag(spb.CreateTagRequest(request_id=rid(), shop_id=shop.shop_id,
                                                     tag=spb.Tag(name="发券对象"))).tag_id
    segments.TagMembers(spb.TagMembersRequest(request_id=rid(), shop_id=shop.shop_id, tag_id=tag_id,
                                              member_ids=member_ids))
    rule = rules_pb2.Rule(condition=rules_pb2.Condition(fact=rules_pb2.FACT_TAG, op=rules_pb2.OPERATOR_HAS_TAG,
                                                        tag_id=tag_id))
    return segments.CreateSegment(spb.CreateSegmentRequest(request_id=rid(), shop_id=shop.shop_id, segment=spb.Segment(
        name="发券人群", rule=rule))).segment_id


def finished(api: Authed, shop: Shop, job_id: str) -> rp.IssuanceJob:
    return eventually(lambda: (lambda j: j if j.state != RUNNING else None)(
        api.GetIssuanceJob(rp.GetIssuanceJobRequest(shop_id=shop.shop_id, job_id=job_id))),
        "the issuance job ended", timeout=30.0)


def issue(api: Authed, shop: Shop, reward_id: str, segment_id: str, request_id: str = "") -> rp.IssuanceJob:
    return api.IssueCouponsToSegment(rp.IssueCouponsToSegmentRequest(
        request_id=request_id or rid(), shop_id=shop.shop_id, reward_id=reward_id, segment_id=segment_id))


def coupons_of(api: Authed, shop: Shop, member_id: str, job_id: str) -> list[rp.Coupon]:
    return [c for c in wallet(api, shop.shop_id, member_id) if c.source_reference == job_id]


def test_a_segment_gets_one_coupon_per_member_once(api: Authed, segments: Authed, shop: Shop,
                                                   rewards: ServiceUnderTest) -> None:
    reward = coupon_reward(api, shop.shop_id, valid_days=30)
    members = [join_member(shop) for _ in range(5)]
    for member_id in members:
        facts_when(segments, shop, member_id, lambda f: f.member_id, "segments heard of the member")
    *staying, departed = members
    segment_id = tagged_segment(segments, shop, members)
    leave(api, shop, departed)
    facts_when(segments, shop, departed, lambda f: f.left, "the leave reached segments")

    request_id = rid()
    started = issue(api, shop, reward.reward_id, segment_id, request_id)
    assert started.job_id.startswith("ij_") and started.state in (RUNNING, DONE)
    assert (started.reward_id, started.segment_id) == (reward.reward_id, segment_id)
    done = finished(api, shop, started.job_id)
    assert (done.state, done.issued, done.failure_reason) == (DONE, len(staying), "")
    assert done.members_seen == done.issued + done.skipped and done.update_time.ToDatetime() >= \
        done.create_time.ToDatetime()
    for member_id in staying:
        (coupon,) = coupons_of(api, shop, member_id, started.job_id)
        assert (coupon.reward_id, coupon.source, coupon.state) == (
            reward.reward_id, rp.COUPON_SOURCE_OPERATOR, rp.COUPON_STATE_UNUSED)
    assert wallet(api, shop.shop_id, departed) == []

    # A retried request answers the same job, as it is now, and issues nothing more.
    again = issue(api, shop, reward.reward_id, segment_id, request_id)
    assert (again.job_id, again.state, again.issued) == (started.job_id, DONE, done.issued)

    # A job taken up again from its start (as after a crash before its progress was kept) issues
    # nothing twice: each member's coupon of the job exists already.
    rewards.running.app.db.transact(lambda uow: uow.conn.execute(update(issuance_jobs).where(
        issuance_jobs.c.shop_id == shop.shop_id, issuance_jobs.c.job_id == started.job_id).values(
        state=RUNNING, members_seen=0, issued=0, skipped=0, after_member_id="", lease_owner=None, lease_until=None)))
    resumed = finished(api, shop, started.job_id)
    assert (resumed.state, resumed.issued, resumed.skipped) == (DONE, 0, resumed.members_seen)
    for member_id in staying:
        assert len(coupons_of(api, shop, member_id, started.job_id)) == 1


def test_a_predefined_group_is_a_segment_too(api: Authed, segments: Authed, shop: Shop) -> None:
    reward = coupon_reward(api, shop.shop_id, valid_days=30)
    member_id = join_member(shop)
    facts_when(segments, shop, member_id, lambda f: f.member_id, "segments heard of the member")
    done = finished(api, shop, issue(api, shop, reward.reward_id, "predefined.new_to_activate").job_id)
    assert (done.state, done.issued, done.members_seen) == (DONE, 1, 1)
    assert len(coupons_of(api, shop, member_id, done.job_id)) == 1
    nobody = finished(api, shop, issue(api, shop, reward.reward_id, "predefined.repurchase_window").job_id)
    assert (nobody.state, nobody.members_seen, nobody.issued) == (DONE, 0, 0)


def test_bad_rewards_unknown_segments_and_jobs_are_refused(api: Authed, segments: Authed, shop: Shop,
                                                           membership: ServiceUnderTest, admin: Authed) -> None:
    reward = coupon_reward(api, shop.shop_id, valid_days=30)
    segment_id = "predefined.repurchase_window"
    gift = create_reward(api, shop.shop_id, kind=rp.REWARD_KIND_GIFT, gift=rp.GiftSpec())
    paused = coupon_reward(api, shop.shop_id, valid_days=30)
    api.UpdateReward(rp.UpdateRewardRequest(request_id=rid(), shop_id=shop.shop_id, reward=rp.Reward(
        reward_id=paused.reward_id, status=rp.REWARD_STATUS_PAUSED), update_mask=FieldMask(paths=["status"])))

    def refusal(reward_id: str, segment_id: str) -> tuple[grpc.StatusCode, str]:
        failure = refused(api.IssueCouponsToSegment, rp.IssueCouponsToSegmentRequest(
            request_id=rid(), shop_id=shop.shop_id, reward_id=reward_id, segment_id=segment_id))
        return failure.code, failure.reason

    assert refusal(gift.reward_id, segment_id) == (grpc.StatusCode.FAILED_PRECONDITION, "COUPON_NOT_A_COUPON_REWARD")
    assert refusal(paused.reward_id, segment_id) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_ACTIVE")
    assert refusal("rw_missing", segment_id) == (grpc.StatusCode.NOT_FOUND, "REWARD_NOT_FOUND")
    assert refusal(reward.reward_id, "sg_missing") == (grpc.StatusCode.NOT_FOUND, "SEGMENT_NOT_FOUND")
    missing = refused(api.IssueCouponsToSegment, rp.IssueCouponsToSegmentRequest(
        request_id=rid(), shop_id=shop.shop_id))
    assert missing.code == grpc.StatusCode.INVALID_ARGUMENT and {"reward_id", "segment_id"} <= set(missing.fields)

    job = finished(api, shop, issue(api, shop, reward.reward_id, segment_id).job_id)
    unknown = refused(api.GetIssuanceJob, rp.GetIssuanceJobRequest(shop_id=shop.shop_id, job_id="ij_missing"))
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.NOT_FOUND, "ISSUANCE_JOB_NOT_FOUND")
    elsewhere = create_shop(membership, admin)
    theirs = Authed(api._stub, elsewhere.key)
    foreign = refused(theirs.GetIssuanceJob, rp.GetIssuanceJobRequest(shop_id=elsewhere.shop_id, job_id=job.job_id))
    assert (foreign.code, foreign.reason) == (grpc.StatusCode.NOT_FOUND, "ISSUANCE_JOB_NOT_FOUND")
