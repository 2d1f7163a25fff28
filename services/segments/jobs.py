"""Segments' scheduled work: in the embedded default the service runs it itself on its Periodic
thread; in production a CronJob runs the same functions as one-shot commands
(`python -m services.segments <command>`) unless LOYALTY_SEGMENTS_JOBS=1."""

from __future__ import annotations

from collections.abc import Callable

from services.kit.config import Settings
from services.kit.jobs import PeriodicJob
from services.segments import tags
from services.segments.service import SegmentsService

# Rule-assigned tags: every hour, those last applied more than a day ago (or never).
TAG_RULES_EVERY = 3600.0


def periodic_jobs(service: SegmentsService, *, batch_jobs: bool) -> list[PeriodicJob]:
    """The jobs the service runs itself (each one also a command below)."""
    if not batch_jobs:
        return []
    return [
        PeriodicJob("apply-tag-rules", TAG_RULES_EVERY, lambda: tags.apply_due_rules(service)),
    ]


def commands(build: Callable[[Settings], SegmentsService]) -> dict[str, Callable[[Settings], str]]:
    """One-shot commands for CronJobs: name -> fn(settings) -> the line logged when done."""
    return {
        "apply-tag-rules": lambda settings: f"applied {tags.apply_due_rules(build(settings))} tag rules",
    }
