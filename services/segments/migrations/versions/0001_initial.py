"""Programs and member facts (projections), member orders and categories, tags, segments, segment sizes, the
predefined groups' settings, and the kit tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from services.kit.tables import create_kit_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "programs",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "member_facts",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(32), primary_key=True),
        sa.Column("left_at", sa.DateTime),
        sa.Column("joined_at", sa.DateTime, nullable=False),
        sa.Column("join_channel", sa.SmallInteger, nullable=False),
        sa.Column("referrer_member_id", sa.String(32), nullable=False),
        sa.Column("tier_level", sa.Integer, nullable=False),
        sa.Column("birth_month", sa.SmallInteger),
        sa.Column("points_balance", sa.BigInteger, nullable=False),
        sa.Column("first_purchase_at", sa.DateTime),
        sa.Column("last_purchase_at", sa.DateTime),
        sa.Column("last_activity_at", sa.DateTime),
        sa.Column("trades", sa.Integer, nullable=False),
        sa.Column("spend_fen", sa.BigInteger, nullable=False),
        sa.Column("refunds", sa.Integer, nullable=False),
        sa.Column("referrals", sa.Integer, nullable=False),
        sa.Column("units", sa.Integer, nullable=False),
        sa.Column("promoted_trades", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_member_facts_last_purchase", "member_facts", ["shop_id", "last_purchase_at"])
    op.create_index("ix_member_facts_joined", "member_facts", ["shop_id", "joined_at"])
    op.create_table(
        "member_orders",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(32), nullable=False),
        sa.Column("completed_at", sa.DateTime, nullable=False),
        sa.Column("amount_fen", sa.BigInteger, nullable=False),
        sa.Column("refunded_fen", sa.BigInteger, nullable=False),
        sa.Column("refunds", sa.Integer, nullable=False),
        sa.Column("fully_refunded", sa.Boolean, nullable=False),
        sa.Column("units", sa.Integer, nullable=False),
        sa.Column("coupon_applied", sa.Boolean, nullable=False),
        sa.Column("campaign_applied", sa.Boolean, nullable=False),
    )
    op.create_index("ix_member_orders_member", "member_orders", ["shop_id", "member_id", "completed_at"])
    op.create_table(
        "member_categories",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(32), primary_key=True),
        sa.Column("category_id", sa.String(64), primary_key=True),
        sa.Column("trades", sa.Integer, nullable=False),
        sa.Column("last_bought_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_member_categories_category", "member_categories", ["shop_id", "category_id"])
    op.create_table(
        "tags",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("tag_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(30), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ux_tags_name", "tags", ["shop_id", "name"], unique=True)
    op.create_table(
        "member_tags",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("tag_id", sa.String(32), primary_key=True),
        sa.Column("member_id", sa.String(32), primary_key=True),
        sa.Column("tagged_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_member_tags_member", "member_tags", ["shop_id", "member_id"])
    op.create_table(
        "segments",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("segment_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(60), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_segments_listing", "segments", ["shop_id", "created_at", "segment_id"])
    op.create_table(
        "segment_sizes",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("segment_id", sa.String(64), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("counted_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "group_settings",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("settings", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    create_kit_tables(op)


def downgrade() -> None:
    raise NotImplementedError("the first revision is not undone; drop the database instead")
