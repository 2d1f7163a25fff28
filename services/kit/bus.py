"""The event bus behind one small interface: in-process for the embedded default, Redis
Streams in production. Delivery is at least once, in batches; consumers make effects exactly
once with their inbox.

On Redis one consumer of a group reads at a time (it holds the group's lease, renewed with its
heartbeat), so that batches are applied in stream order; the others stand by and one takes the
lease within a heartbeat of the reader stopping or dying. Each live consumer keeps a heartbeat
key; messages left pending by a consumer whose heartbeat is gone are claimed by the new reader
before it reads anything newer, and the gone consumer is removed from its group. A Redis outage
logs one line when it begins and one when it ends."""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.kit import reasons
from services.kit.errors import Unavailable

log = logging.getLogger("loyalty.bus")

Handler = Callable[[bytes], None]


class Outcome(enum.Enum):
    """What became of one message of a batch."""

    DONE = "done"  # handled, or nothing to do: acknowledged
    FAILED = "failed"  # the handler failed: delivered again later, dead-lettered after repeats
    HELD = "held"  # a dependency is away: retried in place, never counted as a failure


# Takes a batch in stream order and says, for each message, what became of it.
BatchHandler = Callable[[list[bytes]], list[Outcome]]


def one_by_one(handler: Handler, group: str) -> BatchHandler:
    """A batch handler calling `handler` on each message in turn; an outage holds the rest."""

    def handle(messages: list[bytes]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for message in messages:
            try:
                handler(message)
            except Unavailable:
                return outcomes + [Outcome.HELD] * (len(messages) - len(outcomes))
            except Exception:
                log.exception("consumer %s failed on a message", group)
                outcomes.append(Outcome.FAILED)
            else:
                outcomes.append(Outcome.DONE)
        return outcomes

    return handle


class Subscription(Protocol):
    def stop(self) -> None: ...


@dataclass(frozen=True)
class Lag:
    """How far a consumer group is behind its stream: events not yet handled (never delivered,
    or delivered and not yet acknowledged), of which `pending` were delivered, and the age of the
    oldest of them."""

    events: int
    pending: int
    seconds: float


class Bus(Protocol):
    def publish(self, stream: str, messages: list[bytes]) -> None: ...

    def subscribe(self, stream: str, group: str, handler: Handler) -> Subscription: ...

    def subscribe_batch(self, stream: str, group: str, handler: BatchHandler) -> Subscription: ...

    def lag(self, stream: str, group: str) -> Lag: ...

    def close(self) -> None: ...


class _InProcessSubscription:
    def __init__(self, bus: InProcessBus, stream: str, group: str, handler: BatchHandler):
        self.stream, self.group, self.handler = stream, group, handler
        self._bus = bus

    def stop(self) -> None:
        self._bus._remove(self)


class InProcessBus:
    """Delivers synchronously inside publish(), the whole batch to each subscriber: publish
    returns only when every subscriber handled it, so the relay marks outbox rows sent only after
    they took effect, and a crash before that re-sends them (the consumers' inboxes make the
    repeat harmless)."""

    def __init__(self, max_attempts: int = 5, dead_letter_dir: Path | None = None):
        self._subs: dict[str, list[_InProcessSubscription]] = {}
        self._lock = threading.Lock()
        self._max_attempts = max_attempts
        self._dead_letter_dir = dead_letter_dir
        self.dead_letters: list[tuple[str, str, bytes]] = []

    def publish(self, stream: str, messages: list[bytes]) -> None:
        with self._lock:
            subs = list(self._subs.get(stream, ()))
        for sub in subs:
            self._deliver(sub, messages)

    def _deliver(self, sub: _InProcessSubscription, messages: list[bytes]) -> None:
        remaining = messages
        for attempt in range(1, self._max_attempts + 1):
            outcomes = sub.handler(remaining)
            if Outcome.HELD in outcomes:
                # The consumer's database is away: the relay publishes the batch again later.
                raise Unavailable("a consumer's database is unreachable", reason=reasons.CONSUMER_UNAVAILABLE,
                                  metadata={"group": sub.group})
            remaining = [m for m, outcome in zip(remaining, outcomes, strict=True) if outcome is Outcome.FAILED]
            if not remaining:
                return
            log.warning("consumer %s failed on %d messages from %s (attempt %d)", sub.group, len(remaining),
                        sub.stream, attempt)
            time.sleep(min(0.05 * 2**attempt, 1.0))
        for message in remaining:
            self._dead_letter(sub, message)

    def _dead_letter(self, sub: _InProcessSubscription, message: bytes) -> None:
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
        return self.subscribe_batch(stream, group, one_by_one(handler, group))

    def subscribe_batch(self, stream: str, group: str, handler: BatchHandler) -> Subscription:
        sub = _InProcessSubscription(self, stream, group, handler)
        with self._lock:
            self._subs.setdefault(stream, []).append(sub)
        return sub

    def lag(self, stream: str, group: str) -> Lag:
        """Always none: delivery happens inside publish()."""
        return Lag(0, 0, 0.0)

    def _remove(self, sub: _InProcessSubscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.stream, [])
            if sub in subs:
                subs.remove(sub)

    def close(self) -> None:
        with self._lock:
            self._subs.clear()


def make_bus(redis_url: str, *, read_count: int = 256) -> Bus:
    """Redis Streams where a Redis URL is given (up to `read_count` messages a batch), else in-process."""
    if not redis_url:
        return InProcessBus()
    from services.kit.redis_bus import RedisStreamsBus  # redis_bus builds on this module

    return RedisStreamsBus(redis_url, read_count=read_count)
