"""Scheduled work: releasing holds whose TTL passed (always, about every second), and — in the
embedded default, or where LOYALTY_POINTS_JOBS=1 — expiring due points and settling yesterday's
daily pools. In production the last two are commands a CronJob runs:
`python -m services.points expire` and `python -m services.points settle-pools`."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

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


class Scheduler(threading.Thread):
    def __init__(self, service: PointsService, *, periodic_jobs: bool, hold_seconds: float = 1.0,
                 job_seconds: float = 60.0):
        super().__init__(name="points-scheduler", daemon=True)
        self.service, self.periodic_jobs = service, periodic_jobs
        self.hold_seconds, self.job_seconds = hold_seconds, job_seconds
        self._stopped = threading.Event()
        self._last_jobs = 0.0

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=10)

    def run(self) -> None:
        while not self._stopped.wait(self.hold_seconds):
            try:
                release_expired_holds(self.service)
                if self.periodic_jobs and time.monotonic() - self._last_jobs >= self.job_seconds:
                    self._last_jobs = time.monotonic()
                    members, lots, points = expire_all(self.service)
                    if points:
                        log.info("expired points", extra={"members": members, "lots": lots, "points": points})
                    settle_pools(self.service)
            except Exception:
                log.exception("points scheduler run failed; retrying")
