"""The tag RPCs of SegmentsApi (标签): CreateTag, GetTag, UpdateTag, DeleteTag, ListTags,
TagMembers, UntagMembers, MergeTags, ListMemberTags and ApplyTagRule. Requests to commands, handlers in the
kit's idempotent unit of work, tags to protos."""

from __future__ import annotations

import grpc
from loyalty.segments.v1 import segments_service_pb2 as pb

from services.kit import paging
from services.kit.idempotency import idempotent_call, require_request_id
from services.kit.storage import UnitOfWork
from services.kit.timeutil import to_timestamp, utcnow
from services.kit.validation import mask_paths
from services.segments import commands_tags as commands
from services.segments import rules, tags
from services.segments.service import SegmentsService

PAGE_KIND = "tags"


def tag_to_proto(t: tags.Tag) -> pb.Tag:
    return pb.Tag(shop_id=t.shop_id, tag_id=t.tag_id, name=t.name, description=t.description,
                  member_count=t.member_count, create_time=to_timestamp(t.created_at),
                  update_time=to_timestamp(t.updated_at), rule=rules.to_proto(t.rule) if t.rule else None,
                  rule_apply_time=to_timestamp(t.rule_applied_at))


def _update(request: pb.UpdateTagRequest) -> commands.UpdateTag:
    paths = mask_paths(request.update_mask, commands.UPDATE_PATHS)
    changes = {path: getattr(request.tag, path) for path in paths if path != "rule"}
    return commands.UpdateTag(request.shop_id, request.tag.tag_id, changes, "rule" in paths, request.tag.rule)


def _members(request: pb.TagMembersRequest | pb.UntagMembersRequest) -> commands.ChangeMembers:
    return commands.ChangeMembers(request.shop_id, request.tag_id, tuple(request.member_ids), request.segment_id,
                                  utcnow())


class TagsApi:
    service: SegmentsService

    def CreateTag(self, request: pb.CreateTagRequest, context: grpc.ServicerContext) -> pb.Tag:
        cmd = commands.CreateTag(request.shop_id, request.tag.name, request.tag.description, request.tag.rule)
        require_request_id(request)
        return idempotent_call(self.service.db, request, "CreateTag", pb.Tag,
                               lambda uow: tag_to_proto(tags.create_tag(self.service, uow, cmd)))

    def GetTag(self, request: pb.GetTagRequest, context: grpc.ServicerContext) -> pb.Tag:
        return tag_to_proto(tags.get_tag(self.service, commands.TagQuery(request.shop_id, request.tag_id)))

    def UpdateTag(self, request: pb.UpdateTagRequest, context: grpc.ServicerContext) -> pb.Tag:
        require_request_id(request)
        cmd = _update(request)
        return idempotent_call(self.service.db, request, "UpdateTag", pb.Tag,
                               lambda uow: tag_to_proto(tags.update_tag(self.service, uow, cmd)))

    def DeleteTag(self, request: pb.DeleteTagRequest, context: grpc.ServicerContext) -> pb.DeleteTagResponse:
        cmd = commands.DeleteTag(request.shop_id, request.tag_id)
        require_request_id(request)
        return idempotent_call(self.service.db, request, "DeleteTag", pb.DeleteTagResponse,
                               lambda uow: pb.DeleteTagResponse(tag_id=cmd.tag_id,
                                                                untagged=tags.delete_tag(self.service, uow, cmd)))

    def ListTags(self, request: pb.ListTagsRequest, context: grpc.ServicerContext) -> pb.ListTagsResponse:
        limit = paging.page_size(request.page_size)
        after = paging.decode_token(PAGE_KIND, request.shop_id, request.page_token, str, size=2)
        query = commands.ListTags(request.shop_id, limit + 1, (after[0], after[1]) if after else None)
        found = tags.list_tags(self.service, query)
        token = paging.next_page_token(PAGE_KIND, request.shop_id, found, limit, lambda t: [t.name, t.tag_id])
        return pb.ListTagsResponse(tags=[tag_to_proto(t) for t in found[:limit]], next_page_token=token)

    def TagMembers(self, request: pb.TagMembersRequest, context: grpc.ServicerContext) -> pb.TagMembersResponse:
        cmd = _members(request)
        require_request_id(request)

        def work(uow: UnitOfWork) -> pb.TagMembersResponse:
            done = tags.tag_members(self.service, uow, cmd)
            return pb.TagMembersResponse(tagged=done.tagged, unknown_member_ids=done.unknown_member_ids)

        return idempotent_call(self.service.db, request, "TagMembers", pb.TagMembersResponse, work)

    def UntagMembers(self, request: pb.UntagMembersRequest,
                     context: grpc.ServicerContext) -> pb.UntagMembersResponse:
        cmd = _members(request)
        require_request_id(request)
        return idempotent_call(self.service.db, request, "UntagMembers", pb.UntagMembersResponse,
                               lambda uow: pb.UntagMembersResponse(untagged=tags.untag_members(self.service, uow, cmd)))

    def MergeTags(self, request: pb.MergeTagsRequest, context: grpc.ServicerContext) -> pb.Tag:
        cmd = commands.MergeTags(request.shop_id, request.source_tag_id, request.target_tag_id)
        require_request_id(request)
        return idempotent_call(self.service.db, request, "MergeTags", pb.Tag,
                               lambda uow: tag_to_proto(tags.merge_tags(self.service, uow, cmd)))

    def ListMemberTags(self, request: pb.ListMemberTagsRequest,
                       context: grpc.ServicerContext) -> pb.ListMemberTagsResponse:
        found = tags.member_tags_of(self.service, commands.MemberTagsQuery(request.shop_id, request.member_id))
        return pb.ListMemberTagsResponse(tags=[tag_to_proto(t) for t in found])

    def ApplyTagRule(self, request: pb.ApplyTagRuleRequest, context: grpc.ServicerContext) -> pb.ApplyTagRuleResponse:
        cmd = commands.ApplyTagRule(request.shop_id, request.tag_id)
        require_request_id(request)

        def work(uow: UnitOfWork) -> pb.ApplyTagRuleResponse:
            done = tags.apply_rule(self.service, uow, cmd)
            return pb.ApplyTagRuleResponse(tagged=done.tagged, untagged=done.untagged, member_count=done.member_count)

        return idempotent_call(self.service.db, request, "ApplyTagRule", pb.ApplyTagRuleResponse, work)
