"""The issuance-to-a-segment RPCs of RewardsApi: IssueCouponsToSegment and GetIssuanceJob."""

from __future__ import annotations

import grpc
from loyalty.rewards.v1 import rewards_service_pb2 as pb

from services.kit.idempotency import idempotent_call, require_request_id
from services.kit.timeutil import to_timestamp, utcnow
from services.rewards import audiences, issuance
from services.rewards.service import RewardsService


def job_to_proto(j: issuance.Job) -> pb.IssuanceJob:
    return pb.IssuanceJob(job_id=j.job_id, shop_id=j.shop_id, reward_id=j.reward_id, segment_id=j.segment_id,
                          state=int(j.state), members_seen=j.members_seen, issued=j.issued, skipped=j.skipped,
                          failure_reason=j.failure_reason, create_time=to_timestamp(j.created_at),
                          update_time=to_timestamp(j.updated_at))


class IssuanceApi:
    service: RewardsService

    def IssueCouponsToSegment(self, request: pb.IssueCouponsToSegmentRequest,
                              context: grpc.ServicerContext) -> pb.IssuanceJob:
        """The job as it is now: RUNNING when just started; a retry (same request_id) answers the
        same job with its progress since."""
        cmd = issuance.IssueToSegment(request.shop_id, request.reward_id, request.segment_id)
        require_request_id(request)
        audiences.check_segment(self.service, cmd.shop_id, cmd.segment_id, "segment_id")
        started = idempotent_call(self.service.db, request, "IssueCouponsToSegment", pb.IssuanceJob,
                                  lambda uow: job_to_proto(issuance.start_job(self.service, uow, cmd, utcnow())))
        self.service.wake_issuance()
        return job_to_proto(issuance.get_job(self.service, issuance.JobQuery(cmd.shop_id, started.job_id)))

    def GetIssuanceJob(self, request: pb.GetIssuanceJobRequest, context: grpc.ServicerContext) -> pb.IssuanceJob:
        return job_to_proto(issuance.get_job(self.service, issuance.JobQuery(request.shop_id, request.job_id)))
