"""RebuildFacts: the shop's facts rebuilt from membership's history (rebuild.py)."""

from __future__ import annotations

import grpc
from loyalty.segments.v1 import segments_service_pb2 as pb

from services.kit.idempotency import require_request_id
from services.kit.validation import check_ids
from services.segments import rebuild
from services.segments.service import SegmentsService


class RebuildApi:
    service: SegmentsService

    def RebuildFacts(self, request: pb.RebuildFactsRequest, context: grpc.ServicerContext) -> pb.RebuildFactsResponse:
        # Idempotent by nature: a retry rebuilds the same facts again, so no answer is stored.
        require_request_id(request)
        check_ids(request.shop_id).raise_if_any()
        done = rebuild.rebuild(self.service.db, self.service.membership, request.shop_id)
        return pb.RebuildFactsResponse(members=done.members, orders=done.orders)
