"""The kit's own tables, added to each service's metadata: every service database has an
outbox, an inbox and an idempotency record of its own. kit_tables() is their current shape;
create_kit_tables() is the frozen shape each service's first migration created."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    text,
)

# SQLite only auto-increments INTEGER PRIMARY KEY columns.
BigId = BigInteger().with_variant(Integer(), "sqlite")


@dataclass(frozen=True)
class KitTables:
    outbox: Table
    inbox: Table
    idempotency: Table


def kit_tables(metadata: MetaData) -> KitTables:
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False),
        Column("shop_id", String(64), nullable=False),
        Column("event_type", String(128), nullable=False),
        Column("envelope", LargeBinary, nullable=False),
        Column("created_at", DateTime, nullable=False),
        Column("published_at", DateTime),
        Index(
            "ix_outbox_unpublished",
            "id",
            postgresql_where=text("published_at IS NULL"),
            sqlite_where=text("published_at IS NULL"),
        ),
        Index("ix_outbox_published_at", "published_at"),
    )
    inbox = Table(
        "inbox",
        metadata,
        Column("consumer", String(64), primary_key=True),
        Column("event_id", String(36), primary_key=True),
        Column("processed_at", DateTime, nullable=False),
        Index("ix_inbox_processed_at", "processed_at"),
    )
    idempotency = Table(
        "idempotency",
        metadata,
        Column("shop_id", String(64), primary_key=True),
        Column("method", String(64), primary_key=True),
        Column("request_id", String(128), primary_key=True),
        Column("fingerprint", String(64), nullable=False),
        Column("response", LargeBinary, nullable=False),
        # Whom the stored response is about (a member), so it can be erased with their data.
        Column("subject", String(64), nullable=False, default=""),
        Column("created_at", DateTime, nullable=False),
        Index("ix_idempotency_created_at", "created_at"),
        Index("ix_idempotency_subject", "shop_id", "subject"),
    )
    return KitTables(outbox=outbox, inbox=inbox, idempotency=idempotency)


def create_kit_tables(op: Any) -> None:
    """Creates the kit tables as they were at every service's first migration (kit schema 1).
    Frozen: never edit it. A later change to kit_tables() is an ordinary migration in each
    service's history (op.add_column, op.create_index …), checked by tests/integration/test_kit_schema.py."""
    op.create_table(
        "outbox",
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False),
        Column("shop_id", String(64), nullable=False),
        Column("event_type", String(128), nullable=False),
        Column("envelope", LargeBinary, nullable=False),
        Column("created_at", DateTime, nullable=False),
        Column("published_at", DateTime),
    )
    op.create_index("ix_outbox_unpublished", "outbox", ["id"], postgresql_where=text("published_at IS NULL"),
                    sqlite_where=text("published_at IS NULL"))
    op.create_index("ix_outbox_published_at", "outbox", ["published_at"])
    op.create_table(
        "inbox",
        Column("consumer", String(64), primary_key=True),
        Column("event_id", String(36), primary_key=True),
        Column("processed_at", DateTime, nullable=False),
    )
    op.create_index("ix_inbox_processed_at", "inbox", ["processed_at"])
    op.create_table(
        "idempotency",
        Column("shop_id", String(64), primary_key=True),
        Column("method", String(64), primary_key=True),
        Column("request_id", String(128), primary_key=True),
        Column("fingerprint", String(64), nullable=False),
        Column("response", LargeBinary, nullable=False),
        Column("subject", String(64), nullable=False),
        Column("created_at", DateTime, nullable=False),
    )
    op.create_index("ix_idempotency_created_at", "idempotency", ["created_at"])
    op.create_index("ix_idempotency_subject", "idempotency", ["shop_id", "subject"])
