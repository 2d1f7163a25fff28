"""The Redis Streams bus (production): one stream per producing service, one consumer group per
consuming service, one reader per group at a time (a lease renewed with its heartbeat), gone
consumers' messages taken over and the consumers removed. See services/kit/bus.py for the
interface and the in-process bus."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import redis

from services.kit.bus import BatchHandler, Handler, Lag, Outcome, Subscription, one_by_one
from services.kit.errors import Unavailable
from services.kit.telemetry import Outage

log = logging.getLogger("loyalty.bus")


# Renews or drops a lease only while its holder still holds it.
_RENEW_LEASE = """if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0"""
_RELEASE_LEASE = """if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id_ms(message_id: bytes | str) -> int:
    return int(_text(message_id).split("-", 1)[0])


class _RedisSubscription(threading.Thread):
    def __init__(self, bus: RedisStreamsBus, stream: str, group: str, handler: BatchHandler):
        super().__init__(name=f"consumer-{group}-{stream}", daemon=True)
        self.bus, self.stream, self.group, self.handler = bus, stream, group, handler
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.heartbeat_key = bus.heartbeat_key(stream, group, self.consumer)
        self.lease_key = bus.lease_key(stream, group)
        self.leading = False  # holds the group's lease: the one consumer of the group that reads
        self._stopped = threading.Event()
        self._last_claim = 0.0

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)
        self._leave_group()

    def _leave_group(self) -> None:
        """A consumer that stops says so: its heartbeat goes at once (so anything it left pending
        is claimed without waiting), and it leaves the group if it holds nothing."""
        r = self.bus.client
        try:
            if self.leading:
                self.leading = False
                self.bus.release_lease(keys=[self.lease_key], args=[self.consumer])
            r.delete(self.heartbeat_key)
            if not r.xpending_range(self.stream, self.group, "-", "+", 1, consumername=self.consumer):
                r.xgroup_delconsumer(self.stream, self.group, self.consumer)
        except redis.RedisError:
            pass  # gone with Redis; another consumer removes it once Redis is back

    def run(self) -> None:
        r = self.bus.client
        backoff = 0.1
        ensured = False
        count = self.bus.read_count
        while not self._stopped.is_set():
            try:
                if not ensured:
                    self._ensure_group()
                    # The heartbeat exists before the first read adds this consumer to the group, so
                    # a consumer in the group without one is gone.
                    self.bus.beat()
                    ensured = True
                if not self.leading:
                    if not self._take_lead():
                        self._stopped.wait(self.bus.heartbeat_ttl_ms / 3000)
                        continue
                    # What the previous reader left pending is older than anything not yet read.
                    self._reclaim(new_reader=True)
                    # Messages this consumer name read but never acked (none for a new name).
                    self._handle(r.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=count))
                if time.monotonic() - self._last_claim > self.bus.claim_interval:
                    self._reclaim()
                self._handle(
                    r.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count, block=self.bus.block_ms)
                )
                self.bus.outage.recovered()
                backoff = 0.1
            except redis.RedisError as exc:
                self.bus.outage.failed(exc)
                ensured = False
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _take_lead(self) -> bool:
        """Takes the group's lease if no live consumer holds it."""
        if self.bus.client.set(self.lease_key, self.consumer, nx=True, px=self.bus.heartbeat_ttl_ms):
            self.leading = True
            log.info("consumer %s now reads %s for %s", self.consumer, self.stream, self.group)
        return self.leading

    def _ensure_group(self) -> None:
        try:
            self.bus.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _handle(self, reply: Any) -> None:
        """Hands the batch to the handler in stream order and acknowledges what it is done with, in
        one XACK. Messages held for an outage are offered again in place; failed ones stay pending
        (XAUTOCLAIM hands them out again after claim_idle_ms)."""
        r = self.bus.client
        batch: list[tuple[bytes, bytes]] = []
        for _stream, entries in reply or ():
            for message_id, fields in entries:
                if fields is None:  # trimmed away while pending
                    r.xack(self.stream, self.group, message_id)
                else:
                    batch.append((message_id, fields[b"m"]))
        while batch and not self._stopped.is_set():
            outcomes = self._apply([message for _, message in batch])
            done = [message_id for (message_id, _), o in zip(batch, outcomes, strict=True) if o is Outcome.DONE]
            if done:
                r.xack(self.stream, self.group, *done)
            batch = [entry for entry, o in zip(batch, outcomes, strict=True) if o is Outcome.HELD]
            # While the consumer's database is away the batch is held here, so an outage never
            # counts toward dead-lettering; stopping leaves it pending for another consumer.
            if batch and self._stopped.wait(1.0):
                return

    def _apply(self, messages: list[bytes]) -> list[Outcome]:
        try:
            return self.handler(messages)
        except Unavailable:
            return [Outcome.HELD] * len(messages)
        except Exception:
            log.exception("consumer %s failed on a batch of %d from %s", self.group, len(messages), self.stream)
            return [Outcome.FAILED] * len(messages)

    def _reclaim(self, *, new_reader: bool = False) -> None:
        """Takes over messages left pending by consumers that are gone (no heartbeat) at once, and
        by live ones after claim_idle_ms (a failed handler); removes gone consumers from the group.
        A message delivered too often goes to the dead-letter stream instead. A new reader takes
        over a gone one however recently it read: the lease it held expired with its heartbeat."""
        self._last_claim = time.monotonic()
        r = self.bus.client
        for info in r.xinfo_consumers(self.stream, self.group):
            name = _text(info["name"])
            if name == self.consumer or (not new_reader and info["idle"] < self.bus.heartbeat_ttl_ms):
                continue
            if r.exists(self.bus.heartbeat_key(self.stream, self.group, name)):
                continue
            self._take_over(name)
            if not r.xpending_range(self.stream, self.group, "-", "+", 1, consumername=name):
                r.xgroup_delconsumer(self.stream, self.group, name)
                log.info("consumer %s removed from %s on %s", name, self.group, self.stream)
        start = "0-0"
        while True:
            next_start, claimed, *_ = r.xautoclaim(self.stream, self.group, self.consumer, self.bus.claim_idle_ms,
                                                   start_id=start, count=self.bus.read_count)
            self._deliver_claimed(claimed)
            if next_start in (b"0-0", "0-0"):
                return
            start = next_start

    def _take_over(self, gone: str) -> None:
        r = self.bus.client
        while not self._stopped.is_set():
            pending = r.xpending_range(self.stream, self.group, "-", "+", self.bus.read_count, consumername=gone)
            if not pending:
                return
            # The idle floor keeps two consumers from taking the same message: the first claim resets it.
            claimed = r.xclaim(self.stream, self.group, self.consumer, self.bus.heartbeat_ttl_ms,
                               [p["message_id"] for p in pending])
            if not claimed:
                return
            log.info("consumer %s took over %d messages of %s", self.consumer, len(claimed), gone)
            self._deliver_claimed(claimed)

    def _deliver_claimed(self, claimed: list) -> None:
        if not claimed:
            return
        r = self.bus.client
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


class _Heartbeat(threading.Thread):
    """Refreshes the heartbeat key of every live subscription of one bus."""

    def __init__(self, bus: RedisStreamsBus):
        super().__init__(name="bus-heartbeat", daemon=True)
        self.bus = bus
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.bus.heartbeat_ttl_ms / 3000):
            try:
                self.bus.beat()
            except redis.RedisError as exc:
                self.bus.outage.failed(exc)


class RedisStreamsBus:
    """One stream per producing service, one consumer group per consuming service."""

    def __init__(
        self,
        url: str,
        *,
        maxlen: int = 1_000_000,
        block_ms: int = 1000,
        claim_idle_ms: int = 10_000,
        claim_interval: float = 2.0,
        max_deliveries: int = 10,
        heartbeat_ttl_ms: int = 3000,
        read_count: int = 256,
    ):
        self.client = redis.Redis.from_url(url, socket_connect_timeout=1.0, health_check_interval=30)
        self.maxlen, self.block_ms = maxlen, block_ms
        self.claim_idle_ms, self.claim_interval, self.max_deliveries = claim_idle_ms, claim_interval, max_deliveries
        self.heartbeat_ttl_ms = heartbeat_ttl_ms
        self.read_count = read_count  # messages per XREADGROUP: the most a consumer handles in one batch
        self.outage = Outage("redis bus", log)
        self.renew_lease = self.client.register_script(_RENEW_LEASE)
        self.release_lease = self.client.register_script(_RELEASE_LEASE)
        self._subs: list[_RedisSubscription] = []
        self._heartbeat: _Heartbeat | None = None
        self._lock = threading.Lock()

    @staticmethod
    def heartbeat_key(stream: str, group: str, consumer: str) -> str:
        return f"{stream}:heartbeat:{group}:{consumer}"

    @staticmethod
    def lease_key(stream: str, group: str) -> str:
        return f"{stream}:reader:{group}"

    def beat(self) -> None:
        """Marks every subscription of this bus alive for heartbeat_ttl_ms, and renews the leases
        of those that read; one that finds its lease gone stops reading."""
        with self._lock:
            subs = [sub for sub in self._subs if not sub._stopped.is_set()]
        if not subs:
            return
        pipe = self.client.pipeline(transaction=False)
        for sub in subs:
            pipe.set(sub.heartbeat_key, b"1", px=self.heartbeat_ttl_ms)
        readers = [sub for sub in subs if sub.leading]
        for sub in readers:
            self.renew_lease(keys=[sub.lease_key], args=[sub.consumer, self.heartbeat_ttl_ms], client=pipe)
        renewed = pipe.execute()[len(subs):]
        for sub, kept in zip(readers, renewed, strict=True):
            if not kept and sub.leading:
                sub.leading = False
                log.warning("consumer %s lost the lease of %s on %s", sub.consumer, sub.group, sub.stream)

    def publish(self, stream: str, messages: list[bytes]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for message in messages:
            pipe.xadd(stream, {"m": message}, maxlen=self.maxlen, approximate=True)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            self.outage.failed(exc)
            raise
        self.outage.recovered()

    def subscribe(self, stream: str, group: str, handler: Handler) -> Subscription:
        return self.subscribe_batch(stream, group, one_by_one(handler, group))

    def subscribe_batch(self, stream: str, group: str, handler: BatchHandler) -> Subscription:
        sub = _RedisSubscription(self, stream, group, handler)
        with self._lock:
            self._subs.append(sub)
            if self._heartbeat is None:
                self._heartbeat = _Heartbeat(self)
                self._heartbeat.start()
        sub.start()
        return sub

    def lag(self, stream: str, group: str) -> Lag:
        """How far `group` is behind on `stream` (XINFO GROUPS' lag and pending counts; the age
        from the oldest unhandled entry's id, on Redis's own clock)."""
        r = self.client
        try:
            groups = {_text(g["name"]): g for g in r.xinfo_groups(stream)}
        except redis.ResponseError:  # no such stream yet: nothing was ever published
            return Lag(0, 0, 0.0)
        info = groups.get(group)
        if info is None:  # the group was never created: the whole stream is ahead of it
            behind, pending, after = r.xlen(stream), 0, "-"
        else:
            pending, after = info["pending"], "(" + _text(info["last-delivered-id"])
            behind = info.get("lag")
            if behind is None:  # Redis cannot tell after deletions: count (up to a bound)
                behind = len(r.xrange(stream, after, "+", count=10_000))
        oldest: list[int] = []
        if pending:
            oldest.append(_id_ms(r.xpending(stream, group)["min"]))
        if behind:
            first = r.xrange(stream, after, "+", count=1)
            if first:
                oldest.append(_id_ms(first[0][0]))
        if not oldest:
            return Lag(0, 0, 0.0)
        seconds, micros = r.time()
        now_ms = seconds * 1000 + micros // 1000
        return Lag(behind + pending, pending, max(0, now_ms - min(oldest)) / 1000)

    def close(self) -> None:
        with self._lock:
            subs, heartbeat = list(self._subs), self._heartbeat
        for sub in subs:
            sub.stop()
        if heartbeat is not None:
            heartbeat.stopped.set()
            heartbeat.join(timeout=5)
        self.client.close()
