"""SQLAlchemy 2 on a SQLite file or PostgreSQL, chosen by URL, with short explicit
transactions. A unit of work commits the change, its outbox rows and its idempotency record
together, and runs after-commit actions (cache invalidation, relay wake-up) only once it held."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message
from loyalty.common.v1 import envelope_pb2
from opentelemetry import propagate
from sqlalchemy import Connection, create_engine, event, insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from services.kit.tables import KitTables
from services.kit.timeutil import to_timestamp, utcnow

log = logging.getLogger("loyalty.storage")
T = TypeVar("T")

_RETRYABLE_PG_CODES = {"40001", "40P01"}  # serialization failure, deadlock detected


class UnitOfWork:
    """One database transaction: its connection, the events it emits, what to do after commit."""

    def __init__(self, conn: Connection, db: Database):
        self.conn = conn
        self.db = db
        self._after_commit: list[Callable[[], None]] = []
        self.emitted = 0

    def emit(self, shop_id: str, payload: Message) -> str:
        """Writes an event to the outbox in this transaction; returns its id."""
        return self.emit_many(shop_id, [payload])[0]

    def emit_many(self, shop_id: str, payloads: list[Message]) -> list[str]:
        """Writes events to the outbox in this transaction with one statement."""
        if not payloads:
            return []
        now = utcnow()
        occurred_at = to_timestamp(now)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        rows = []
        for payload in payloads:
            event_id = str(uuid.uuid4())
            envelope = envelope_pb2.EventEnvelope(
                id=event_id,
                type=payload.DESCRIPTOR.full_name,
                shop_id=shop_id,
                occurred_at=occurred_at,
                traceparent=carrier.get("traceparent", ""),
                tracestate=carrier.get("tracestate", ""),
                producer=self.db.service,
            )
            packed = AnyProto()
            packed.Pack(payload)
            envelope.payload.CopyFrom(packed)
            rows.append(
                {
                    "event_id": event_id,
                    "shop_id": shop_id,
                    "event_type": envelope.type,
                    "envelope": envelope.SerializeToString(),
                    "created_at": now,
                }
            )
        self.conn.execute(insert(self.db.kit.outbox), rows)
        self.emitted += len(rows)
        return [row["event_id"] for row in rows]

    def after_commit(self, action: Callable[[], None]) -> None:
        self._after_commit.append(action)


class Database:
    """A service's own database."""

    def __init__(self, url: str, *, service: str, kit: KitTables, pool_size: int = 16):
        self.url = url
        self.service = service
        self.kit = kit
        self.is_sqlite = url.startswith("sqlite")
        self.on_events_committed: Callable[[], None] | None = None
        self.engine = self._make_engine(url, pool_size)

    @staticmethod
    def _make_engine(url: str, pool_size: int) -> Engine:
        if url.startswith("sqlite"):
            engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_timeout=30)

            @event.listens_for(engine, "connect")
            def _sqlite_connect(dbapi_conn, _record):  # noqa: ANN001
                # Autocommit at the driver: we issue BEGIN ourselves (IMMEDIATE for writes, so
                # two writers queue on the lock instead of failing on upgrade).
                dbapi_conn.isolation_level = None
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            @event.listens_for(engine, "begin")
            def _sqlite_begin(conn: Connection) -> None:
                write = conn.get_execution_options().get("loyalty_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

            return engine
        return create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_recycle=1800,
            pool_timeout=30,
        )

    def transact(self, work: Callable[[UnitOfWork], T], *, attempts: int = 4) -> T:
        """Runs `work` in one write transaction, retrying on deadlocks, serialization failures
        and lost connections (a restarted PostgreSQL)."""
        for attempt in range(1, attempts + 1):
            try:
                with self.engine.connect() as conn:
                    conn.execution_options(loyalty_write=True)
                    uow = UnitOfWork(conn, self)
                    with conn.begin():
                        result = work(uow)
                break
            except DBAPIError as exc:
                if attempt == attempts or not self._retryable(exc):
                    raise
                log.warning("retrying transaction after %s", type(exc.orig).__name__)
                time.sleep(0.01 * 2**attempt)
        for action in uow._after_commit:
            try:
                action()
            except Exception:  # an after-commit action must never undo a committed answer
                log.exception("after-commit action failed")
        if uow.emitted and self.on_events_committed is not None:
            self.on_events_committed()
        return result

    def read(self, work: Callable[[Connection], T]) -> T:
        """Runs `work` in a read-only transaction."""
        for attempt in (1, 2):
            try:
                with self.engine.connect() as conn, conn.begin():
                    return work(conn)
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    def _retryable(self, exc: DBAPIError) -> bool:
        if exc.connection_invalidated:
            return True
        if self.is_sqlite:
            return isinstance(exc, OperationalError) and "locked" in str(exc.orig)
        return getattr(exc.orig, "pgcode", None) in _RETRYABLE_PG_CODES

    def dispose(self) -> None:
        self.engine.dispose()
