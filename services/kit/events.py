"""The outbox relay (producer side) and the inbox consumer (consumer side)."""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable
from datetime import timedelta

import redis
from google.protobuf.message import Message
from loyalty.common.v1 import envelope_pb2
from opentelemetry import propagate, trace
from sqlalchemy import Connection, delete, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.kit.bus import Bus, Subscription
from services.kit.errors import Unavailable
from services.kit.storage import Database, UnitOfWork
from services.kit.timeutil import utcnow

log = logging.getLogger("loyalty.events")
tracer = trace.get_tracer("loyalty.events")


def stream_name(service: str) -> str:
    """One stream per producing service."""
    return f"loyalty.{service}.v1"


class OutboxRelay(threading.Thread):
    """Publishes committed outbox rows in order. Woken right after a commit that emitted events,
    and polling as a safety net (other processes may have written rows). After a failure it backs
    off, and a commit's wake-up does not cut the backoff short."""

    def __init__(
        self,
        db: Database,
        bus: Bus,
        *,
        batch: int = 200,
        poll_seconds: float = 0.5,
        retention: timedelta = timedelta(days=7),
    ):
        super().__init__(name=f"outbox-relay-{db.service}", daemon=True)
        self.db, self.bus, self.batch, self.poll_seconds = db, bus, batch, poll_seconds
        self.retention = retention
        self.stream = stream_name(db.service)
        self._lock_key = zlib.crc32(self.stream.encode())
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._last_cleanup = 0.0

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        self.join(timeout=10)
        self.relay_pending()  # what the last in-flight calls committed

    def run(self) -> None:
        backoff = 0.0
        while not self._stopped.is_set():
            if backoff:
                # Not the wake event: while the bus or the database is away, every commit would
                # otherwise end the backoff, and the relay would retry (and fail) once per commit.
                self._stopped.wait(backoff)
            else:
                self._wake.wait(self.poll_seconds)
            self._wake.clear()
            try:
                while self.relay_once() == self.batch and not self._stopped.is_set():
                    pass
                self._cleanup()
                backoff = 0.0
            except Exception as exc:
                self._failed(exc)
                backoff = min(max(backoff * 2, self.poll_seconds), 10.0)

    def relay_pending(self) -> int:
        total = 0
        try:
            while (n := self.relay_once()) > 0:
                total += n
        except Exception as exc:
            self._failed(exc)
        return total

    def _failed(self, exc: Exception) -> None:
        # The bus and the database log their own outages, once; anything else is a bug.
        if not isinstance(exc, redis.RedisError | Unavailable):
            log.error("outbox relay of %s failed; retrying", self.db.service, exc_info=exc)

    def relay_once(self) -> int:
        """Publishes one batch; returns how many rows it sent."""
        outbox = self.db.kit.outbox
        pending = outbox.c.published_at.is_(None)
        if not self.db.read(lambda conn: conn.execute(select(exists().where(pending))).scalar()):
            return 0
        query = select(outbox.c.id, outbox.c.envelope).where(pending).order_by(outbox.c.id).limit(self.batch)

        def mark(conn: Connection, ids: list[int]) -> None:
            conn.execute(update(outbox).where(outbox.c.id.in_(ids)).values(published_at=utcnow()))

        # Rows are published before the commit that marks them: a crash in between re-sends,
        # never loses (at least once).
        if self.db.is_sqlite:
            # One process owns a SQLite file, so no lock is needed to keep the order; and the
            # in-process bus runs consumers inside publish(), which must not wait on our write lock.
            rows = self.db.read(lambda conn: conn.execute(query).all())
            if rows:
                self.bus.publish(self.stream, [row.envelope for row in rows])
                self.db.transact(lambda uow: mark(uow.conn, [row.id for row in rows]))
            return len(rows)

        def send(uow: UnitOfWork) -> int:
            # One publisher per stream at a time, so events leave in the order they were written;
            # the other workers' relays find the lock taken and leave the rows to its holder.
            if not uow.conn.execute(select(func.pg_try_advisory_xact_lock(self._lock_key))).scalar():
                return 0
            rows = uow.conn.execute(query).all()
            if rows:
                self.bus.publish(self.stream, [row.envelope for row in rows])
                mark(uow.conn, [row.id for row in rows])
            return len(rows)

        return self.db.transact(send)

    def _cleanup(self) -> None:
        """Drops sent events, handled inbox ids and idempotency records past retention."""
        if time.monotonic() - self._last_cleanup < 3600:
            return
        self._last_cleanup = time.monotonic()
        cutoff = utcnow() - self.retention
        kit = self.db.kit

        def purge(uow: UnitOfWork) -> None:
            uow.conn.execute(delete(kit.outbox).where(kit.outbox.c.published_at < cutoff))
            uow.conn.execute(delete(kit.inbox).where(kit.inbox.c.processed_at < cutoff))
            uow.conn.execute(delete(kit.idempotency).where(kit.idempotency.c.created_at < cutoff))

        self.db.transact(purge)


EventHandler = Callable[[UnitOfWork, Message, envelope_pb2.EventEnvelope], None]


class _AlreadyHandled(Exception):
    pass


def handle_once(db: Database, consumer: str, event_id: str, effect: Callable[[UnitOfWork], None]) -> bool:
    """Applies `effect` and records the event id in the inbox in one transaction. Returns False,
    changing nothing, when this consumer already handled the event."""
    inbox = db.kit.inbox

    def attempt(uow: UnitOfWork) -> None:
        seen = uow.conn.execute(
            select(inbox.c.event_id).where((inbox.c.consumer == consumer) & (inbox.c.event_id == event_id))
        ).first()
        if seen is not None:
            raise _AlreadyHandled
        try:
            uow.conn.execute(insert(inbox), {"consumer": consumer, "event_id": event_id, "processed_at": utcnow()})
        except IntegrityError as exc:  # a concurrent delivery of the same event won
            raise _AlreadyHandled from exc
        effect(uow)

    try:
        db.transact(attempt)
        return True
    except _AlreadyHandled:
        return False


class EventConsumer:
    """Subscribes one consuming service (a consumer group) to a producer's stream and applies
    each event type's handler exactly once."""

    def __init__(
        self, db: Database, bus: Bus, *, consumer: str, producer: str, handlers: dict[type[Message], EventHandler]
    ):
        self.db, self.bus, self.consumer = db, bus, consumer
        self.stream = stream_name(producer)
        self.handlers = {cls.DESCRIPTOR.full_name: (cls, fn) for cls, fn in handlers.items()}
        self._subscription: Subscription | None = None

    def start(self) -> None:
        self._subscription = self.bus.subscribe(self.stream, self.consumer, self.handle)

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.stop()

    def handle(self, message: bytes) -> bool:
        """Handles one serialized envelope; True if it took effect now, False if it was a repeat
        or of a type this consumer ignores."""
        envelope = envelope_pb2.EventEnvelope.FromString(message)
        entry = self.handlers.get(envelope.type)
        if entry is None:
            return False
        payload_type, fn = entry
        payload = payload_type()
        envelope.payload.Unpack(payload)
        parent = propagate.extract({"traceparent": envelope.traceparent, "tracestate": envelope.tracestate})
        with tracer.start_as_current_span(f"consume {envelope.type}", context=parent, kind=trace.SpanKind.CONSUMER):
            return handle_once(self.db, self.consumer, envelope.id, lambda uow: fn(uow, payload, envelope))
