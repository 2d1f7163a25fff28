"""The kit's own tables, added to each service's metadata: every service database has an
outbox, an inbox and an idempotency record of its own."""

from __future__ import annotations

from dataclasses import dataclass

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


def create_kit_tables(op) -> None:  # noqa: ANN001 - alembic's op proxy has no public type
    """Creates the kit tables in a service's first migration. These definitions are frozen at
    that revision: a later change to kit_tables() needs a migration of its own in every service."""
    metadata = MetaData()
    kit_tables(metadata)
    metadata.create_all(op.get_bind())
