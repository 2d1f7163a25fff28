"""Segments' scheduled work: in the embedded default the service runs it itself on its Periodic
thread; in production a CronJob runs the same functions as one-shot commands
(`python -m services.segments <command>`) unless LOYALTY_SEGMENTS_JOBS=1."""

from __future__ import annotations

from collections.abc import Callable

from services.kit.config import Settings
from services.kit.jobs import PeriodicJob
from services.segments import sizes
from services.segments.service import SegmentsService


def periodic_jobs(service: SegmentsService, *, batch_jobs: bool) -> list[PeriodicJob]:
    """The jobs the service runs itself (each one also a command below)."""
    if not batch_jobs:
        return []
    jobs: list[PeriodicJob] = []
    # Segment sizes: today's count of every segment not counted yet today (size history).
    jobs.append(PeriodicJob("snapshot-segment-sizes", sizes.SNAPSHOT_INTERVAL, lambda: sizes.snapshot_job(service)))
    return jobs


def commands(build: Callable[[Settings], SegmentsService]) -> dict[str, Callable[[Settings], str]]:
    """One-shot commands for CronJobs: name -> fn(settings) -> the line logged when done."""
    found: dict[str, Callable[[Settings], str]] = {}

    # Segment sizes: counts every segment of every shop now (the daily CronJob).
    def snapshot_segment_sizes(settings: Settings) -> str:
        shops, counted = sizes.snapshot_all(build(settings))
        return f"recorded the size of {counted} segments in {shops} shops"

    found["snapshot-segment-sizes"] = snapshot_segment_sizes
    return found
