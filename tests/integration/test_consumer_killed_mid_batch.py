"""A consumer killed in the middle of a batch, on a real Redis and PostgreSQL: another consumer
takes over what it left, and every order is earned exactly once, each member's in order, even
with events delivered twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message
from loyalty.common.v1 import envelope_pb2
from loyalty.membership.v1 import events_pb2
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select

from services.kit.events import EventConsumer, stream_name
from services.kit.redis_bus import RedisStreamsBus
from services.kit.storage import Database, UnitOfWork
from services.kit.tables import kit_tables
from tests.backends import wait_until
from tests.support.services import Backend

PG_URL = os.environ.get("LOYALTY_TEST_PG_URL", "")
REDIS_URL = os.environ.get("LOYALTY_TEST_REDIS_URL", "")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not (PG_URL and REDIS_URL), reason="needs PostgreSQL and Redis: run through "
                                                                   "scripts/test-backends.sh")

SHOP = "shop-killed"
MEMBERS = [f"member-{i}" for i in range(8)]

metadata = MetaData()
kit = kit_tables(metadata)
# No unique key: an order earned twice shows up as two rows.
earned = Table(
    "earned",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("member_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
)


def record(uow: UnitOfWork, payload: Message, envelope: envelope_pb2.EventEnvelope) -> None:
    assert isinstance(payload, events_pb2.OrderCompleted)
    uow.conn.execute(insert(earned), {"event_id": envelope.id, "member_id": payload.member_id,
                                      "seq": int(payload.order_id.rsplit("-", 1)[1])})


# The same consumer in another process, hanging inside the batch that holds `hang_at`: killed, it
# leaves that batch pending (with some of its lanes committed), as a crashed service would.
CHILD = """
import pathlib, sys, threading
from loyalty.membership.v1 import events_pb2
from services.kit.redis_bus import RedisStreamsBus
from services.kit.events import EventConsumer
from services.kit.storage import Database
from tests.integration.test_consumer_killed_mid_batch import kit, record
db_url, redis_url, producer, group, hang_at, marker = sys.argv[1:7]
def record_or_hang(uow, payload, envelope):
    if payload.order_id == hang_at:
        pathlib.Path(marker).write_text("handling")
        threading.Event().wait()
    record(uow, payload, envelope)
db = Database(db_url, service="killed-child", kit=kit, pool_size=8)
EventConsumer(db, RedisStreamsBus(redis_url), consumer=group, producer=producer,
              handlers={events_pb2.OrderCompleted: record_or_hang}).start()
threading.Event().wait()
"""


def order(member_id: str, seq: int) -> bytes:
    payload = AnyProto()
    payload.Pack(events_pb2.OrderCompleted(shop_id=SHOP, order_id=f"{member_id}-{seq}", member_id=member_id,
                                           amount_fen=100))
    return envelope_pb2.EventEnvelope(id=str(uuid.uuid4()), type="loyalty.membership.v1.OrderCompleted",
                                      shop_id=SHOP, payload=payload, producer="membership").SerializeToString()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    backend = Backend("postgres", REDIS_URL, PG_URL, tmp_path)
    database = Database(backend.database_url("killed"), service="killed", kit=kit, pool_size=8)
    metadata.create_all(database.engine)
    yield database
    database.dispose()


def earned_rows(db: Database) -> list[tuple[str, str, int]]:
    query = select(earned.c.event_id, earned.c.member_id, earned.c.seq).order_by(earned.c.id)
    return [tuple(r) for r in db.read(lambda conn: conn.execute(query).all())]


def test_orders_a_consumer_was_killed_handling_are_earned_once_each_in_order(db: Database, tmp_path: Path) -> None:
    producer, group = f"killed-{uuid.uuid4().hex[:8]}", f"points-{uuid.uuid4().hex[:8]}"
    stream = stream_name(producer)
    bus = RedisStreamsBus(REDIS_URL)  # production defaults: takeover tied to a 3 s heartbeat
    first = [order(m, seq) for seq in range(5) for m in MEMBERS]
    second = [order(m, seq) for seq in range(5, 30) for m in MEMBERS]
    marker = tmp_path / "handling"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db.url), REDIS_URL, producer, group,
                              f"{MEMBERS[3]}-17", str(marker)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    live: EventConsumer | None = None
    try:
        wait_until(lambda: bus.client.get(bus.lease_key(stream, group)) is not None, "the child reads the stream")
        bus.publish(stream, first)
        wait_until(lambda: len(earned_rows(db)) == len(first), "the child earned the first orders")
        # Two of them again (a relay that crashed before marking them sent), then the rest.
        bus.publish(stream, [first[3], first[10], *second])
        wait_until(marker.exists, "the child is inside the batch holding the order it hangs on")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    killed_at = time.monotonic()
    try:
        live = EventConsumer(db, bus, consumer=group, producer=producer,
                             handlers={events_pb2.OrderCompleted: record})
        live.start()
        wait_until(lambda: len(earned_rows(db)) >= len(first) + len(second), "every order is earned", timeout=30)
        took = time.monotonic() - killed_at
        wait_until(lambda: bus.lag(stream, group).events == 0, "the group caught up")
    finally:
        if live is not None:
            live.stop()
        bus.close()

    rows = earned_rows(db)
    ids = [envelope_pb2.EventEnvelope.FromString(m).id for m in first + second]
    assert sorted(event_id for event_id, _, _ in rows) == sorted(ids)  # each order once
    for member in MEMBERS:
        assert [seq for _, m, seq in rows if m == member] == list(range(30))  # in the order completed
    inbox = kit.inbox
    assert db.read(lambda conn: conn.execute(select(func.count()).select_from(inbox)
                                             .where(inbox.c.consumer == group)).scalar()) == len(ids)
    assert took < 15, f"takeover took {took:.1f}s"
