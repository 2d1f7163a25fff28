"""Periodic jobs: one worker shape for every scheduled task."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from services.kit.jobs import Periodic, PeriodicJob


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


class Counter:
    def __init__(self) -> None:
        self.times: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.times.append(time.monotonic())

    @property
    def count(self) -> int:
        return len(self.times)


def test_each_job_runs_at_its_own_interval_and_never_more_often() -> None:
    fast, slow = Counter(), Counter()
    worker = Periodic([PeriodicJob("fast", 0.05, fast), PeriodicJob("slow", 0.3, slow)])
    started = time.monotonic()
    worker.start()
    try:
        wait_until(lambda: slow.count >= 2, "the slow job's second run")
    finally:
        worker.stop()
    elapsed = time.monotonic() - started
    # Lower bounds depend on how busy the machine is; upper bounds do not: a job never runs more
    # often than its interval allows (no burst, no busy loop), however late the thread woke.
    assert fast.count <= elapsed / 0.05 + 1
    assert slow.count <= elapsed / 0.3 + 1
    assert fast.count > slow.count


def test_the_first_run_comes_one_interval_after_start() -> None:
    job = Counter()
    started = time.monotonic()
    worker = Periodic([PeriodicJob("j", 0.2, job)])
    worker.start()
    wait_until(lambda: job.count >= 1, "the first run")
    worker.stop()
    assert job.times[0] - started >= 0.19


def test_stop_returns_at_once_even_with_a_long_interval() -> None:
    worker = Periodic([PeriodicJob("hourly", 3600, Counter())])
    worker.start()
    started = time.monotonic()
    worker.stop()
    assert time.monotonic() - started < 1
    assert not worker.is_alive()


def test_stop_waits_for_the_run_in_progress() -> None:
    entered, finished = threading.Event(), threading.Event()

    def slow() -> None:
        entered.set()
        time.sleep(0.3)
        finished.set()

    worker = Periodic([PeriodicJob("slow", 0.01, slow)])
    worker.start()
    assert entered.wait(2)
    worker.stop()
    assert finished.is_set()


def test_a_failing_job_is_logged_once_per_outage_and_others_keep_running(caplog: pytest.LogCaptureFixture) -> None:
    outage = threading.Event()
    outage.set()
    runs = Counter()
    healthy = Counter()

    def flaky() -> None:
        runs()
        if outage.is_set():
            raise ConnectionError("database unavailable")

    worker = Periodic([PeriodicJob("flaky", 0.02, flaky), PeriodicJob("healthy", 0.02, healthy)])
    with caplog.at_level(logging.WARNING, logger="loyalty.jobs"):
        worker.start()
        wait_until(lambda: runs.count >= 10, "ten failed runs")
        assert worker.failing == ["flaky"]
        outage.clear()
        wait_until(lambda: not worker.failing, "the job recovered")
        outage.set()
        wait_until(lambda: worker.failing == ["flaky"], "the second outage")
        worker.stop()
    failures = [r for r in caplog.records if "failed; retrying" in r.getMessage()]
    recoveries = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert len(failures) == 2
    assert failures[0].exc_info is not None
    assert len(recoveries) == 1 and "after" in recoveries[0].getMessage()
    assert healthy.count >= 10


def test_an_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval must be positive"):
        PeriodicJob("never", 0, lambda: None)
