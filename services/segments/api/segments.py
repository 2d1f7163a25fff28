"""The segment RPCs of SegmentsApi: PreviewSegment, Create/Get/Update/Delete/ListSegments,
CountSegment, ListSegmentMembers (streamed), IsMember, Get/UpdateGroupSettings."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import grpc
from loyalty.segments.v1 import segments_service_pb2 as pb

from services.kit import paging
from services.kit.errors import InvalidArgument
from services.kit.idempotency import idempotent_call, require_request_id
from services.kit.timeutil import to_timestamp
from services.kit.validation import mask_paths
from services.segments import commands, groups, rules, segments
from services.segments.service import SegmentsService

LIST_KIND = "segments"


def segment_to_proto(s: segments.Segment) -> pb.Segment:
    return pb.Segment(
        shop_id=s.shop_id, segment_id=s.segment_id, name=s.name, description=s.description,
        rule=rules.to_proto(s.rule), predefined=s.predefined, group=int(s.group) if s.group else 0,
        last_count=s.last_count, count_time=to_timestamp(s.count_time), create_time=to_timestamp(s.created_at),
        update_time=to_timestamp(s.updated_at))


def settings_to_proto(shop_id: str, s: groups.Settings, changed_at: datetime | None) -> pb.GroupSettings:
    return pb.GroupSettings(shop_id=shop_id, update_time=to_timestamp(changed_at),
                            **{name: getattr(s, name) for name in groups.FIELDS})


def _after(request: pb.ListSegmentsRequest) -> tuple[str, str] | None:
    after = paging.decode_token(LIST_KIND, request.shop_id, request.page_token, str, size=2)
    if after is None:
        return None
    try:
        if after[0]:
            datetime.fromisoformat(after[0])
        elif after[1] not in groups.BY_ID:
            raise ValueError("not a predefined group")
    except ValueError as exc:
        raise InvalidArgument([("page_token", "not a token this list returned")]) from exc
    return after[0], after[1]


class SegmentsRulesApi:
    service: SegmentsService

    def PreviewSegment(self, request: pb.PreviewSegmentRequest,
                       context: grpc.ServicerContext) -> pb.PreviewSegmentResponse:
        cmd = commands.PreviewSegment(request.shop_id, request.rule, request.HasField("rule"), request.sample_size)
        found = segments.preview(self.service, cmd)
        return pb.PreviewSegmentResponse(count=found.count, sample_member_ids=found.sample)

    def CreateSegment(self, request: pb.CreateSegmentRequest, context: grpc.ServicerContext) -> pb.Segment:
        require_request_id(request)
        s = request.segment
        cmd = commands.CreateSegment(request.shop_id, s.name, s.description, s.rule, s.HasField("rule"))
        return idempotent_call(self.service.db, request, "CreateSegment", pb.Segment,
                               lambda uow: segment_to_proto(segments.create(self.service, uow, cmd)))

    def GetSegment(self, request: pb.GetSegmentRequest, context: grpc.ServicerContext) -> pb.Segment:
        query = commands.SegmentQuery(request.shop_id, request.segment_id)
        return segment_to_proto(segments.get(self.service, query))

    def UpdateSegment(self, request: pb.UpdateSegmentRequest, context: grpc.ServicerContext) -> pb.Segment:
        require_request_id(request)
        s = request.segment
        paths = tuple(mask_paths(request.update_mask, commands.UPDATE_PATHS))
        cmd = commands.UpdateSegment(request.shop_id, s.segment_id, paths, s.name, s.description, s.rule,
                                     s.HasField("rule"))
        return idempotent_call(self.service.db, request, "UpdateSegment", pb.Segment,
                               lambda uow: segment_to_proto(segments.update_segment(self.service, uow, cmd)))

    def DeleteSegment(self, request: pb.DeleteSegmentRequest,
                      context: grpc.ServicerContext) -> pb.DeleteSegmentResponse:
        require_request_id(request)
        cmd = commands.SegmentQuery(request.shop_id, request.segment_id)
        return idempotent_call(self.service.db, request, "DeleteSegment", pb.DeleteSegmentResponse,
                               lambda uow: pb.DeleteSegmentResponse(
                                   segment_id=segments.delete_segment(self.service, uow, cmd)))

    def ListSegments(self, request: pb.ListSegmentsRequest, context: grpc.ServicerContext) -> pb.ListSegmentsResponse:
        limit = paging.page_size(request.page_size)
        query = commands.ListSegments(request.shop_id, limit, _after(request))
        page = segments.list_segments(self.service, query)
        token = paging.encode_token(LIST_KIND, request.shop_id, list(page.next_after)) if page.next_after else ""
        return pb.ListSegmentsResponse(segments=[segment_to_proto(s) for s in page.segments], next_page_token=token)

    def CountSegment(self, request: pb.CountSegmentRequest, context: grpc.ServicerContext) -> pb.CountSegmentResponse:
        query = commands.SegmentQuery(request.shop_id, request.segment_id)
        total, at = segments.count(self.service, query)
        return pb.CountSegmentResponse(count=total, count_time=to_timestamp(at))

    def ListSegmentMembers(self, request: pb.ListSegmentMembersRequest,
                           context: grpc.ServicerContext) -> Iterator[pb.SegmentMember]:
        query = commands.SegmentQuery(request.shop_id, request.segment_id)
        for member_id in segments.stream_members(self.service, query):
            yield pb.SegmentMember(member_id=member_id)

    def IsMember(self, request: pb.IsMemberRequest, context: grpc.ServicerContext) -> pb.IsMemberResponse:
        query = commands.IsMember(request.shop_id, request.segment_id, request.member_id)
        return pb.IsMemberResponse(is_member=segments.is_member(self.service, query))

    def GetGroupSettings(self, request: pb.GetGroupSettingsRequest,
                         context: grpc.ServicerContext) -> pb.GroupSettings:
        query = commands.ShopQuery(request.shop_id)
        found, changed_at = segments.get_settings(self.service, query)
        return settings_to_proto(request.shop_id, found, changed_at)

    def UpdateGroupSettings(self, request: pb.UpdateGroupSettingsRequest,
                            context: grpc.ServicerContext) -> pb.GroupSettings:
        require_request_id(request)
        paths = mask_paths(request.update_mask, groups.FIELDS)
        cmd = commands.UpdateGroupSettings(request.shop_id, {p: getattr(request.settings, p) for p in paths})

        def work(uow: object) -> pb.GroupSettings:
            changed, at = segments.update_settings(self.service, uow, cmd)
            return settings_to_proto(request.shop_id, changed, at)

        return idempotent_call(self.service.db, request, "UpdateGroupSettings", pb.GroupSettings, work)
