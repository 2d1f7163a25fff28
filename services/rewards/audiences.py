"""Campaign audiences the segments service serves: members carrying one of some tags, members in a
segment. The two are decided differently, on purpose:

- Tags: rewards keeps who carries which tag from segments' TagAssigned / TagRemoved events
  (`member_tags`, through the inbox, like membership's events in members.py). A checkout then
  reads the buyer's tags in the same database read as the campaigns, with no call on its hot path,
  and a coupon-after-order campaign judges them inside its event's transaction. Tags change only
  by operators' actions, each announced whole by an event, so the projection is exact (a moment
  late) and small (one row per member and tag ever given).
- Segments: a segment is a rule over facts evaluated when asked ("bought within 15 days" changes
  as days pass, with no event), so no projection of events can hold it. Rewards asks segments'
  IsMember (which caches each answer 5 s) for the running segment campaigns of the cart, only
  for a member and only outside any transaction of its own. A call that fails leaves that
  segment undecided: its campaign does not apply (SEGMENTS_NOT_AVAILABLE), the cart is priced
  without it, and the outage is logged; the cart never fails for it.

CreateCampaign / UpdateCampaign check the tags (GetTag) and the segment (GetSegment) exist, before
their transaction: segments' NOT_FOUND passes on with its reason (TAG_NOT_FOUND,
SEGMENT_NOT_FOUND)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime

from loyalty.common.v1 import envelope_pb2
from loyalty.segments.v1 import events_pb2 as segments_events
from loyalty.segments.v1 import segments_service_pb2 as spb
from loyalty.segments.v1 import segments_service_pb2_grpc as segments_grpc
from sqlalchemy import Connection, select, update

from services.kit.bus import Bus
from services.kit.client import ServiceClient
from services.kit.errors import NotFound, ServiceError, Unavailable
from services.kit.events import EventConsumer
from services.kit.storage import Database, UnitOfWork, insert_ignoring
from services.kit.timeutil import from_timestamp, utcnow
from services.rewards.checkout import Audience, AudienceKind, Buyer, Campaign, CampaignStatus
from services.rewards.service import RewardsService
from services.rewards.tables import member_tags

log = logging.getLogger("loyalty.rewards.audiences")
CONSUMER = "rewards"
# How long a checkout waits for segments' answer about one segment (it is cached there).
IS_MEMBER_TIMEOUT = 2.0


def _segments(service: RewardsService) -> ServiceClient[segments_grpc.SegmentsServiceStub]:
    """The client of segments (Unavailable for a service wired without one)."""
    if service.segments is None:
        raise Unavailable("the rewards service was built without a client of segments")
    return service.segments


# ----- checking what an operator names ------------------------------------------------------------------


def check_audience(service: RewardsService, shop_id: str, audience: Audience) -> None:
    """The audience's tags and segment exist in the shop's segments service (NOT_FOUND otherwise,
    with segments' reason and the field named)."""
    if audience.kind is AudienceKind.TAGS:
        for i, tag_id in enumerate(audience.tag_ids):
            _exists(lambda tag_id=tag_id: _segments(service).GetTag(spb.GetTagRequest(shop_id=shop_id, tag_id=tag_id)),
                    f"campaign.audience.tag_ids[{i}]", "tag", tag_id)
    elif audience.kind is AudienceKind.SEGMENT:
        check_segment(service, shop_id, audience.segment_id, "campaign.audience.segment_id")


def check_segment(service: RewardsService, shop_id: str, segment_id: str, field: str) -> None:
    _exists(lambda: _segments(service).GetSegment(spb.GetSegmentRequest(shop_id=shop_id, segment_id=segment_id)),
            field, "segment", segment_id)


def _exists(ask: Callable[[], object], field: str, what: str, wanted: str) -> None:
    try:
        ask()
    except NotFound as exc:
        raise NotFound(f"{field}: the shop has no {what} {wanted!r} (segments service)", reason=exc.reason,
                       metadata={**exc.metadata, "field": field, f"{what}_id": wanted}) from exc


# ----- deciding for a buyer ----------------------------------------------------------------------------


def tags_of(conn: Connection, shop_id: str, member_id: str) -> frozenset[str]:
    """The tags the member carries, as segments' events said."""
    return frozenset(conn.execute(select(member_tags.c.tag_id).where(
        member_tags.c.shop_id == shop_id, member_tags.c.member_id == member_id, member_tags.c.tagged)).scalars())


def wants_tags(found: Iterable[Campaign]) -> bool:
    return any(c.audience.kind is AudienceKind.TAGS for c in found)


def with_segments(service: RewardsService, buyer: Buyer, shop_id: str, found: Iterable[Campaign],
                  now: datetime) -> Buyer:
    """The buyer with the segments of the running segment campaigns they are in, and those
    segments could not answer for (each logged)."""
    wanted = sorted({c.audience.segment_id for c in found
                     if c.audience.kind is AudienceKind.SEGMENT and c.status(now) is CampaignStatus.RUNNING})
    if not buyer.member_id or not wanted:
        return buyer
    inside, undecided = set(), set()
    for segment_id in wanted:
        try:
            answer = _segments(service).call("IsMember", spb.IsMemberRequest(
                shop_id=shop_id, segment_id=segment_id, member_id=buyer.member_id), timeout=IS_MEMBER_TIMEOUT)
        except NotFound:  # the segment was deleted: its campaign reaches nobody
            continue
        except ServiceError as exc:  # UNAVAILABLE after its retries, a deadline, …
            log.warning("segment audience undecided: segments did not answer IsMember (%s)", exc,
                        extra={"shop_id": shop_id, "segment_id": segment_id})
            undecided.add(segment_id)
            continue
        if answer.is_member:
            inside.add(segment_id)
    return replace(buyer, segment_ids=frozenset(inside), undecided_segment_ids=frozenset(undecided))


# ----- segments' events --------------------------------------------------------------------------------


def tags_changed(uow: UnitOfWork, shop_id: str, tag_id: str, member_ids: Iterable[str], tagged: bool,
                 at: datetime) -> None:
    """The members carry the tag (or no longer do) as of `at`: rows older than the event change,
    missing rows are added, newer rows (a later event applied first) stay."""
    ids = list(dict.fromkeys(member_ids))
    if not ids:
        return
    uow.conn.execute(update(member_tags).where(
        member_tags.c.shop_id == shop_id, member_tags.c.tag_id == tag_id, member_tags.c.member_id.in_(ids),
        member_tags.c.changed_at <= at).values(tagged=tagged, changed_at=at))
    uow.conn.execute(insert_ignoring(uow.conn, member_tags, ["shop_id", "member_id", "tag_id"]).values(
        [{"shop_id": shop_id, "member_id": m, "tag_id": tag_id, "tagged": tagged, "changed_at": at} for m in ids]))


def segments_consumer(db: Database, bus: Bus, *, workers: int = 4, per_transaction: int = 50) -> EventConsumer:
    """Rewards' consumer of segments' stream: who carries which tag."""

    def on_assigned(uow: UnitOfWork, e: segments_events.TagAssigned, _: envelope_pb2.EventEnvelope) -> None:
        tags_changed(uow, e.shop_id, e.tag_id, e.member_ids, True, from_timestamp(e.assigned_at, utcnow()))

    def on_removed(uow: UnitOfWork, e: segments_events.TagRemoved, _: envelope_pb2.EventEnvelope) -> None:
        tags_changed(uow, e.shop_id, e.tag_id, e.member_ids, False, from_timestamp(e.removed_at, utcnow()))

    return EventConsumer(db, bus, consumer=CONSUMER, producer="segments", handlers={
        segments_events.TagAssigned: on_assigned,
        segments_events.TagRemoved: on_removed,
    }, workers=workers, per_transaction=per_transaction)
