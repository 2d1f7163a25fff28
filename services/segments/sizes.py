"""Segment sizes over time: the history of a segment's counts per shop-local day (CountSegment and
the daily snapshot both write the day's row), and the snapshot itself, which counts every saved
and predefined segment of every shop the way CountSegment does (one COUNT query each)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, select, union

from services.kit.errors import NotFound
from services.kit.timeutil import utcnow
from services.segments import groups, segments
from services.segments.commands import SegmentQuery
from services.segments.commands_reports import SizeHistoryQuery
from services.segments.service import SegmentsService
from services.segments.tables import member_facts, segment_sizes
from services.segments.tables import segments as saved_segments

log = logging.getLogger("loyalty.segments.sizes")
SNAPSHOT_INTERVAL = 3600.0  # how often the job looks for segments not counted yet today


@dataclass(frozen=True)
class Size:
    day: str  # YYYY-MM-DD, shop-local
    count: int
    counted_at: datetime


def _today(service: SegmentsService, shop_id: str) -> date:
    """The shop-local date now."""
    return utcnow().replace(tzinfo=UTC).astimezone(service.zones.get(shop_id)).date()


def history(service: SegmentsService, query: SizeHistoryQuery) -> list[Size]:
    """The segment's size on each of the last `days` shop-local days it was counted, newest
    first (NOT_FOUND for an id the shop has no segment by)."""
    first = (_today(service, query.shop_id) - timedelta(days=query.days - 1)).isoformat()
    s = segment_sizes.c

    def read(conn: Connection) -> list[Size]:
        # The segment's query is built only to refuse an id the shop has no segment by.
        segments.members_select(service, conn, query.shop_id, query.segment_id, utcnow())
        rows = conn.execute(select(s.day, s.count, s.counted_at).where(
            s.shop_id == query.shop_id, s.segment_id == query.segment_id, s.day >= first).order_by(s.day.desc()))
        return [Size(r.day, int(r.count), r.counted_at) for r in rows]

    return service.db.read(read)


def _shops(conn: Connection) -> list[str]:
    """Every shop with a member or a saved segment."""
    found = union(select(member_facts.c.shop_id).distinct(), select(saved_segments.c.shop_id).distinct())
    return sorted(conn.execute(found).scalars())


def _segment_ids(conn: Connection, shop_id: str) -> list[str]:
    saved = conn.execute(select(saved_segments.c.segment_id).where(saved_segments.c.shop_id == shop_id)
                         .order_by(saved_segments.c.created_at, saved_segments.c.segment_id)).scalars()
    return [g.segment_id for g in groups.Group] + list(saved)


def _counted_today(conn: Connection, shop_id: str, day: str) -> set[str]:
    s = segment_sizes.c
    return set(conn.execute(select(s.segment_id).where(s.shop_id == shop_id, s.day == day)).scalars())


def snapshot_all(service: SegmentsService, *, missing_only: bool = False) -> tuple[int, int]:
    """Counts every segment of every shop and records today's (shop-local) size, as CountSegment
    does; `missing_only` skips the segments already counted today. Returns (shops, segments)."""
    shops = service.db.read(_shops)
    counted = 0
    for shop_id in shops:
        day = _today(service, shop_id).isoformat()

        def due(conn: Connection, shop_id: str = shop_id, day: str = day) -> list[str]:
            ids = _segment_ids(conn, shop_id)
            done = _counted_today(conn, shop_id, day) if missing_only else set()
            return [i for i in ids if i not in done]

        for segment_id in service.db.read(due):
            try:
                segments.count(service, SegmentQuery(shop_id, segment_id))
            except NotFound:  # deleted since it was listed
                continue
            counted += 1
    return len(shops), counted


def snapshot_job(service: SegmentsService) -> None:
    """The periodic job: today's size of every segment not counted yet today."""
    shops, counted = snapshot_all(service, missing_only=True)
    if counted:
        log.info("segment sizes recorded", extra={"shops": shops, "segments": counted})
