"""The health watcher on a real Redis: a consumer group that falls behind its stream is logged
once as behind (events and seconds), and once again when it has caught up."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health
from loyalty.common.v1 import envelope_pb2
from loyalty.membership.v1 import events_pb2
from sqlalchemy import MetaData

from services.kit.events import EventConsumer, OutboxRelay
from services.kit.redis_bus import RedisStreamsBus
from services.kit.server import HealthWatcher, RunningService, ServiceApp
from services.kit.storage import Database
from services.kit.tables import kit_tables
from tests.backends import wait_until

REDIS_URL = os.environ.get("LOYALTY_TEST_REDIS_URL", "")
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="needs Redis: run through scripts/test-backends.sh")
metadata = MetaData()
kit = kit_tables(metadata)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningService]:
    db = Database(f"sqlite:///{tmp_path / 'watched.db'}", service="watched", kit=kit)
    metadata.create_all(db.engine)
    bus = RedisStreamsBus(REDIS_URL, block_ms=100)
    consumer = EventConsumer(db, bus, consumer=f"watched-{uuid.uuid4().hex[:8]}",
                             producer=f"producer-{uuid.uuid4().hex[:8]}", handlers={events_pb2.MemberLeft: _ignore})
    app = ServiceApp(name="watched", full_name="test.Watched", db=db, servicer=None,
                     add_to_server=lambda *_: None, consumers=[consumer])
    yield RunningService(app=app, server=grpc.server(futures.ThreadPoolExecutor(1)), port=0,
                         health=health.HealthServicer(), relay=OutboxRelay(db, bus), bus=bus, serving=True)
    consumer.stop()
    bus.close()
    db.dispose()


def _ignore(*_: object) -> None:
    return None


def test_a_consumer_group_falling_behind_is_logged_once_and_its_catching_up_once(
    running: RunningService, caplog: pytest.LogCaptureFixture
) -> None:
    (consumer,) = running.app.consumers
    # Events of a type the consumer ignores: handling them is only acknowledging them.
    running.bus.publish(consumer.stream, [envelope_pb2.EventEnvelope(
        id=uuid.uuid4().hex, type="loyalty.test.v1.Ignored").SerializeToString() for _ in range(3)])
    watcher = HealthWatcher(running, interval=0.05, lag_interval=0.1, lag_warning_seconds=0.5)
    with caplog.at_level(logging.WARNING, logger="loyalty.server"):
        watcher.start()
        try:
            wait_until(lambda: any("behind" in r.getMessage() for r in caplog.records), "the lag is logged")
            consumer.start()
            wait_until(lambda: any("caught up" in r.getMessage() for r in caplog.records), "catching up is logged")
        finally:
            watcher.stop()
    lines = [r for r in caplog.records if r.name == "loyalty.server"]
    assert len(lines) == 2
    behind = lines[0]
    assert behind.events_behind == 3 and behind.seconds_behind >= 0.5 and behind.group == consumer.consumer

