"""Scheduled work of a service, in one worker shape: each PeriodicJob runs every `interval`
seconds on the service's Periodic thread (started and stopped with the server, like every
services.kit.server.Worker). A failing job is logged once when it starts failing and once when
it recovers, not at every tick; the thread sleeps until the next job is due."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.kit.errors import Unavailable

log = logging.getLogger("loyalty.jobs")


@dataclass(frozen=True)
class PeriodicJob:
    """`fn` every `interval` seconds; the first run one interval after start."""

    name: str
    interval: float
    fn: Callable[[], object]

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError(f"job {self.name}: interval must be positive")


class _Schedule:
    """A job's next due time and its outage state."""

    def __init__(self, job: PeriodicJob, now: float):
        self.job = job
        self.due = now + job.interval
        self.failures = 0

    def run(self) -> None:
        try:
            self.job.fn()
        except Unavailable as exc:  # the database's own outage line says the rest
            if self.failures == 0:
                log.warning("job %s waits: %s", self.job.name, exc.message, extra={"job": self.job.name})
            self.failures += 1
        except Exception:
            if self.failures == 0:
                log.exception("job %s failed; retrying every %ss", self.job.name, self.job.interval,
                              extra={"job": self.job.name})
            self.failures += 1
        else:
            if self.failures:
                log.warning("job %s recovered after %d failed runs", self.job.name, self.failures,
                            extra={"job": self.job.name, "failures": self.failures})
            self.failures = 0
        # A run longer than the interval delays the next one; missed ticks are not made up.
        self.due = max(self.due + self.job.interval, time.monotonic())


class Periodic(threading.Thread):
    """One thread that runs a service's periodic jobs (a Worker: start() once serving, stop())."""

    def __init__(self, jobs: Sequence[PeriodicJob], *, name: str = "periodic"):
        super().__init__(name=name, daemon=True)
        self.jobs = list(jobs)
        self._schedules: list[_Schedule] = []
        self._stopped = threading.Event()

    @property
    def failing(self) -> list[str]:
        """The jobs whose last run failed (for health reports and tests)."""
        return [s.job.name for s in self._schedules if s.failures]

    def stop(self, timeout: float = 10.0) -> None:
        """Asks the thread to stop and waits for the job in progress to finish."""
        self._stopped.set()
        if self.is_alive():
            self.join(timeout=timeout)

    def run(self) -> None:
        self._schedules = [_Schedule(job, time.monotonic()) for job in self.jobs]
        if not self._schedules:
            return
        while not self._stopped.is_set():
            now = time.monotonic()
            for schedule in self._schedules:
                if schedule.due <= now and not self._stopped.is_set():
                    schedule.run()
            wait = min(s.due for s in self._schedules) - time.monotonic()
            if wait > 0:
                self._stopped.wait(wait)
