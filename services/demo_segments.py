"""The demo shop's tags (标签): "蕾丝爱好者" on a handful of chosen buyers and "直播常客" on the
members who joined from a live stream, created through the public API once the demo members
joined (segments hears of them asynchronously, so the seeding waits, briefly, until it has)."""

from __future__ import annotations

import logging
import time
import uuid

import grpc
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.membership.v1 import membership_service_pb2_grpc as mgrpc
from loyalty.segments.v1 import segments_service_pb2 as spb
from loyalty.segments.v1 import segments_service_pb2_grpc as sgrpc

log = logging.getLogger("loyalty.demo")
LACE_BUYERS = ("demo-buyer-003", "demo-buyer-007", "demo-buyer-012", "demo-buyer-018", "demo-buyer-020",
               "demo-buyer-025", "demo-buyer-031", "demo-buyer-036")
WAIT_SECONDS = 30.0  # how long segments may take to hear of the demo members before tagging what it knows


def demo_tags() -> dict[str, spb.Tag]:
    return {
        "lace": spb.Tag(name="蕾丝爱好者", description="常买蕾丝款的会员"),
        "live": spb.Tag(name="直播常客", description="从直播间入会、常看直播的会员"),
    }


def seed(segments_port: int, shop_id: str, auth: list[tuple[str, str]], *, membership_port: int) -> None:
    """The demo tags and their members, once (fixed request_ids; skipped when the tags exist), and
    the shop's first RFM scores (the daily job keeps them after)."""
    with grpc.insecure_channel(f"127.0.0.1:{segments_port}") as channel, \
            grpc.insecure_channel(f"127.0.0.1:{membership_port}") as members_channel:
        stub = sgrpc.SegmentsServiceStub(channel)
        existing = {t.name for t in stub.ListTags(spb.ListTagsRequest(shop_id=shop_id, page_size=100),
                                                  metadata=auth).tags}
        if not all(t.name in existing for t in demo_tags().values()):
            _tag(stub, mgrpc.MembershipServiceStub(members_channel), shop_id, auth)
        if not stub.GetRfmSummary(spb.GetRfmSummaryRequest(shop_id=shop_id), metadata=auth).scored_members:
            request = spb.RecomputeRfmRequest(request_id=f"demo-rfm-{uuid.uuid4().hex[:12]}", shop_id=shop_id)
            scored = stub.RecomputeRfm(request, metadata=auth).scored_members
            log.info("demo shop: RFM scores of %d buyers", scored)


def _tag(stub: sgrpc.SegmentsServiceStub, members: mgrpc.MembershipServiceStub, shop_id: str,
         auth: list[tuple[str, str]]) -> None:
    chosen = _chosen_members(members, shop_id, auth)
    _wait_until_known(stub, shop_id, auth, sorted({m for ids in chosen.values() for m in ids}))
    for handle, tag in demo_tags().items():
        tag_id = stub.CreateTag(spb.CreateTagRequest(request_id=f"demo-tag-{handle}", shop_id=shop_id, tag=tag),
                                metadata=auth).tag_id
        if chosen[handle]:
            stub.TagMembers(spb.TagMembersRequest(request_id=f"demo-tagging-{handle}", shop_id=shop_id,
                                                  tag_id=tag_id, member_ids=chosen[handle]), metadata=auth)


def _chosen_members(stub: mgrpc.MembershipServiceStub, shop_id: str,
                    auth: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The member ids of each demo tag, in member id order, from membership's list of the shop."""
    members: list[mpb.Member] = []
    token = ""
    while True:
        page = stub.ListMembers(mpb.ListMembersRequest(shop_id=shop_id, page_size=100, page_token=token,
                                                       status=mpb.MEMBER_STATUS_ACTIVE), metadata=auth)
        members += page.members
        token = page.next_page_token
        if not token:
            break
    return {
        "lace": sorted(m.member_id for m in members if m.buyer_id in LACE_BUYERS),
        "live": sorted(m.member_id for m in members if m.join_channel == mpb.JOIN_CHANNEL_LIVE_STREAM),
    }


def _wait_until_known(stub: sgrpc.SegmentsServiceStub, shop_id: str, auth: list[tuple[str, str]],
                      member_ids: list[str]) -> None:
    """Until segments answers GetMemberFacts for every member, at most WAIT_SECONDS (those it
    does not know by then are left untagged: TagMembers reports them)."""
    deadline = time.monotonic() + WAIT_SECONDS
    waiting = list(member_ids)
    while waiting and time.monotonic() < deadline:
        try:
            stub.GetMemberFacts(spb.GetMemberFactsRequest(shop_id=shop_id, member_id=waiting[0]), metadata=auth)
            waiting.pop(0)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            time.sleep(0.1)
    if waiting:
        log.warning("segments has not heard of %d demo members yet; they stay untagged", len(waiting))
