"""Segments' scheduled work: in the embedded default the service runs it itself on its Periodic
thread; in production a CronJob runs the same functions as one-shot commands
(`python -m services.segments <command>`) unless LOYALTY_SEGMENTS_JOBS=1."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from services.kit.config import Settings
from services.kit.jobs import PeriodicJob
from services.segments import rfm, sizes, tags
from services.segments.service import SegmentsService

# Rule-assigned tags: every hour, those last applied more than a day ago (or never).
TAG_RULES_EVERY = 3600.0

# RFM: checked hourly, each shop recomputed once its last recompute is a day old; the CronJob's
# one-shot command recomputes every shop.
RFM_CHECK_SECONDS = 3600.0
RFM_MAX_AGE = timedelta(days=1)


def recompute_rfm_job(service: SegmentsService) -> PeriodicJob:
    return PeriodicJob("recompute-rfm", RFM_CHECK_SECONDS, lambda: rfm.recompute_due(service.db, RFM_MAX_AGE))


def recompute_rfm_command(build: Callable[[Settings], SegmentsService]) -> Callable[[Settings], str]:
    def run(settings: Settings) -> str:
        return f"RFM recomputed for {rfm.recompute_due(build(settings).db, timedelta(0))} shops"
    return run


def periodic_jobs(service: SegmentsService, *, batch_jobs: bool) -> list[PeriodicJob]:
    """The jobs the service runs itself (each one also a command below)."""
    if not batch_jobs:
        return []
    return [
        PeriodicJob("apply-tag-rules", TAG_RULES_EVERY, lambda: tags.apply_due_rules(service)),
        recompute_rfm_job(service),
        # Segment sizes: today's count of every segment not counted yet today (size history).
        PeriodicJob("snapshot-segment-sizes", sizes.SNAPSHOT_INTERVAL, lambda: sizes.snapshot_job(service)),
    ]


def commands(build: Callable[[Settings], SegmentsService]) -> dict[str, Callable[[Settings], str]]:
    """One-shot commands for CronJobs: name -> fn(settings) -> the line logged when done."""
    # Segment sizes: counts every segment of every shop now (the daily CronJob).
    def snapshot_segment_sizes(settings: Settings) -> str:
        shops, counted = sizes.snapshot_all(build(settings))
        return f"recorded the size of {counted} segments in {shops} shops"

    return {
        "apply-tag-rules": lambda settings: f"applied {tags.apply_due_rules(build(settings))} tag rules",
        "recompute-rfm": recompute_rfm_command(build),
        "snapshot-segment-sizes": snapshot_segment_sizes,
    }
