"""Tags (标签) through segments' gRPC API, on both backends, with members made for real (joined
through membership, heard of by segments): create, rename and describe under a mask, names unique
per shop, paged lists; bulk tagging (listed members up to 1,000, unknown and departed members
reported, a re-tag counting nothing, a replayed request answered the same) and untagging; merging;
deleting untags everyone; a member's tags as ListMemberTags and GetMemberFacts show them; a
member who leaves loses their tags; the TagAssigned / TagRemoved events; another shop sees none."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.segments.v1 import events_pb2 as sev
from loyalty.segments.v1 import segments_service_pb2 as spb

from tests.conftest import ServiceUnderTest, Shop, create_shop, failure_of
from tests.support.builders import join_member, rid
from tests.support.events import outbox_events
from tests.support.segments import facts_of, facts_when, segments_api
from tests.support.services import Authed


@pytest.fixture
def segments(suite: dict[str, ServiceUnderTest]) -> ServiceUnderTest:
    return suite["segments"]


def refused(call: object, code: grpc.StatusCode) -> str:
    """Runs the call, which must fail with `code`; returns the error's reason."""
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.code() is code, caught.value.details()
    return failure_of(caught.value).reason


def known_members(api: Authed, shop: Shop, count: int) -> list[str]:
    """`count` new members of the shop, once segments has heard of each."""
    members = [join_member(shop) for _ in range(count)]
    for member_id in members:
        facts_when(api, shop, member_id, lambda f: f.member_id, "segments heard of the member")
    return members


def departed_member(api: Authed, shop: Shop) -> str:
    (member_id,) = known_members(api, shop, 1)
    shop.api.LeaveMember(mpb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member_id))
    facts_when(api, shop, member_id, lambda f: f.left, "the leave reached segments")
    return member_id


def new_tag(api: Authed, shop: Shop, name: str, description: str = "") -> spb.Tag:
    return api.CreateTag(spb.CreateTagRequest(request_id=rid(), shop_id=shop.shop_id,
                                              tag=spb.Tag(name=name, description=description)))


def tag(api: Authed, shop: Shop, tag_id: str, member_ids: list[str], request_id: str = "") -> spb.TagMembersResponse:
    return api.TagMembers(spb.TagMembersRequest(request_id=request_id or rid(), shop_id=shop.shop_id, tag_id=tag_id,
                                                member_ids=member_ids))


def get_tag(api: Authed, shop: Shop, tag_id: str) -> spb.Tag:
    return api.GetTag(spb.GetTagRequest(shop_id=shop.shop_id, tag_id=tag_id))


def member_tag_ids(api: Authed, shop: Shop, member_id: str) -> list[str]:
    return sorted(t.tag_id for t in api.ListMemberTags(
        spb.ListMemberTagsRequest(shop_id=shop.shop_id, member_id=member_id)).tags)


def test_tags_are_created_renamed_listed_and_deleted(segments: ServiceUnderTest, shop: Shop) -> None:
    api = segments_api(segments, shop)
    lace = new_tag(api, shop, "蕾丝爱好者", "常买蕾丝款")
    assert lace.tag_id and lace.name == "蕾丝爱好者" and lace.member_count == 0
    assert lace.HasField("create_time") and get_tag(api, shop, lace.tag_id) == lace
    assert refused(lambda: new_tag(api, shop, "蕾丝爱好者"), grpc.StatusCode.ALREADY_EXISTS) == "TAG_NAME_TAKEN"
    assert refused(lambda: new_tag(api, shop, "x" * 31), grpc.StatusCode.INVALID_ARGUMENT) == "INVALID_TAG_NAME"
    assert refused(lambda: new_tag(api, shop, "ok", "d" * 201),
                   grpc.StatusCode.INVALID_ARGUMENT) == "INVALID_TAG_DESCRIPTION"
    live = new_tag(api, shop, "直播常客")
    new_tag(api, shop, "大码")

    def update(tag_id: str, paths: list[str], **fields: str) -> spb.Tag:
        return api.UpdateTag(spb.UpdateTagRequest(request_id=rid(), shop_id=shop.shop_id,
                                                  tag=spb.Tag(tag_id=tag_id, **fields),
                                                  update_mask=field_mask_pb2.FieldMask(paths=paths)))

    renamed = update(lace.tag_id, ["name"], name="蕾丝控", description="not this")
    assert (renamed.name, renamed.description) == ("蕾丝控", "常买蕾丝款")
    described = update(lace.tag_id, ["description"], description="")
    assert (described.name, described.description) == ("蕾丝控", "")
    assert refused(lambda: update(live.tag_id, ["name"], name="蕾丝控"),
                   grpc.StatusCode.ALREADY_EXISTS) == "TAG_NAME_TAKEN"
    assert refused(lambda: update(live.tag_id, ["member_count"]), grpc.StatusCode.INVALID_ARGUMENT)
    assert refused(lambda: update(live.tag_id, []), grpc.StatusCode.INVALID_ARGUMENT)

    names, token = [], ""
    while True:
        page = api.ListTags(spb.ListTagsRequest(shop_id=shop.shop_id, page_size=2, page_token=token))
        names += [t.name for t in page.tags]
        token = page.next_page_token
        if not token:
            break
    assert sorted(names) == sorted(["蕾丝控", "直播常客", "大码"]) and len(names) == 3

    deleted = api.DeleteTag(spb.DeleteTagRequest(request_id=rid(), shop_id=shop.shop_id, tag_id=live.tag_id))
    assert (deleted.tag_id, deleted.untagged) == (live.tag_id, 0)
    assert refused(lambda: get_tag(api, shop, live.tag_id), grpc.StatusCode.NOT_FOUND) == "TAG_NOT_FOUND"
    assert new_tag(api, shop, "直播常客").tag_id != live.tag_id  # the name is free again


def test_members_are_tagged_in_bulk_and_untagged(segments: ServiceUnderTest, shop: Shop) -> None:
    api = segments_api(segments, shop)
    first, second = known_members(api, shop, 2)
    gone = departed_member(api, shop)
    lace = new_tag(api, shop, "蕾丝爱好者")
    request_id = rid()
    done = tag(api, shop, lace.tag_id, [first, second, gone, "m_never_heard_of", first], request_id)
    assert done.tagged == 2 and list(done.unknown_member_ids) == [gone, "m_never_heard_of"]
    assert tag(api, shop, lace.tag_id, [first, second, gone, "m_never_heard_of", first], request_id) == done
    assert tag(api, shop, lace.tag_id, [first, second]).tagged == 0  # carried already
    assert get_tag(api, shop, lace.tag_id).member_count == 2
    assert member_tag_ids(api, shop, first) == [lace.tag_id] == list(facts_of(api, shop, first).tag_ids)
    assert member_tag_ids(api, shop, gone) == []
    assert refused(lambda: api.ListMemberTags(spb.ListMemberTagsRequest(shop_id=shop.shop_id, member_id="m_nobody")),
                   grpc.StatusCode.NOT_FOUND) == "MEMBER_NOT_FOUND"

    too_many = [f"m_{i:04d}" for i in range(1_001)]
    assert refused(lambda: tag(api, shop, lace.tag_id, too_many), grpc.StatusCode.INVALID_ARGUMENT) == \
        "INVALID_MEMBER_IDS"
    at_most = tag(api, shop, lace.tag_id, too_many[:1_000])
    assert at_most.tagged == 0 and len(at_most.unknown_member_ids) == 1_000
    assert refused(lambda: api.TagMembers(spb.TagMembersRequest(
        request_id=rid(), shop_id=shop.shop_id, tag_id=lace.tag_id, member_ids=[first], segment_id="predefined.x")),
        grpc.StatusCode.INVALID_ARGUMENT) == "INVALID_SEGMENT_ID"
    assert refused(lambda: tag(api, shop, lace.tag_id, []), grpc.StatusCode.INVALID_ARGUMENT) == "MEMBER_IDS_REQUIRED"
    assert refused(lambda: tag(api, shop, "tg_missing", [first]), grpc.StatusCode.NOT_FOUND) == "TAG_NOT_FOUND"

    untagged = api.UntagMembers(spb.UntagMembersRequest(request_id=rid(), shop_id=shop.shop_id, tag_id=lace.tag_id,
                                                        member_ids=[first, gone]))
    assert untagged.untagged == 1
    assert get_tag(api, shop, lace.tag_id).member_count == 1
    assert member_tag_ids(api, shop, first) == [] == list(facts_of(api, shop, first).tag_ids)

    db = segments.running.app.db
    assigned = outbox_events(db, shop.shop_id, sev.TagAssigned)
    assert [(e.tag_id, sorted(e.member_ids)) for e in assigned] == [(lace.tag_id, sorted([first, second]))]
    assert assigned[0].HasField("assigned_at")
    removed = outbox_events(db, shop.shop_id, sev.TagRemoved)
    assert [(e.tag_id, list(e.member_ids)) for e in removed] == [(lace.tag_id, [first])]


def test_merging_moves_members_and_deleting_untags_them(segments: ServiceUnderTest, shop: Shop) -> None:
    api = segments_api(segments, shop)
    both, only_source, only_target = known_members(api, shop, 3)
    source, target = new_tag(api, shop, "蕾丝"), new_tag(api, shop, "蕾丝爱好者")
    tag(api, shop, source.tag_id, [both, only_source])
    tag(api, shop, target.tag_id, [both, only_target])

    def merge(source_id: str, target_id: str) -> spb.Tag:
        return api.MergeTags(spb.MergeTagsRequest(request_id=rid(), shop_id=shop.shop_id, source_tag_id=source_id,
                                                  target_tag_id=target_id))

    assert refused(lambda: merge(source.tag_id, source.tag_id),
                   grpc.StatusCode.INVALID_ARGUMENT) == "INVALID_TARGET_TAG_ID"
    assert refused(lambda: merge(source.tag_id, "tg_missing"), grpc.StatusCode.NOT_FOUND) == "TAG_NOT_FOUND"
    merged = merge(source.tag_id, target.tag_id)
    assert (merged.tag_id, merged.member_count) == (target.tag_id, 3)
    assert refused(lambda: get_tag(api, shop, source.tag_id), grpc.StatusCode.NOT_FOUND) == "TAG_NOT_FOUND"
    for member_id in (both, only_source, only_target):
        assert member_tag_ids(api, shop, member_id) == [target.tag_id]
    assigned = [e for e in outbox_events(segments.running.app.db, shop.shop_id, sev.TagAssigned)
                if e.tag_id == target.tag_id]
    assert [sorted(e.member_ids) for e in assigned] == [sorted([both, only_target]), [only_source]]

    deleted = api.DeleteTag(spb.DeleteTagRequest(request_id=rid(), shop_id=shop.shop_id, tag_id=target.tag_id))
    assert deleted.untagged == 3
    assert all(member_tag_ids(api, shop, m) == [] for m in (both, only_source, only_target))
    removed = [e for e in outbox_events(segments.running.app.db, shop.shop_id, sev.TagRemoved)
               if e.tag_id == target.tag_id]
    assert [sorted(e.member_ids) for e in removed] == [sorted([both, only_source, only_target])]


def test_a_member_who_leaves_loses_their_tags(segments: ServiceUnderTest, shop: Shop) -> None:
    api = segments_api(segments, shop)
    member_id, other = known_members(api, shop, 2)
    lace = new_tag(api, shop, "蕾丝爱好者")
    assert tag(api, shop, lace.tag_id, [member_id, other]).tagged == 2
    shop.api.LeaveMember(mpb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member_id))
    left = facts_when(api, shop, member_id, lambda f: f.left, "the leave reached segments")
    assert list(left.tag_ids) == [] == member_tag_ids(api, shop, member_id)
    assert get_tag(api, shop, lace.tag_id).member_count == 1


def test_another_shop_sees_no_tag_of_this_one(segments: ServiceUnderTest, membership: ServiceUnderTest,
                                              admin: Authed, shop: Shop) -> None:
    api = segments_api(segments, shop)
    (member_id,) = known_members(api, shop, 1)
    lace = new_tag(api, shop, "蕾丝爱好者")
    other = create_shop(membership, admin)
    theirs = segments_api(segments, other)
    assert refused(lambda: get_tag(theirs, other, lace.tag_id), grpc.StatusCode.NOT_FOUND) == "TAG_NOT_FOUND"
    assert refused(lambda: tag(theirs, other, lace.tag_id, [member_id]), grpc.StatusCode.NOT_FOUND) == "TAG_NOT_FOUND"
    assert refused(lambda: theirs.DeleteTag(spb.DeleteTagRequest(request_id=rid(), shop_id=other.shop_id,
                                                                 tag_id=lace.tag_id)),
                   grpc.StatusCode.NOT_FOUND) == "TAG_NOT_FOUND"
    assert list(theirs.ListTags(spb.ListTagsRequest(shop_id=other.shop_id)).tags) == []
    their_tag = new_tag(theirs, other, "蕾丝爱好者")  # the same name is free in another shop
    done = tag(theirs, other, their_tag.tag_id, [member_id])
    assert done.tagged == 0 and list(done.unknown_member_ids) == [member_id]
    with pytest.raises(grpc.RpcError) as caught:  # a shop's key names its own shop only
        api.GetTag(spb.GetTagRequest(shop_id=other.shop_id, tag_id=their_tag.tag_id))
    assert caught.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)


def test_every_member_of_a_segment_is_tagged_at_once(segments: ServiceUnderTest, shop: Shop) -> None:
    api = segments_api(segments, shop)
    fresh = known_members(api, shop, 3)  # joined, no purchase: "new members to activate"
    departed_member(api, shop)
    lace = new_tag(api, shop, "新客")
    whole = "predefined.new_to_activate"
    done = api.TagMembers(spb.TagMembersRequest(request_id=rid(), shop_id=shop.shop_id, tag_id=lace.tag_id,
                                                segment_id=whole))
    assert done.tagged == 3 and list(done.unknown_member_ids) == []
    assert get_tag(api, shop, lace.tag_id).member_count == 3
    assert all(member_tag_ids(api, shop, m) == [lace.tag_id] for m in fresh)
    assigned = outbox_events(segments.running.app.db, shop.shop_id, sev.TagAssigned)
    assert sorted(m for e in assigned for m in e.member_ids) == sorted(fresh)
    untagged = api.UntagMembers(spb.UntagMembersRequest(request_id=rid(), shop_id=shop.shop_id, tag_id=lace.tag_id,
                                                        segment_id=whole))
    assert untagged.untagged == 3 and get_tag(api, shop, lace.tag_id).member_count == 0
