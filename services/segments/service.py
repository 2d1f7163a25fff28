"""What the segments handlers share: the service's database and a short per-process memo of each
shop's time zone. The use cases live in the capability modules (facts, tags, segments)."""

from __future__ import annotations

from functools import partial
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from services.kit.cache import Cache
from services.kit.memo import ShopMemo
from services.kit.storage import Database
from services.membership import client as membership_client
from services.segments.tables import programs

DEFAULT_TIME_ZONE = "Asia/Shanghai"


def read_zone(db: Database, shop_id: str, conn: Connection | None = None) -> ZoneInfo:
    """The shop's time zone as membership announced it (the default zone until it did)."""
    query = select(programs.c.time_zone).where(programs.c.shop_id == shop_id)
    name = conn.execute(query).scalar() if conn is not None else db.read(lambda c: c.execute(query).scalar())
    try:
        return ZoneInfo(name or DEFAULT_TIME_ZONE)
    except (KeyError, ValueError):
        return ZoneInfo(DEFAULT_TIME_ZONE)


class SegmentsService:
    def __init__(self, db: Database, cache: Cache | None = None, membership: membership_client.Client | None = None):
        self.db = db
        self.membership = membership  # RebuildFacts reads membership's history through it
        self.cache = cache  # short-lived answers (IsMember); None: every answer from the database
        self.zones: ShopMemo[ZoneInfo] = ShopMemo(partial(read_zone, db))
