"""Programs, API keys, members, orders, refunds, tier history, and the kit tables.

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
        "programs",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("require_follow", sa.Boolean, nullable=False),
        sa.Column("qualification_mode", sa.SmallInteger, nullable=False),
        sa.Column("downgrade_policy", sa.SmallInteger, nullable=False),
        sa.Column("tiers", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "members",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(32), primary_key=True),
        sa.Column("buyer_id", sa.String(64)),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("name", sa.String(100)),
        sa.Column("gender", sa.SmallInteger, nullable=False),
        sa.Column("phone_cipher", sa.LargeBinary),
        sa.Column("birth_year", sa.SmallInteger),
        sa.Column("birth_month", sa.SmallInteger),
        sa.Column("birth_day", sa.SmallInteger),
        sa.Column("region", sa.String(100)),
        sa.Column("consent_fields", sa.String(64), nullable=False),
        sa.Column("consent_at", sa.DateTime),
        sa.Column("consent_revoked_at", sa.DateTime),
        sa.Column("join_channel", sa.SmallInteger, nullable=False),
        sa.Column("referrer_member_id", sa.String(32)),
        sa.Column("joined_at", sa.DateTime, nullable=False),
        sa.Column("left_at", sa.DateTime),
        sa.Column("tier_level", sa.SmallInteger, nullable=False),
        sa.Column("tier_since", sa.DateTime, nullable=False),
        sa.Column("cumulative_spend_fen", sa.BigInteger, nullable=False),
        sa.Column("trade_count", sa.Integer, nullable=False),
        sa.Column("first_completed_at", sa.DateTime),
    )
    op.create_index("uq_members_buyer", "members", ["shop_id", "buyer_id"], unique=True)
    op.create_index("ix_members_tier", "members", ["shop_id", "tier_level"])
    op.create_table(
        "orders",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("buyer_id", sa.String(64)),
        sa.Column("member_id", sa.String(32)),
        sa.Column("amount_fen", sa.BigInteger, nullable=False),
        sa.Column("refunded_fen", sa.BigInteger, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("paid_at", sa.DateTime, nullable=False),
        sa.Column("completed_at", sa.DateTime),
        sa.Column("counted", sa.Boolean, nullable=False),
        sa.Column("points_rate_milli", sa.Integer, nullable=False),
    )
    op.create_index("ix_orders_member", "orders", ["shop_id", "member_id"])
    op.create_table(
        "refunds",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("refund_id", sa.String(64), primary_key=True),
        sa.Column("amount_fen", sa.BigInteger, nullable=False),
        sa.Column("refunded_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "tier_history",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(32), nullable=False),
        sa.Column("from_level", sa.SmallInteger, nullable=False),
        sa.Column("to_level", sa.SmallInteger, nullable=False),
        sa.Column("reason", sa.SmallInteger, nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("operator", sa.String(100), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("changed_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_tier_history_member", "tier_history", ["shop_id", "member_id", "id"])
    create_kit_tables(op)


def downgrade() -> None:
    for table in ("tier_history", "refunds", "orders", "members", "api_keys", "programs"):
        op.drop_table(table)
    for table in ("idempotency", "inbox", "outbox"):
        op.drop_table(table)
