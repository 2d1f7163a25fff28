"""The RFM RPCs of SegmentsApi: RecomputeRfm (idempotent through its request_id) and GetRfmSummary."""

from __future__ import annotations

import grpc
from loyalty.segments.v1 import segments_service_pb2 as pb

from services.kit.idempotency import idempotent_call, require_request_id
from services.kit.timeutil import to_timestamp
from services.segments import commands_rfm, rfm
from services.segments.service import SegmentsService


def summary_to_proto(s: rfm.Summary) -> pb.RfmSummary:
    return pb.RfmSummary(
        shop_id=s.shop_id, scored_members=s.scored_members,
        classes=[pb.RfmClassCount(rfm_class=int(c), members=s.counts.get(c, 0)) for c in rfm.RfmClass],
        recency_days_bounds=list(s.bounds.recency_days), frequency_bounds=list(s.bounds.frequency),
        monetary_fen_bounds=list(s.bounds.monetary_fen), compute_time=to_timestamp(s.computed_at))


class RfmApi:
    service: SegmentsService

    def RecomputeRfm(self, request: pb.RecomputeRfmRequest, context: grpc.ServicerContext) -> pb.RfmSummary:
        require_request_id(request)
        cmd = commands_rfm.RecomputeRfm(request.shop_id)
        return idempotent_call(self.service.db, request, "RecomputeRfm", pb.RfmSummary,
                               lambda uow: summary_to_proto(rfm.recompute(uow, cmd.shop_id)))

    def GetRfmSummary(self, request: pb.GetRfmSummaryRequest, context: grpc.ServicerContext) -> pb.RfmSummary:
        query = commands_rfm.RfmSummaryQuery(request.shop_id)
        return summary_to_proto(self.service.db.read(lambda conn: rfm.summary(conn, query.shop_id)))
