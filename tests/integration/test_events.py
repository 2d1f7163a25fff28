"""The event pipeline end to end on both backends: outbox rows written in the producer's transaction,
the relay publishing them on the bus (in-process for sqlite, Redis Streams for postgres), and a
consumer applying each event's effect exactly once through its inbox.

Every test gets its own producer name (hence its own stream) and consumer group, so tests sharing
the one Redis never see each other's messages."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.protobuf.message import Message
from loyalty.common.v1 import envelope_pb2
from loyalty.membership.v1 import events_pb2
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select

from services.kit.bus import Bus
from services.kit.events import BatchHandler, EventConsumer, EventHandler, OutboxRelay, Result, stream_name
from services.kit.redis_bus import RedisStreamsBus
from services.kit.storage import Database, UnitOfWork
from services.kit.tables import kit_tables
from tests.support.services import Backend

SHOP = "shop-events"
DEADLINE_SECONDS = 8.0

metadata = MetaData()
kit = kit_tables(metadata)
# Deliberately no unique key on event_id: an effect applied twice shows up as two rows.
effects = Table(
    "effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("value", String(64), nullable=False),
)


# ----- helpers ----------------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        time.sleep(0.02)


def apply_effect(uow: UnitOfWork, payload: Message, envelope: envelope_pb2.EventEnvelope) -> None:
    assert isinstance(payload, events_pb2.MemberLeft)
    uow.conn.execute(insert(effects), {"event_id": envelope.id, "value": payload.member_id})


def member_left(member_id: str) -> events_pb2.MemberLeft:
    return events_pb2.MemberLeft(shop_id=SHOP, member_id=member_id)


class ProbedConsumer(EventConsumer):
    """The real consumer, recording what each delivery came to: True (took effect), False (a
    repeat) or "error" (the handler raised, so the bus will deliver it again)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: list[bool | str] = []
        self._lock = threading.Lock()

    def handle_batch(self, messages: list[bytes]) -> list[Result]:
        results = super().handle_batch(messages)
        with self._lock:
            self.outcomes.extend("error" if isinstance(r, Exception) else r for r in results)
        return results


@dataclass
class Pipeline:
    backend: Backend
    producer: Database
    consumer_db: Database
    bus: Bus
    relay: OutboxRelay
    consumers: list[EventConsumer] = field(default_factory=list)
    relay_started: bool = False

    @property
    def stream(self) -> str:
        return stream_name(self.producer.service)

    def emit(self, *member_ids: str) -> list[str]:
        """Commits one transaction emitting a MemberLeft per member id; returns the event ids."""
        return self.producer.transact(lambda uow: uow.emit_many(SHOP, [member_left(m) for m in member_ids]))

    def consumer(self, handler: EventHandler = apply_effect, *, start: bool = True,
                 batch: BatchHandler | None = None) -> ProbedConsumer:
        consumer = ProbedConsumer(
            self.consumer_db,
            self.bus,
            consumer=f"testconsumer-{uuid.uuid4().hex[:8]}",
            producer=self.producer.service,
            handlers={events_pb2.MemberLeft: handler},
            batch_handlers={events_pb2.MemberLeft: batch} if batch else None,
        )
        self.consumers.append(consumer)
        if start:
            consumer.start()
        return consumer

    def start_relay(self) -> None:
        self.producer.on_events_committed = self.relay.wake
        self.relay.start()
        self.relay_started = True

    def effect_rows(self) -> list[tuple[str, str]]:
        query = select(effects.c.event_id, effects.c.value).order_by(effects.c.id)
        return [tuple(r) for r in self.consumer_db.read(lambda conn: conn.execute(query).all())]

    def outbox_rows(self) -> list:
        outbox = kit.outbox
        return self.producer.read(lambda conn: conn.execute(
            select(outbox.c.event_id, outbox.c.envelope, outbox.c.published_at).order_by(outbox.c.id)).all())

    def inbox_count(self, consumer: EventConsumer) -> int:
        query = select(func.count()).select_from(kit.inbox).where(kit.inbox.c.consumer == consumer.consumer)
        return self.consumer_db.read(lambda conn: conn.execute(query).scalar())

    def drained(self, consumer: EventConsumer) -> bool:
        """True when the consumer's group has read every message of the stream and acknowledged
        all of them (always, for the in-process bus, which delivers inside publish())."""
        if not isinstance(self.bus, RedisStreamsBus):
            return True
        groups = {g["name"].decode(): g for g in self.bus.client.xinfo_groups(self.stream)}
        group = groups.get(consumer.consumer)
        return group is not None and group["pending"] == 0 and group["lag"] == 0


@pytest.fixture
def pipeline(backend: Backend) -> Iterator[Pipeline]:
    producer_name = f"testproducer-{uuid.uuid4().hex[:8]}"
    # Each service owns its own database: the producer's and the consumer's are distinct.
    producer = Database(backend.database_url("testproducer"), service=producer_name, kit=kit, pool_size=4)
    consumer_db = Database(backend.database_url("testconsumer"), service="testconsumer", kit=kit, pool_size=4)
    metadata.create_all(producer.engine)
    metadata.create_all(consumer_db.engine)
    bus = backend.make_bus()
    p = Pipeline(backend, producer, consumer_db, bus, OutboxRelay(producer, bus, poll_seconds=0.2))
    try:
        yield p
    finally:
        for consumer in p.consumers:
            consumer.stop()
        if p.relay_started:
            p.relay.stop()
        bus.close()
        producer.dispose()
        consumer_db.dispose()


# ----- behaviours -------------------------------------------------------------------------------


def test_event_emitted_in_a_transaction_is_delivered_once_and_applied_once(pipeline: Pipeline) -> None:
    consumer = pipeline.consumer()
    pipeline.start_relay()  # woken by the commit, as in a running service

    (event_id,) = pipeline.emit("member-1")

    wait_until(lambda: pipeline.effect_rows() == [(event_id, "member-1")], "the effect is applied")
    wait_until(lambda: pipeline.drained(consumer), "the consumer acknowledged the stream")
    assert consumer.outcomes == [True]
    assert pipeline.effect_rows() == [(event_id, "member-1")]
    assert pipeline.inbox_count(consumer) == 1
    wait_until(lambda: pipeline.outbox_rows()[0].published_at is not None, "the row is marked sent")

    envelope = envelope_pb2.EventEnvelope.FromString(pipeline.outbox_rows()[0].envelope)
    assert (envelope.id, envelope.type, envelope.shop_id, envelope.producer) == (
        event_id, "loyalty.membership.v1.MemberLeft", SHOP, pipeline.producer.service)


def test_event_emitted_in_a_rolled_back_transaction_is_never_delivered(pipeline: Pipeline) -> None:
    consumer = pipeline.consumer()

    class WorkFailed(Exception):
        pass

    def work(uow: UnitOfWork) -> None:
        uow.emit(SHOP, member_left("rolled-back"))
        raise WorkFailed

    with pytest.raises(WorkFailed):
        pipeline.producer.transact(work)

    assert pipeline.outbox_rows() == []
    assert pipeline.relay.relay_once() == 0
    # A later committed event on the same stream: once it has been handled, anything published
    # before it would have been handled too.
    (marker,) = pipeline.emit("committed")
    assert pipeline.relay.relay_once() == 1
    wait_until(lambda: pipeline.effect_rows() == [(marker, "committed")], "the committed event is applied")
    wait_until(lambda: pipeline.drained(consumer), "the consumer acknowledged the stream")
    assert consumer.outcomes == [True]
    assert [r.event_id for r in pipeline.outbox_rows()] == [marker]


def test_handling_the_same_envelope_twice_applies_the_effect_once(pipeline: Pipeline) -> None:
    consumer = pipeline.consumer(start=False)
    (event_id,) = pipeline.emit("member-1")
    envelope = pipeline.outbox_rows()[0].envelope

    assert consumer.handle(envelope) is True
    assert consumer.handle(envelope) is False

    assert pipeline.effect_rows() == [(event_id, "member-1")]
    assert pipeline.inbox_count(consumer) == 1


def test_the_same_envelope_published_twice_on_the_bus_applies_the_effect_once(pipeline: Pipeline) -> None:
    consumer = pipeline.consumer()
    (event_id,) = pipeline.emit("member-1")
    envelope = pipeline.outbox_rows()[0].envelope

    # As a relay that crashed between publishing and marking the row would do.
    pipeline.bus.publish(pipeline.stream, [envelope])
    pipeline.bus.publish(pipeline.stream, [envelope])

    wait_until(lambda: len(consumer.outcomes) == 2, "both copies are delivered")
    wait_until(lambda: pipeline.drained(consumer), "the consumer acknowledged both copies")
    assert consumer.outcomes == [True, False]
    assert pipeline.effect_rows() == [(event_id, "member-1")]
    assert pipeline.inbox_count(consumer) == 1


def test_failing_handler_is_retried_and_the_effect_lands_exactly_once(pipeline: Pipeline) -> None:
    attempts: list[str] = []

    def fails_first_time(uow: UnitOfWork, payload: Message, envelope: envelope_pb2.EventEnvelope) -> None:
        attempts.append(envelope.id)
        apply_effect(uow, payload, envelope)  # written, then rolled back with the failed attempt
        if len(attempts) == 1:
            raise RuntimeError("transient failure in the consumer")

    consumer = pipeline.consumer(fails_first_time)
    (event_id,) = pipeline.emit("member-1")
    assert pipeline.relay.relay_once() == 1

    # Redis: the failed message stays pending until XAUTOCLAIM hands it out again (claim_idle_ms=500).
    wait_until(lambda: pipeline.effect_rows() == [(event_id, "member-1")], "the retried handler takes effect")
    wait_until(lambda: pipeline.drained(consumer), "the retried message is acknowledged")
    assert consumer.outcomes == ["error", True]
    assert attempts == [event_id, event_id]
    assert pipeline.effect_rows() == [(event_id, "member-1")]
    assert pipeline.inbox_count(consumer) == 1


def test_relay_marks_rows_published_and_a_second_relay_sends_nothing(pipeline: Pipeline) -> None:
    received: list[str] = []
    lock = threading.Lock()

    def record(message: bytes) -> None:
        with lock:
            received.append(envelope_pb2.EventEnvelope.FromString(message).id)

    pipeline.bus.subscribe(pipeline.stream, f"recorder-{uuid.uuid4().hex[:8]}", record)
    event_ids = pipeline.emit("member-1", "member-2") + pipeline.emit("member-3")
    assert all(r.published_at is None for r in pipeline.outbox_rows())

    assert pipeline.relay.relay_once() == 3
    assert [r.event_id for r in pipeline.outbox_rows()] == event_ids
    assert all(r.published_at is not None for r in pipeline.outbox_rows())
    wait_until(lambda: len(received) == 3, "the recorder has all three events")

    assert pipeline.relay.relay_once() == 0
    if isinstance(pipeline.bus, RedisStreamsBus):
        assert pipeline.bus.client.xlen(pipeline.stream) == 3
    assert received == event_ids  # in emit order, nothing sent twice


def test_relay_sends_a_backlog_in_batches_in_emit_order(pipeline: Pipeline) -> None:
    received: list[str] = []
    pipeline.bus.subscribe(pipeline.stream, f"recorder-{uuid.uuid4().hex[:8]}",
                           lambda message: received.append(envelope_pb2.EventEnvelope.FromString(message).id))
    consumer = pipeline.consumer()
    relay = OutboxRelay(pipeline.producer, pipeline.bus, batch=2)
    event_ids = [pipeline.emit(f"member-{i}")[0] for i in range(5)]

    assert [relay.relay_once() for _ in range(4)] == [2, 2, 1, 0]

    wait_until(lambda: len(received) == 5, "the recorder has all five events")
    assert received == event_ids
    wait_until(lambda: len(pipeline.effect_rows()) == 5, "all five events are applied")
    wait_until(lambda: pipeline.drained(consumer), "the consumer acknowledged the stream")
    # Five members: each member's events keep their order, different members' need not.
    assert sorted(pipeline.effect_rows()) == sorted((e, f"member-{i}") for i, e in enumerate(event_ids))
    assert consumer.outcomes == [True] * 5


def test_each_members_events_are_applied_in_the_order_they_were_emitted(pipeline: Pipeline) -> None:
    consumer = pipeline.consumer()
    members = [f"member-{i}" for i in range(6)]
    # One transaction, so that the relay sends them as one batch, split into lanes by member.
    event_ids = pipeline.emit(*[m for _ in range(5) for m in members])
    member_of = dict(zip(event_ids, [m for _ in range(5) for m in members], strict=True))
    assert pipeline.relay.relay_once() == len(event_ids)

    wait_until(lambda: len(pipeline.effect_rows()) == len(event_ids), "every event is applied")
    wait_until(lambda: pipeline.drained(consumer), "the consumer acknowledged the stream")
    applied = [event_id for event_id, _ in pipeline.effect_rows()]
    assert sorted(applied) == sorted(event_ids)
    for member in members:
        assert [e for e in applied if member_of[e] == member] == [e for e in event_ids if member_of[e] == member]
    assert consumer.outcomes == [True] * len(event_ids)


def test_one_failing_event_of_a_batch_does_not_hold_up_the_others(pipeline: Pipeline) -> None:
    attempts: list[str] = []

    def fails_once_for_member_3(uow: UnitOfWork, payload: Message, envelope: envelope_pb2.EventEnvelope) -> None:
        apply_effect(uow, payload, envelope)
        if payload.member_id == "member-3":
            attempts.append(envelope.id)
            if len(attempts) == 1:
                raise RuntimeError("transient failure in the consumer")

    consumer = pipeline.consumer(fails_once_for_member_3)
    event_ids = pipeline.emit(*[f"member-{i}" for i in range(10)])
    assert pipeline.relay.relay_once() == len(event_ids)

    wait_until(lambda: len(pipeline.effect_rows()) == len(event_ids), "every event is applied")
    wait_until(lambda: pipeline.drained(consumer), "the consumer acknowledged the stream")
    assert sorted(e for e, _ in pipeline.effect_rows()) == sorted(event_ids)  # each once
    assert attempts == [event_ids[3]] * len(attempts) and len(attempts) >= 2
    assert consumer.outcomes.count(True) == len(event_ids)
    assert pipeline.inbox_count(consumer) == len(event_ids)


def test_a_batch_handler_applies_runs_of_its_type_and_falls_back_to_one_by_one(pipeline: Pipeline) -> None:
    runs: list[list[str]] = []
    failing = {"member-2"}

    def together(uow: UnitOfWork, events: list[tuple[Message, envelope_pb2.EventEnvelope]]) -> None:
        runs.append([envelope.id for _, envelope in events])
        if failing & {payload.member_id for payload, _ in events}:
            raise RuntimeError("the batch fails")
        for payload, envelope in events:
            apply_effect(uow, payload, envelope)

    consumer = pipeline.consumer(batch=together, start=False)
    event_ids = pipeline.emit("member-1", "member-1", "member-1")
    messages = [row.envelope for row in pipeline.outbox_rows()]
    assert consumer.handle_batch(messages + messages[:1]) == [True, True, True, False]
    assert runs == [event_ids]  # one lane (one member): one run, in order; the repeat is not in it
    assert [e for e, _ in pipeline.effect_rows()] == event_ids

    # A failing run is applied by the per-event handler, one event a transaction.
    runs.clear()
    later = pipeline.emit("member-2", "member-2")
    messages = [row.envelope for row in pipeline.outbox_rows()][len(event_ids):]
    assert consumer.handle_batch(messages) == [True, True]
    assert runs == [later]
    assert [e for e, _ in pipeline.effect_rows()] == event_ids + later
    assert pipeline.inbox_count(consumer) == len(event_ids + later)


def test_a_batch_within_one_transaction_goes_whole_and_a_larger_one_is_spread_over_lanes(pipeline: Pipeline) -> None:
    runs: list[tuple[str, list[str]]] = []

    def together(uow: UnitOfWork, events: list[tuple[Message, envelope_pb2.EventEnvelope]]) -> None:
        runs.append((threading.current_thread().name, [envelope.id for _, envelope in events]))
        for payload, envelope in events:
            apply_effect(uow, payload, envelope)

    def alone(uow: UnitOfWork, payload: Message, envelope: envelope_pb2.EventEnvelope) -> None:
        together(uow, [(payload, envelope)])  # a run of one goes to the per-event handler

    members = [f"member-{i}" for i in range(6)] * 2
    event_ids = pipeline.emit(*members)
    member_of = dict(zip(event_ids, members, strict=True))
    messages = [row.envelope for row in pipeline.outbox_rows()]

    def consumer(per_transaction: int) -> EventConsumer:
        return EventConsumer(pipeline.consumer_db, pipeline.bus, consumer=f"lanes-{uuid.uuid4().hex[:8]}",
                             producer=pipeline.producer.service, handlers={events_pb2.MemberLeft: alone},
                             batch_handlers={events_pb2.MemberLeft: together}, workers=4,
                             per_transaction=per_transaction)

    # While the consumer keeps up, a batch is one transaction, in stream order.
    assert consumer(per_transaction=12).handle_batch(messages) == [True] * len(messages)
    assert [ids for _, ids in runs] == [event_ids]

    # A backlog's batch is spread over lanes by member, each lane in transactions of at most 3.
    runs.clear()
    spread = consumer(per_transaction=3)
    try:
        assert spread.handle_batch(messages) == [True] * len(messages)
    finally:
        spread.stop()
    assert sorted(e for _, ids in runs for e in ids) == sorted(event_ids)
    assert all(len(ids) <= 3 for _, ids in runs)
    for member in set(members):  # each member's events in order, all in one lane
        lanes = {thread for thread, ids in runs if any(member_of[e] == member for e in ids)}
        assert len(lanes) == 1
        applied = [e for _, ids in runs for e in ids if member_of[e] == member]
        assert applied == [e for e in event_ids if member_of[e] == member]
    if not pipeline.consumer_db.is_sqlite:  # SQLite takes one writer: one lane
        assert len({thread for thread, _ in runs}) > 1
