"""The points service's tables. Every table is keyed by shop_id first."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    text,
)

from services.kit.tables import BigId, kit_tables

metadata = MetaData()
kit = kit_tables(metadata)

programs = Table(
    "points_programs",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("time_zone", String(64), nullable=False),
    Column("expiry_policy", SmallInteger, nullable=False),
    Column("expiry_months", SmallInteger, nullable=False),
    Column("points_per_yuan", Integer, nullable=False),
    Column("leave_policy", SmallInteger, nullable=False),
    Column("daily_pool_points", BigInteger, nullable=False),
    Column("default_hold_ttl_seconds", Integer, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

earn_rules = Table(
    "earn_rules",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("action", SmallInteger, primary_key=True),
    Column("enabled", Boolean, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("cap_per_day", Integer, nullable=False),
    Column("cap_per_month", Integer, nullable=False),
    Column("cap_lifetime", Integer, nullable=False),
    Column("streak_days", Integer, nullable=False),
    Column("streak_bonus", BigInteger, nullable=False),
    Column("min_order_fen", BigInteger, nullable=False),
    Column("multipliers_apply", Boolean, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

multipliers = Table(
    "multipliers",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("multiplier_id", String(64), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("multiplier_milli", Integer, nullable=False),
    Column("day_of_month", SmallInteger, nullable=False),
    Column("weekday", SmallInteger, nullable=False),
    Column("birthday_window", SmallInteger, nullable=False),
    Column("start_at", DateTime),
    Column("end_at", DateTime),
    Column("actions", String(100), nullable=False),
    Column("created_at", DateTime, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("member_id", String(32), primary_key=True),
    Column("closed", Boolean, nullable=False),
    # available = Σ lots.remaining − debt = Σ ledger.amount; held = Σ ledger.held_delta.
    Column("available", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False),
    # Points a refund took back after they were spent; later earnings pay it off first.
    Column("debt", BigInteger, nullable=False),
    Column("lifetime_earned", BigInteger, nullable=False),
    Column("birth_month", SmallInteger),
    Column("birth_day", SmallInteger),
    Column("referrer_member_id", String(32)),
    Column("last_sign_in_day", String(10)),
    Column("sign_in_streak", Integer, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("shop_id", String(64), nullable=False),
    Column("member_id", String(32), nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("held_delta", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("action", SmallInteger, nullable=False),
    Column("rule_id", String(32), nullable=False),
    Column("multiplier_id", String(64), nullable=False),
    Column("redemption_id", String(64), nullable=False),
    Column("hold_id", String(32), nullable=False),
    Column("operator", String(100), nullable=False),
    Column("reason", String(500), nullable=False),
    Column("reference", String(100), nullable=False),
    Column("expires_at", DateTime),
    Column("created_at", DateTime, nullable=False),
    Index("ix_ledger_member", "shop_id", "member_id", "id"),
    Index("ix_ledger_shop_time", "shop_id", "created_at"),
)

# Each earning is a lot that expires on its own date (积分有效期); spends take the lots that
# expire first.
lots = Table(
    "lots",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("shop_id", String(64), nullable=False),
    Column("member_id", String(32), nullable=False),
    Column("entry_id", BigInteger, nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("earned_at", DateTime, nullable=False),
    Column("expires_at", DateTime),
    Index("ix_lots_member", "shop_id", "member_id", "expires_at"),
    Index("ix_lots_due", "expires_at", postgresql_where=text("remaining > 0"), sqlite_where=text("remaining > 0")),
)

holds = Table(
    "holds",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("hold_id", String(32), primary_key=True),
    Column("member_id", String(32), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("redemption_id", String(64), nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("settled_entry_id", BigInteger),
    Index("ix_holds_due", "expires_at", postgresql_where=text("status = 1"), sqlite_where=text("status = 1")),
)

# Which lots a hold took points from, so a release gives them back where they came from.
hold_lots = Table(
    "hold_lots",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("hold_id", String(32), primary_key=True),
    Column("lot_id", BigInteger, primary_key=True),
    Column("amount", BigInteger, nullable=False),
)

# How often a member earned by an action, per day / month / lifetime (for caps).
action_counts = Table(
    "action_counts",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("member_id", String(32), primary_key=True),
    Column("action", SmallInteger, primary_key=True),
    Column("period", String(12), primary_key=True),
    Column("count", Integer, nullable=False),
)

# Subjects an action already earned for (the reviewed order, the invited friend, the referee).
action_subjects = Table(
    "action_subjects",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("member_id", String(32), primary_key=True),
    Column("action", SmallInteger, primary_key=True),
    Column("subject", String(64), primary_key=True),
    Column("created_at", DateTime, nullable=False),
)

# What each purchase earned and on what terms, so refunds take back exactly their share.
order_earnings = Table(
    "order_earnings",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("order_id", String(64), primary_key=True),
    Column("member_id", String(32), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("points_per_yuan", Integer, nullable=False),
    Column("rate_milli", Integer, nullable=False),
    Column("multiplier_milli", Integer, nullable=False),
    Column("earned", BigInteger, nullable=False),
    Column("clawed_back", BigInteger, nullable=False),
)

pool_entries = Table(
    "daily_pool_entries",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("member_id", String(32), primary_key=True),
)

pool_settlements = Table(
    "daily_pool_settlements",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("participants", Integer, nullable=False),
    Column("points_each", BigInteger, nullable=False),
    Column("settled_at", DateTime, nullable=False),
)
