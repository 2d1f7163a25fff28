"""The outbox relay (producer side) and the inbox consumer (consumer side)."""

from __future__ import annotations

import itertools
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta

import redis
from google.protobuf.message import Message
from loyalty.common.v1 import envelope_pb2
from opentelemetry import propagate, trace
from sqlalchemy import Connection, bindparam, delete, exists, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from services.kit.bus import Bus, Outcome, Subscription
from services.kit.errors import Unavailable
from services.kit.storage import Database, Prepared, UnitOfWork, insert_many
from services.kit.timeutil import utcnow

log = logging.getLogger("loyalty.events")
tracer = trace.get_tracer("loyalty.events")

_CONTENDED_RETRY_SECONDS = 0.02


def stream_name(service: str) -> str:
    """One stream per producing service."""
    return f"loyalty.{service}.v1"


class OutboxRelay(threading.Thread):
    """Publishes committed outbox rows in order, up to `batch` rows per bus round trip and
    transaction. Woken right after a commit that emitted events, and polling every
    `poll_seconds` as a safety net only (a commit in another process, a lost wake-up). While
    another worker's relay holds the stream it looks again shortly, since rows committed here
    may have missed that relay's batch. After a failure it backs off, and a commit's wake-up does
    not cut the backoff short."""

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
        self._contended = False  # the last attempt found another worker's relay sending
        # Its statements, built once (it runs after every commit that emitted events).
        outbox = db.kit.outbox
        pending = outbox.c.published_at.is_(None)
        self._any_pending = Prepared(select(exists().where(pending)))
        self._pending = select(outbox.c.id, outbox.c.envelope).where(pending).order_by(outbox.c.id).limit(batch)
        self._mark = update(outbox).where(outbox.c.id.in_(bindparam("b_ids", expanding=True))).values(
            published_at=bindparam("b_at"))
        # PostgreSQL: the next batch marked and read in one statement (published before the commit):
        # the batch's ids from the unpublished index, then each row by its key (a join the planner
        # cannot turn into a scan of every event ever sent, whatever its statistics say).
        next_ids = select(outbox.c.id).where(pending).order_by(outbox.c.id).limit(batch).subquery()
        self._take = Prepared(update(outbox).where(outbox.c.id == next_ids.c.id, pending).values(
            published_at=bindparam("b_at")).returning(outbox.c.id, outbox.c.envelope))
        # The lock, and for this transaction a plan that walks the unpublished index in id order:
        # a published row's old version stays in that index until a vacuum, and only a plain index
        # scan marks such entries dead as it passes (a bitmap scan would visit every one of them on
        # every batch, thousands between two autovacuums at a sale's rate).
        self._try_lock = Prepared(select(func.pg_try_advisory_xact_lock(self._lock_key),
                                         func.set_config("enable_bitmapscan", "off", True),
                                         func.set_config("enable_sort", "off", True)))

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        self.join(timeout=10)
        self.relay_pending()  # what the last in-flight calls committed

    def run(self) -> None:
        backoff, contended = 0.0, 0.0
        while not self._stopped.is_set():
            # After a commit's wake-up (or a contended or full batch) rows are known to be waiting;
            # only a poll asks first whether any are.
            known = True
            if backoff:
                # Not the wake event: while the bus or the database is away, every commit would
                # otherwise end the backoff, and the relay would retry (and fail) once per commit.
                self._stopped.wait(backoff)
            elif self._contended:
                # Soon, but less often the longer the other relay holds on (it may be stuck).
                contended = min(max(contended * 2, _CONTENDED_RETRY_SECONDS), self.poll_seconds)
                self._stopped.wait(contended)
            else:
                contended = 0.0
                known = self._wake.wait(self.poll_seconds)
            self._wake.clear()
            try:
                while self.relay_once(ask_first=not known) == self.batch and not self._stopped.is_set():
                    known = True
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

    def relay_once(self, *, ask_first: bool = True) -> int:
        """Publishes one batch; returns how many rows it sent (none while another worker's relay
        holds the stream). `ask_first`: a read looks for waiting rows before the transaction that
        takes the stream's lock (a poll, which mostly finds none)."""
        self._contended = False
        if ask_first and not self.db.read(lambda conn: self._any_pending(conn).scalar(), autocommit=True):
            return 0
        query = self._pending

        def mark(conn: Connection, ids: list[int]) -> None:
            conn.execute(self._mark, {"b_ids": ids, "b_at": utcnow()})

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
            if not self._try_lock(uow.conn).scalar():
                self._contended = True
                return 0
            # Read after the lock is held: the statement sees every batch its holders committed.
            rows = sorted(self._take(uow.conn, {"b_at": utcnow()}).all(), key=lambda row: row.id)
            if rows:
                self.bus.publish(self.stream, [row.envelope for row in rows])
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
# Applies consecutive events of one type together, in their order (several may be about one member).
BatchHandler = Callable[[UnitOfWork, list[tuple[Message, envelope_pb2.EventEnvelope]]], None]


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


@dataclass(frozen=True)
class _Event:
    envelope: envelope_pb2.EventEnvelope
    payload: Message
    fn: EventHandler


class _BatchFailed(Exception):
    """One event of a batch failed: the batch's transaction is rolled back."""


# True: took effect now; False: a repeat, or of a type the consumer ignores; an exception: its
# handler failed, and the bus delivers it again later.
Result = bool | Exception


def member_of(payload: Message) -> str:
    """The member an event is about (its `member_id` field), or "" for a shop-wide event."""
    return getattr(payload, "member_id", "") if "member_id" in payload.DESCRIPTOR.fields_by_name else ""


class EventConsumer:
    """Subscribes one consuming service (a consumer group) to a producer's stream and applies
    each event type's handler exactly once.

    A batch read from the bus is split into `workers` lanes by a hash of (shop, member), applied
    side by side, each lane in transactions of up to `per_transaction` events with their inbox
    rows written in one statement, so one member's events are applied in stream order. A
    shop-wide event (no member) waits for the events before it and is applied before those after
    it. If one event of a transaction fails, its events are applied one transaction each instead,
    so one event does not hold up the others (it is delivered again later, after the member's
    later events of the batch). The bus acknowledges the batch once every lane is done.

    A type with a handler in `batch_handlers` too has each run of its consecutive events in a
    transaction applied by that one call; its handler in `handlers` applies them when they go one
    transaction each."""

    def __init__(self, db: Database, bus: Bus, *, consumer: str, producer: str,
                 handlers: dict[type[Message], EventHandler], workers: int = 4, per_transaction: int = 50,
                 batch_handlers: dict[type[Message], BatchHandler] | None = None):
        self.db, self.bus, self.consumer = db, bus, consumer
        self.stream = stream_name(producer)
        self.handlers = {cls.DESCRIPTOR.full_name: (cls, fn) for cls, fn in handlers.items()}
        self.batch_handlers = {cls.DESCRIPTOR.full_name: fn for cls, fn in (batch_handlers or {}).items()}
        # One SQLite file takes one writer at a time: lanes would only queue on its lock.
        self.workers = 1 if db.is_sqlite else max(1, workers)
        # Bounds how long a lane's transaction holds its members' rows (and SQLite's write lock).
        self.per_transaction = max(1, per_transaction)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"consumer-{consumer}") \
            if self.workers > 1 else None
        self._subscription: Subscription | None = None

    def start(self) -> None:
        self._subscription = self.bus.subscribe_batch(self.stream, self.consumer, self._deliver)

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def handle(self, message: bytes) -> bool:
        """Handles one serialized envelope; True if it took effect now, False if it was a repeat
        or of a type this consumer ignores. Raises what its handler raised."""
        (result,) = self.handle_batch([message])
        if isinstance(result, Exception):
            raise result
        return result

    def handle_batch(self, messages: list[bytes]) -> list[Result]:
        """Handles serialized envelopes (in order for each member); for each, a Result. Raises
        Unavailable (after applying none or some of them) while the database is away."""
        results: list[Result] = [False] * len(messages)
        events: list[tuple[int, _Event]] = []
        for i, message in enumerate(messages):
            try:
                event = self._decode(message)
            except Exception as exc:  # not an envelope, or a payload that does not parse
                log.error("consumer %s cannot decode a message of %s", self.consumer, self.stream, exc_info=exc)
                results[i] = exc
                continue
            if event is not None:  # else of a type this consumer ignores
                events.append((i, event))
        for lanes in self._segments(events):
            if self._pool is None or len(lanes) == 1:
                for lane in lanes:
                    self._apply_lane(lane, results)
                continue
            running = [self._pool.submit(self._apply_lane, lane, results) for lane in lanes]
            wait(running)
            for future in running:
                future.result()  # Unavailable: the bus offers the whole batch again (repeats are no-ops)
        return results

    def _segments(self, events: list[tuple[int, _Event]]) -> Iterator[list[list[tuple[int, _Event]]]]:
        """The batch as runs of lanes to apply side by side, one after the other; a shop-wide
        event is a run of its own. Only a batch of more than `per_transaction` events is spread
        over lanes (up to `workers`): while the consumer keeps up, one transaction applies a
        batch, with far fewer statements (and less CPU) than a transaction per lane."""
        count = min(self.workers, -(-len(events) // self.per_transaction)) or 1
        lanes: dict[int, list[tuple[int, _Event]]] = {}
        for i, event in events:
            member = member_of(event.payload)
            if not member:
                if lanes:
                    yield list(lanes.values())
                    lanes = {}
                yield [[(i, event)]]
                continue
            lane = zlib.crc32(f"{event.envelope.shop_id}/{member}".encode()) % count
            lanes.setdefault(lane, []).append((i, event))
        if lanes:
            yield list(lanes.values())

    def _apply_lane(self, lane: list[tuple[int, _Event]], results: list[Result]) -> None:
        """Applies one lane's events, up to `per_transaction` in one transaction."""
        for start in range(0, len(lane), self.per_transaction):
            self._apply_chunk(lane[start:start + self.per_transaction], results)

    def _apply_chunk(self, lane: list[tuple[int, _Event]], results: list[Result]) -> None:
        """Applies events in one transaction (a lone event too: its inbox claim is the same one
        statement), or one transaction each if one fails."""
        try:
            took_effect = self.db.transact(lambda uow: self._apply_together(uow, [e for _, e in lane]))
        except (_BatchFailed, DBAPIError) as exc:
            if len(lane) > 1:  # one by one (a duplicate inbox key too): the failing event alone stays for redelivery
                for i, event in lane:
                    results[i] = self._apply_alone(event)
                return
            # The lone event's own failure: it stays for redelivery, not retried at once.
            (i, event), cause = lane[0], exc.__cause__ if isinstance(exc, _BatchFailed) else exc
            results[i] = self._failed(event, cause if isinstance(cause, Exception) else exc)
            return
        for i, event in lane:
            results[i] = event.envelope.id in took_effect
            took_effect.discard(event.envelope.id)  # a second copy in the batch is a repeat

    def _decode(self, message: bytes) -> _Event | None:
        envelope = envelope_pb2.EventEnvelope.FromString(message)
        entry = self.handlers.get(envelope.type)
        if entry is None:
            return None
        payload_type, fn = entry
        payload = payload_type()
        envelope.payload.Unpack(payload)
        return _Event(envelope, payload, fn)

    def _apply_together(self, uow: UnitOfWork, events: list[_Event]) -> set[str]:
        """Applies the events not yet in the inbox in one transaction; returns their ids."""
        now = utcnow()
        # One statement records the batch's ids and tells which are new (a repeat is left out).
        inbox = self.db.kit.inbox
        claimed = set(insert_many(uow.conn, inbox, [
            {"consumer": self.consumer, "event_id": event_id, "processed_at": now}
            for event_id in dict.fromkeys(e.envelope.id for e in events)],
            ignoring=("consumer", "event_id"), returning=inbox.c.event_id))
        fresh: dict[str, _Event] = {}
        for event in events:
            if event.envelope.id in claimed:
                fresh.setdefault(event.envelope.id, event)
        if not fresh:
            return set()
        for event_type, run in itertools.groupby(fresh.values(), key=lambda e: e.envelope.type):
            try:
                self._run_together(uow, event_type, list(run))
            except (Unavailable, DBAPIError):
                raise  # the database's own: retried by transact() (deadlocks) or held by the bus
            except Exception as exc:
                raise _BatchFailed from exc
        return set(fresh)

    def _apply_alone(self, event: _Event) -> Result:
        try:
            return handle_once(self.db, self.consumer, event.envelope.id, lambda uow: self._run(uow, event))
        except Unavailable:
            raise
        except Exception as exc:
            return self._failed(event, exc)

    def _failed(self, event: _Event, exc: Exception) -> Exception:
        log.error("consumer %s failed on %s %s", self.consumer, event.envelope.type, event.envelope.id, exc_info=exc)
        return exc

    def _run(self, uow: UnitOfWork, event: _Event) -> None:
        envelope = event.envelope
        parent = propagate.extract({"traceparent": envelope.traceparent, "tracestate": envelope.tracestate})
        with tracer.start_as_current_span(f"consume {envelope.type}", context=parent, kind=trace.SpanKind.CONSUMER):
            event.fn(uow, event.payload, envelope)

    def _run_together(self, uow: UnitOfWork, event_type: str, events: list[_Event]) -> None:
        """Consecutive events of one type: by its batch handler if it has one (with fewer statements
        than the one-event handler, even for one event), else one by one."""
        fn = self.batch_handlers.get(event_type)
        if fn is None:
            for event in events:
                self._run(uow, event)
            return
        links = [trace.Link(trace.get_current_span(propagate.extract(
            {"traceparent": e.envelope.traceparent, "tracestate": e.envelope.tracestate})).get_span_context())
            for e in events]
        with tracer.start_as_current_span(f"consume {event_type} x{len(events)}", links=links,
                                          kind=trace.SpanKind.CONSUMER):
            fn(uow, [(e.payload, e.envelope) for e in events])

    def _deliver(self, messages: list[bytes]) -> list[Outcome]:
        """The bus's side: what became of each message."""
        try:
            results = self.handle_batch(messages)
        except Unavailable:
            return [Outcome.HELD] * len(messages)
        return [Outcome.FAILED if isinstance(r, Exception) else Outcome.DONE for r in results]
