"""Crediting packs' points: a grant whose member points does not know yet is tried again later,
each time after longer, and never holds up newer grants behind it (a run takes the oldest due
grants only). On a migrated SQLite database of rewards, with a points stand-in that knows only
some members."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, select

from services.kit import migrations
from services.kit.errors import NotFound
from services.kit.storage import Database
from services.kit.timeutil import utcnow
from services.rewards import packs
from services.rewards.service import RewardsService
from services.rewards.tables import kit, pack_grants


class PointsKnowing:
    """Points' Earn as the rewards job meets it: NOT_FOUND for a member it has not opened."""

    def __init__(self, known: set[str]):
        self.known, self.earned = known, []

    def Earn(self, request: object) -> None:  # named as the gRPC method
        if request.member_id not in self.known:
            raise NotFound("no such account", reason="ACCOUNT_NOT_FOUND")
        self.earned.append(request.member_id)


def _service(tmp_path: Path, points: PointsKnowing) -> RewardsService:
    url = f"sqlite:///{tmp_path / 'rewards.db'}"
    migrations.upgrade("rewards", url)
    return RewardsService(Database(url, service="rewards", kit=kit), points)


def _grant(service: RewardsService, grant_id: str, member_id: str, minutes_ago: int) -> None:
    service.db.transact(lambda uow: uow.conn.execute(insert(pack_grants).values(
        shop_id="s", grant_id=grant_id, pack_id="p", member_id=member_id, trigger=1, period=grant_id, points=10,
        points_outcome="", coupon_ids="[]", granted_at=utcnow() - timedelta(minutes=minutes_ago))))


def test_unknown_members_wait_with_backoff_and_newer_grants_are_credited(tmp_path: Path) -> None:
    points = PointsKnowing({"m-new"})
    service = _service(tmp_path, points)
    _grant(service, "g-old", "m-unknown", minutes_ago=10)
    _grant(service, "g-new", "m-new", minutes_ago=1)
    now = utcnow()
    assert packs.credit_points(service, limit=1, now=now) == 0  # the old one: not known, put back
    assert packs.credit_points(service, limit=1, now=now) == 1  # the newer one is not held up
    assert points.earned == ["m-new"]

    def state(grant_id: str) -> tuple:
        return service.db.read(lambda c: c.execute(select(
            pack_grants.c.points_outcome, pack_grants.c.points_attempts, pack_grants.c.points_retry_at).where(
            pack_grants.c.grant_id == grant_id)).one())

    outcome, attempts, retry_at = state("g-old")
    assert (outcome, attempts) == ("", 1) and retry_at > now
    assert packs.credit_points(service, now=now) == 0  # not due yet: not even asked
    points.known.add("m-unknown")
    later = retry_at + timedelta(seconds=1)
    assert packs.credit_points(service, now=later) == 1
    assert state("g-old")[0] == packs.CREDITED and points.earned == ["m-new", "m-unknown"]


def test_the_wait_doubles_and_stays_under_an_hour(tmp_path: Path) -> None:
    service = _service(tmp_path, PointsKnowing(set()))
    _grant(service, "g", "m", minutes_ago=1)
    now, waits = utcnow(), []
    for _ in range(16):
        packs.credit_points(service, now=now)
        retry_at = service.db.read(lambda c: c.execute(select(pack_grants.c.points_retry_at)).scalar_one())
        waits.append((retry_at - now).total_seconds())
        now = retry_at
    assert waits[:4] == [1, 2, 4, 8] and max(waits) == 3600 and waits == sorted(waits)
