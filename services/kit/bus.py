"""The event bus behind one small interface: in-process for the embedded default, Redis
Streams in production. Delivery is at least once; consumers make effects exactly once with
their inbox."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import redis

log = logging.getLogger("loyalty.bus")

Handler = Callable[[bytes], None]


class Subscription(Protocol):
    def stop(self) -> None: ...


class Bus(Protocol):
    def publish(self, stream: str, messages: list[bytes]) -> None: ...

    def subscribe(self, stream: str, group: str, handler: Handler) -> Subscription: ...

    def close(self) -> None: ...


class _InProcessSubscription:
    def __init__(self, bus: InProcessBus, stream: str, group: str, handler: Handler):
        self.stream, self.group, self.handler = stream, group, handler
        self._bus = bus

    def stop(self) -> None:
        self._bus._remove(self)


class InProcessBus:
    """Delivers synchronously inside publish(): publish returns only when every subscriber
    handled the message, so the relay marks an outbox row sent only after it took effect, and a
    crash before that re-sends it (the consumers' inboxes make the repeat harmless)."""

    def __init__(self, max_attempts: int = 5, dead_letter_dir: Path | None = None):
        self._subs: dict[str, list[_InProcessSubscription]] = {}
        self._lock = threading.Lock()
        self._max_attempts = max_attempts
        self._dead_letter_dir = dead_letter_dir
        self.dead_letters: list[tuple[str, str, bytes]] = []

    def publish(self, stream: str, messages: list[bytes]) -> None:
        with self._lock:
            subs = list(self._subs.get(stream, ()))
        for message in messages:
            for sub in subs:
                self._deliver(sub, message)

    def _deliver(self, sub: _InProcessSubscription, message: bytes) -> None:
        for attempt in range(1, self._max_attempts + 1):
            try:
                sub.handler(message)
                return
            except Exception:
                log.exception("consumer %s failed on a message from %s (attempt %d)", sub.group, sub.stream, attempt)
                time.sleep(min(0.05 * 2**attempt, 1.0))
        self.dead_letters.append((sub.stream, sub.group, message))
        where = "in memory"
        if self._dead_letter_dir is not None:
            # Kept on disk, so an operator can replay it once the consumer is fixed.
            self._dead_letter_dir.mkdir(parents=True, exist_ok=True)
            path = self._dead_letter_dir / f"{sub.stream}.{sub.group}.{uuid.uuid4().hex}.bin"
            path.write_bytes(message)
            where = str(path)
        log.error("consumer %s gave up on a message from %s; kept as a dead letter (%s)", sub.group, sub.stream, where)

    def subscribe(self, stream: str, group: str, handler: Handler) -> Subscription:
        sub = _InProcessSubscription(self, stream, group, handler)
        with self._lock:
            self._subs.setdefault(stream, []).append(sub)
        return sub

    def _remove(self, sub: _InProcessSubscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.stream, [])
            if sub in subs:
                subs.remove(sub)

    def close(self) -> None:
        with self._lock:
            self._subs.clear()


class _RedisSubscription(threading.Thread):
    def __init__(self, bus: RedisStreamsBus, stream: str, group: str, handler: Handler):
        super().__init__(name=f"consumer-{group}-{stream}", daemon=True)
        self.bus, self.stream, self.group, self.handler = bus, stream, group, handler
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._stopped = threading.Event()
        self._last_claim = 0.0

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)

    def run(self) -> None:
        r = self.bus.client
        backoff = 0.1
        ensured = False
        while not self._stopped.is_set():
            try:
                if not ensured:
                    self._ensure_group()
                    ensured = True
                    # Messages this consumer name read but never acked (none for a new name).
                    self._handle(r.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=100))
                if time.monotonic() - self._last_claim > self.bus.claim_interval:
                    self._reclaim()
                self._handle(
                    r.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=100, block=self.bus.block_ms)
                )
                backoff = 0.1
            except redis.RedisError as exc:
                log.warning("consumer %s: redis unavailable (%s); retrying", self.group, exc)
                ensured = False
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _ensure_group(self) -> None:
        try:
            self.bus.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _handle(self, reply) -> None:  # noqa: ANN001
        for _stream, entries in reply or ():
            for message_id, fields in entries:
                if fields is None:  # trimmed away while pending
                    self.bus.client.xack(self.stream, self.group, message_id)
                    continue
                try:
                    self.handler(fields[b"m"])
                except Exception:
                    # Left pending: XAUTOCLAIM hands it out again after claim_idle_ms.
                    log.exception("consumer %s failed on %s %s", self.group, self.stream, message_id)
                    continue
                self.bus.client.xack(self.stream, self.group, message_id)

    def _reclaim(self) -> None:
        """Takes over messages that a crashed or failing consumer left pending too long; a
        message delivered too often goes to the dead-letter stream instead."""
        self._last_claim = time.monotonic()
        r = self.bus.client
        start = "0-0"
        while True:
            next_start, claimed, *_ = r.xautoclaim(
                self.stream, self.group, self.consumer, self.bus.claim_idle_ms, start_id=start, count=100
            )
            if claimed:
                counts = {
                    p["message_id"]: p["times_delivered"]
                    for p in r.xpending_range(
                        self.stream, self.group, claimed[0][0], claimed[-1][0], len(claimed), self.consumer
                    )
                }
                live = []
                for message_id, fields in claimed:
                    if counts.get(message_id, 0) > self.bus.max_deliveries and fields is not None:
                        r.xadd(f"{self.stream}:dead:{self.group}", {"m": fields[b"m"], "id": message_id})
                        r.xack(self.stream, self.group, message_id)
                        log.error("consumer %s: %s dead-lettered after repeated failures", self.group, message_id)
                    else:
                        live.append((message_id, fields))
                self._handle([(self.stream, live)])
            if next_start in (b"0-0", "0-0"):
                return
            start = next_start


class RedisStreamsBus:
    """One stream per producing service, one consumer group per consuming service."""

    def __init__(
        self,
        url: str,
        *,
        maxlen: int = 1_000_000,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        claim_interval: float = 5.0,
        max_deliveries: int = 10,
    ):
        self.client = redis.Redis.from_url(url, socket_connect_timeout=1.0, health_check_interval=30)
        self.maxlen, self.block_ms = maxlen, block_ms
        self.claim_idle_ms, self.claim_interval, self.max_deliveries = claim_idle_ms, claim_interval, max_deliveries
        self._subs: list[_RedisSubscription] = []

    def publish(self, stream: str, messages: list[bytes]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for message in messages:
            pipe.xadd(stream, {"m": message}, maxlen=self.maxlen, approximate=True)
        pipe.execute()

    def subscribe(self, stream: str, group: str, handler: Handler) -> Subscription:
        sub = _RedisSubscription(self, stream, group, handler)
        self._subs.append(sub)
        sub.start()
        return sub

    def close(self) -> None:
        for sub in self._subs:
            sub.stop()
        self.client.close()


def make_bus(redis_url: str) -> Bus:
    return RedisStreamsBus(redis_url) if redis_url else InProcessBus()
