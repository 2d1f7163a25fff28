"""Redis Streams consumers on a real Redis: a killed consumer's messages are taken over within
seconds (its heartbeat is gone) and the dead consumer leaves the group; a stopped one leaves at
once; repeated failures still end as dead letters; lag is reported in events and seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.kit.redis_bus import RedisStreamsBus
from tests.backends import wait_until

REDIS_URL = os.environ.get("LOYALTY_TEST_REDIS_URL", "")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="needs Redis: run through scripts/test-backends.sh")

# A consumer in another process that reads messages and hangs on the first: killed, it leaves
# them pending with its heartbeat still set, exactly as a crashed service would.
HANGING_CONSUMER = """
import sys, threading, pathlib
from services.kit.redis_bus import RedisStreamsBus
url, stream, group, marker = sys.argv[1:5]
def hang(message):
    pathlib.Path(marker).write_text("read")
    threading.Event().wait()
RedisStreamsBus(url).subscribe(stream, group, hang)
threading.Event().wait()
"""


@pytest.fixture
def bus() -> Iterator[RedisStreamsBus]:
    bus = RedisStreamsBus(REDIS_URL)  # production defaults
    yield bus
    bus.close()


def names() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"loyalty.takeover-{suffix}.v1", f"group-{suffix}"


def consumers_of(bus: RedisStreamsBus, stream: str, group: str) -> list[str]:
    return sorted(c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
                  for c in bus.client.xinfo_consumers(stream, group))


class Recorder:
    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self._lock = threading.Lock()

    def __call__(self, message: bytes) -> None:
        with self._lock:
            self.seen.append(message)


def test_messages_of_a_killed_consumer_are_taken_over_within_seconds_and_it_leaves_the_group(
    bus: RedisStreamsBus, tmp_path: Path
) -> None:
    stream, group = names()
    marker = tmp_path / "read"
    child = subprocess.Popen([sys.executable, "-c", HANGING_CONSUMER, REDIS_URL, stream, group, str(marker)],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: bus.client.exists(stream) and consumers_of(bus, stream, group), "the child joined")
        bus.publish(stream, [b"m1", b"m2", b"m3"])
        wait_until(marker.exists, "the child read the messages")
        (dead,) = consumers_of(bus, stream, group)
        lag = bus.lag(stream, group)
        assert lag.events == 3 and lag.pending >= 1  # at least the one it hangs on is pending on it
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    killed_at = time.monotonic()

    recorder = Recorder()
    live = bus.subscribe(stream, group, recorder)
    wait_until(lambda: sorted(recorder.seen) == [b"m1", b"m2", b"m3"], "the live consumer handled them", timeout=15)
    took = time.monotonic() - killed_at
    assert took < 8, f"takeover took {took:.1f}s"
    wait_until(lambda: consumers_of(bus, stream, group) == [live.consumer], "the dead consumer left the group")
    assert dead != live.consumer
    assert bus.lag(stream, group).events == 0


def test_a_stopped_consumer_leaves_its_group(bus: RedisStreamsBus) -> None:
    stream, group = names()
    recorder = Recorder()
    sub = bus.subscribe(stream, group, recorder)
    bus.publish(stream, [b"one"])
    wait_until(lambda: recorder.seen == [b"one"], "the message is handled")
    wait_until(lambda: bus.lag(stream, group).events == 0, "the message is acknowledged")
    assert consumers_of(bus, stream, group) == [sub.consumer]

    sub.stop()

    assert consumers_of(bus, stream, group) == []
    assert not bus.client.exists(bus.heartbeat_key(stream, group, sub.consumer))


def test_a_message_that_keeps_failing_is_dead_lettered() -> None:
    bus = RedisStreamsBus(REDIS_URL, block_ms=100, claim_idle_ms=100, claim_interval=0.1, max_deliveries=3)
    stream, group = names()
    attempts = Recorder()

    def fails(message: bytes) -> None:
        attempts(message)
        raise RuntimeError("a consumer bug")

    try:
        bus.subscribe(stream, group, fails)
        bus.publish(stream, [b"poison"])
        dead_letters = f"{stream}:dead:{group}"
        wait_until(lambda: bus.client.xlen(dead_letters) == 1, "the message is dead-lettered")
        assert bus.client.xrange(dead_letters)[0][1][b"m"] == b"poison"
        wait_until(lambda: bus.lag(stream, group).events == 0, "the poison message is acknowledged")
        assert 3 <= len(attempts.seen) <= 4
    finally:
        bus.close()


def test_lag_counts_events_not_yet_handled_and_their_age(bus: RedisStreamsBus) -> None:
    stream, group = names()
    assert bus.lag(stream, group).events == 0  # no stream yet
    gate = threading.Event()
    recorder = Recorder()

    def slow(message: bytes) -> None:
        gate.wait(30)
        recorder(message)

    sub = bus.subscribe(stream, group, slow)
    wait_until(lambda: bus.client.exists(stream) and consumers_of(bus, stream, group), "the group exists")
    bus.publish(stream, [b"a", b"b", b"c", b"d"])
    time.sleep(1.2)

    lag = bus.lag(stream, group)
    assert lag.events == 4 and 1 <= lag.pending <= 4
    assert 1.0 <= lag.seconds < 10

    gate.set()
    wait_until(lambda: len(recorder.seen) == 4, "the backlog is handled")
    wait_until(lambda: bus.lag(stream, group).events == 0, "the group caught up")
    assert bus.lag(stream, group).seconds == 0
    sub.stop()
