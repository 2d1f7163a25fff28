"""What the rewards handlers share: the service's database, its clients of points and segments,
its saga runner, and a short per-process memo of each shop's time zone. The use cases live in the
capability modules (catalogue, members, redeeming, payments, wallet) and the reads in views."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from loyalty.points.v1 import points_service_pb2_grpc as points_grpc
from loyalty.segments.v1 import segments_service_pb2_grpc as segments_grpc
from sqlalchemy import Connection, select

from services.kit.client import ServiceClient
from services.kit.memo import ShopMemo
from services.kit.storage import Database
from services.rewards import domain
from services.rewards.tables import programs

if TYPE_CHECKING:
    from services.kit.saga import Sagas


def read_zone(db: Database, shop_id: str, conn: Connection | None = None) -> ZoneInfo:
    """The shop's time zone as membership announced it (the default zone until it did)."""
    query = select(programs.c.time_zone).where(programs.c.shop_id == shop_id)
    name = conn.execute(query).scalar() if conn is not None else db.read(lambda c: c.execute(query).scalar())
    return domain.zone_of(name)


class RewardsService:
    def __init__(self, db: Database, points: ServiceClient[points_grpc.PointsServiceStub],
                 segments: ServiceClient[segments_grpc.SegmentsServiceStub] | None = None):
        self.db = db
        self.points = points
        # Tag and segment audiences, issuance to a segment (None: a service built without them).
        self.segments = segments
        # Wakes the runner of issuance jobs (set by the wiring): a new job starts at once.
        self.wake_issuance: Callable[[], None] = lambda: None
        self.zones: ShopMemo[ZoneInfo] = ShopMemo(partial(read_zone, db))
        self.sagas: Sagas | None = None  # set by the wiring (server.py), which knows the saga definitions
