"""The gRPC servicer of the segments service, one part per capability (facts, tags, segments, reports):
requests to commands (which check their fields), handlers in the kit's idempotent unit of work,
results to responses. No SQL here."""

from __future__ import annotations

from loyalty.segments.v1 import segments_service_pb2_grpc as pb_grpc

from services.segments.api.facts import FactsApi
from services.segments.api.rebuild import RebuildApi
from services.segments.api.reports import ReportsApi
from services.segments.api.rfm import RfmApi
from services.segments.api.segments import SegmentsRulesApi
from services.segments.api.tags import TagsApi
from services.segments.service import SegmentsService


class SegmentsApi(FactsApi, TagsApi, SegmentsRulesApi, RebuildApi, RfmApi, ReportsApi,
                  pb_grpc.SegmentsServiceServicer):
    def __init__(self, service: SegmentsService):
        self.service = service
