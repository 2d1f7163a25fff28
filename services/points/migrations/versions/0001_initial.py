"""Points programs, earn rules, multipliers, accounts, the ledger, lots, holds, caps, order
earnings, the daily pool, and the kit tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from services.kit.tables import BigId, create_kit_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(32), primary_key=True),
        sa.Column("closed", sa.Boolean, nullable=False),
        sa.Column("available", sa.BigInteger, nullable=False),
        sa.Column("held", sa.BigInteger, nullable=False),
        sa.Column("debt", sa.BigInteger, nullable=False),
        sa.Column("lifetime_earned", sa.BigInteger, nullable=False),
        sa.Column("birth_month", sa.SmallInteger),
        sa.Column("birth_day", sa.SmallInteger),
        sa.Column("referrer_member_id", sa.String(32)),
        sa.Column("last_sign_in_day", sa.String(10)),
        sa.Column("sign_in_streak", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "action_counts",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(32), primary_key=True),
        sa.Column("action", sa.SmallInteger, primary_key=True),
        sa.Column("period", sa.String(12), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_table(
        "action_subjects",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(32), primary_key=True),
        sa.Column("action", sa.SmallInteger, primary_key=True),
        sa.Column("subject", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "daily_pool_entries",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("member_id", sa.String(32), primary_key=True),
    )
    op.create_table(
        "daily_pool_settlements",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("participants", sa.Integer, nullable=False),
        sa.Column("points_each", sa.BigInteger, nullable=False),
        sa.Column("settled_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "earn_rules",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("action", sa.SmallInteger, primary_key=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("cap_per_day", sa.Integer, nullable=False),
        sa.Column("cap_per_month", sa.Integer, nullable=False),
        sa.Column("cap_lifetime", sa.Integer, nullable=False),
        sa.Column("streak_days", sa.Integer, nullable=False),
        sa.Column("streak_bonus", sa.BigInteger, nullable=False),
        sa.Column("min_order_fen", sa.BigInteger, nullable=False),
        sa.Column("multipliers_apply", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "hold_lots",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("hold_id", sa.String(32), primary_key=True),
        sa.Column("lot_id", sa.BigInteger, primary_key=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "holds",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("hold_id", sa.String(32), primary_key=True),
        sa.Column("member_id", sa.String(32), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("redemption_id", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("settled_entry_id", sa.BigInteger),
    )
    op.create_index("ix_holds_due", "holds", ["expires_at"],
                    postgresql_where=sa.text("status = 1"), sqlite_where=sa.text("status = 1"))
    op.create_table(
        "ledger",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("held_delta", sa.BigInteger, nullable=False),
        sa.Column("balance_after", sa.BigInteger, nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("action", sa.SmallInteger, nullable=False),
        sa.Column("rule_id", sa.String(32), nullable=False),
        sa.Column("multiplier_id", sa.String(64), nullable=False),
        sa.Column("redemption_id", sa.String(64), nullable=False),
        sa.Column("hold_id", sa.String(32), nullable=False),
        sa.Column("operator", sa.String(100), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("reference", sa.String(100), nullable=False),
        sa.Column("expires_at", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_ledger_member", "ledger", ["shop_id", "member_id", "id"])
    op.create_index("ix_ledger_shop_time", "ledger", ["shop_id", "created_at"])
    op.create_table(
        "lots",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(32), nullable=False),
        sa.Column("entry_id", sa.BigInteger, nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("remaining", sa.BigInteger, nullable=False),
        sa.Column("earned_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime),
    )
    op.create_index("ix_lots_member", "lots", ["shop_id", "member_id", "expires_at"])
    op.create_index("ix_lots_due", "lots", ["expires_at"],
                    postgresql_where=sa.text("remaining > 0"), sqlite_where=sa.text("remaining > 0"))
    op.create_table(
        "multipliers",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("multiplier_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("multiplier_milli", sa.Integer, nullable=False),
        sa.Column("day_of_month", sa.SmallInteger, nullable=False),
        sa.Column("weekday", sa.SmallInteger, nullable=False),
        sa.Column("birthday_window", sa.SmallInteger, nullable=False),
        sa.Column("start_at", sa.DateTime),
        sa.Column("end_at", sa.DateTime),
        sa.Column("actions", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "order_earnings",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(32), nullable=False),
        sa.Column("amount_fen", sa.BigInteger, nullable=False),
        sa.Column("points_per_yuan", sa.Integer, nullable=False),
        sa.Column("rate_milli", sa.Integer, nullable=False),
        sa.Column("multiplier_milli", sa.Integer, nullable=False),
        sa.Column("earned", sa.BigInteger, nullable=False),
        sa.Column("clawed_back", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "points_programs",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("expiry_policy", sa.SmallInteger, nullable=False),
        sa.Column("expiry_months", sa.SmallInteger, nullable=False),
        sa.Column("points_per_yuan", sa.Integer, nullable=False),
        sa.Column("leave_policy", sa.SmallInteger, nullable=False),
        sa.Column("daily_pool_points", sa.BigInteger, nullable=False),
        sa.Column("default_hold_ttl_seconds", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )

    create_kit_tables(op)


def downgrade() -> None:
    for table in (
        "points_programs",
        "order_earnings",
        "multipliers",
        "lots",
        "ledger",
        "holds",
        "hold_lots",
        "earn_rules",
        "daily_pool_settlements",
        "daily_pool_entries",
        "action_subjects",
        "action_counts",
        "accounts",
    ):
        op.drop_table(table)
    for table in ("idempotency", "inbox", "outbox"):
        op.drop_table(table)
