"""The membership service's tables. Every table is keyed by shop_id first."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

from services.kit.tables import BigId, kit_tables

metadata = MetaData()
kit = kit_tables(metadata)

programs = Table(
    "programs",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("time_zone", String(64), nullable=False),
    Column("require_follow", Boolean, nullable=False),
    Column("qualification_mode", SmallInteger, nullable=False),
    Column("downgrade_policy", SmallInteger, nullable=False),
    # The tier ladder as JSON: a handful of rows read and replaced as a whole.
    Column("tiers", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("key_id", String(32), primary_key=True),
    Column("label", String(100), nullable=False),
    Column("created_at", DateTime, nullable=False),
)

members = Table(
    "members",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("member_id", String(32), primary_key=True),
    # Erased (NULL) when the member leaves.
    Column("buyer_id", String(64)),
    Column("status", SmallInteger, nullable=False),
    # Personal fields (PIPL): only what the buyer consented to; all erased on leaving.
    Column("name", String(100)),
    Column("gender", SmallInteger, nullable=False, default=0),
    Column("phone_cipher", LargeBinary),
    Column("birth_year", SmallInteger),
    Column("birth_month", SmallInteger),
    Column("birth_day", SmallInteger),
    Column("region", String(100)),
    Column("consent_fields", String(64), nullable=False, default=""),
    Column("consent_at", DateTime),
    Column("consent_revoked_at", DateTime),
    Column("join_channel", SmallInteger, nullable=False),
    Column("referrer_member_id", String(32)),
    Column("joined_at", DateTime, nullable=False),
    Column("left_at", DateTime),
    Column("tier_level", SmallInteger, nullable=False),
    Column("tier_since", DateTime, nullable=False),
    Column("cumulative_spend_fen", BigInteger, nullable=False),
    Column("trade_count", Integer, nullable=False),
    Column("first_completed_at", DateTime),
    Index("uq_members_buyer", "shop_id", "buyer_id", unique=True),
    Index("ix_members_tier", "shop_id", "tier_level"),
)

orders = Table(
    "orders",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("order_id", String(64), primary_key=True),
    Column("buyer_id", String(64)),
    Column("member_id", String(32)),
    Column("amount_fen", BigInteger, nullable=False),
    Column("refunded_fen", BigInteger, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("paid_at", DateTime, nullable=False),
    Column("completed_at", DateTime),
    # Whether the trade counts toward the member's cumulative spend and trade count.
    Column("counted", Boolean, nullable=False),
    Column("points_rate_milli", Integer, nullable=False),
    Index("ix_orders_member", "shop_id", "member_id"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("order_id", String(64), primary_key=True),
    Column("refund_id", String(64), primary_key=True),
    Column("amount_fen", BigInteger, nullable=False),
    Column("refunded_at", DateTime, nullable=False),
)

tier_history = Table(
    "tier_history",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("shop_id", String(64), nullable=False),
    Column("member_id", String(32), nullable=False),
    Column("from_level", SmallInteger, nullable=False),
    Column("to_level", SmallInteger, nullable=False),
    Column("reason", SmallInteger, nullable=False),
    Column("note", String(500), nullable=False, default=""),
    Column("operator", String(100), nullable=False, default=""),
    Column("order_id", String(64), nullable=False, default=""),
    Column("changed_at", DateTime, nullable=False),
    Index("ix_tier_history_member", "shop_id", "member_id", "id"),
)
