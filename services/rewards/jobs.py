"""Scheduled work of the rewards service, on its periodic worker (every replica runs it: each
step is a conditional update or an idempotent call, so two replicas never do it twice): sagas
whose runner crashed or is waiting to retry are taken over; benefit packs due by the calendar are
granted, and granted packs' points sent to points; coupons past their window are expired; points
+ cash redemptions past their payment deadline are cancelled, their points and stock given back
(always, every few seconds: a member's points must not stay held because no CronJob ran)."""

from __future__ import annotations

from services.kit.jobs import PeriodicJob
from services.rewards import packs, payments, wallet
from services.rewards.service import RewardsService


def periodic_jobs(service: RewardsService) -> list[PeriodicJob]:
    assert service.sagas is not None
    return [service.sagas.recovery_job(interval=2.0),
            PeriodicJob("grant-scheduled-packs", 60.0, lambda: packs.grant_due(service)),
            PeriodicJob("credit-pack-points", 2.0, lambda: packs.credit_points(service)),
            PeriodicJob("expire-coupons", 60.0, lambda: wallet.expire_due_coupons(service)),
            PeriodicJob("redemption-deadlines", 5.0, lambda: payments.cancel_overdue(service))]
