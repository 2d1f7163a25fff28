"""Scheduled work: releasing holds whose TTL passed (always, about every second), and — in the
embedded default, or where LOYALTY_POINTS_JOBS=1 — expiring due points and settling yesterday's
daily pools. In production the last two are commands a CronJob runs:
`python -m services.points expire` and `python -m services.points settle-pools`."""

from __future__ import annotations

import logging
from datetime import datetime

from services.kit.jobs import PeriodicJob
from services.kit.storage import UnitOfWork
from services.kit.timeutil import utcnow
from services.points import commands, expiry, pool, spending
from services.points.service import PointsService

log = logging.getLogger("loyalty.points.jobs")


def expire_all(service: PointsService, as_of: datetime | None = None) -> tuple[int, int, int]:
    """Expires every shop's due lots, one transaction per shop; returns (members, lots, points)."""
    as_of = as_of or utcnow()
    members = lots = points = 0
    for shop_id in service.db.read(lambda conn: expiry.shops_with_due_lots(conn, as_of)):
        done = service.db.transact(lambda uow, shop_id=shop_id: expiry.expire_shop(
            service, uow, commands.ExpireShop(shop_id, as_of)))
        members, lots, points = members + done.members, lots + done.lots, points + done.points
    return members, lots, points


def settle_pools(service: PointsService) -> int:
    """Settles yesterday's pool of every shop that has one; returns how many it settled now."""
    settled = 0
    for shop_id in service.db.read(pool.shops_with_pools):
        done = service.db.transact(lambda uow, shop_id=shop_id: pool.settle_pool(
            service, uow, commands.SettlePool(shop_id)))
        settled += not done.already_settled
    return settled


def release_expired_holds(service: PointsService, now: datetime | None = None, limit: int = 200) -> int:
    """Releases holds whose TTL passed, each in its own short transaction; returns how many."""
    now = now or utcnow()
    due = service.db.read(lambda conn: spending.due_holds(conn, now, limit))
    for shop_id, hold_id in due:
        def release(uow: UnitOfWork, shop_id: str = shop_id, hold_id: str = hold_id) -> None:
            spending.release_expired_hold(service, uow, shop_id, hold_id, now)

        service.db.transact(release)
    return len(due)


def periodic_jobs(service: PointsService, *, batch_jobs: bool) -> list[PeriodicJob]:
    """Holds past their TTL are released about every second; expiry and pool settlement run every
    minute where the service runs its batch jobs itself (otherwise CronJobs run them)."""
    jobs = [PeriodicJob("release-expired-holds", 1.0, lambda: release_expired_holds(service))]
    if batch_jobs:
        jobs += [PeriodicJob("expire-points", 60.0, lambda: _expire_and_log(service)),
                 PeriodicJob("settle-daily-pools", 60.0, lambda: settle_pools(service))]
    return jobs


def _expire_and_log(service: PointsService) -> None:
    members, lots, points = expire_all(service)
    if points:
        log.info("expired points", extra={"members": members, "lots": lots, "points": points})
