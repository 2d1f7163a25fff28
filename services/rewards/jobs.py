"""Scheduled work of the rewards service, on its periodic worker: sagas whose runner crashed or
is waiting to retry are taken over, and points + cash redemptions past their payment deadline are
cancelled, their points and stock given back (both always, every few seconds: a member's points
must not stay held because no CronJob ran)."""

from __future__ import annotations

from services.kit.jobs import PeriodicJob
from services.rewards import payments
from services.rewards.service import RewardsService


def periodic_jobs(service: RewardsService, *, batch_jobs: bool) -> list[PeriodicJob]:
    assert service.sagas is not None
    return [service.sagas.recovery_job(interval=2.0),
            PeriodicJob("redemption-deadlines", 5.0, lambda: payments.cancel_overdue(service))]
