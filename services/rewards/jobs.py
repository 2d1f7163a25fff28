"""Scheduled work of the rewards service, on its periodic worker: sagas whose runner crashed or
is waiting to retry are taken over (always, every few seconds)."""

from __future__ import annotations

from services.kit.jobs import PeriodicJob
from services.rewards import wallet
from services.rewards.service import RewardsService


def periodic_jobs(service: RewardsService, *, batch_jobs: bool) -> list[PeriodicJob]:
    assert service.sagas is not None
    return [service.sagas.recovery_job(interval=2.0),
            PeriodicJob("expire-coupons", 60.0, lambda: wallet.expire_due_coupons(service))]
