"""Growth value (成长值): balances, the append-only growth ledger, cap counters, per-shop growth
settings (rules, decay, milestones), the spend growth of each order, and milestones reached.

Revision ID: 0005_growth
Revises: 0004_tier_lifecycle
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from services.kit.tables import BigId

revision = "0005_growth"
down_revision = "0004_tier_lifecycle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "growth_accounts",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(32), primary_key=True),
        sa.Column("balance", sa.BigInteger, nullable=False),
        sa.Column("last_earned_at", sa.DateTime),
        sa.Column("decayed_at", sa.DateTime),
    )
    op.create_table(
        "growth_ledger",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(32), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("source", sa.SmallInteger, nullable=False),
        sa.Column("reference", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("operator", sa.String(100), nullable=False),
        sa.Column("balance_after", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_growth_ledger_member", "growth_ledger", ["shop_id", "member_id", "id"])
    op.create_table(
        "growth_counts",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(32), primary_key=True),
        sa.Column("source", sa.SmallInteger, primary_key=True),
        sa.Column("period", sa.String(80), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_table(
        "growth_settings",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("rules", sa.Text, nullable=False),
        sa.Column("decay_kind", sa.SmallInteger, nullable=False),
        sa.Column("decay_months", sa.Integer, nullable=False),
        sa.Column("decay_percent", sa.Integer, nullable=False),
        sa.Column("milestones", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "order_growth",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(32), nullable=False),
        sa.Column("amount_fen", sa.BigInteger, nullable=False),
        sa.Column("growth", sa.BigInteger, nullable=False),
        sa.Column("refunded_fen", sa.BigInteger, nullable=False),
        sa.Column("taken_back", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "growth_milestones",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(32), primary_key=True),
        sa.Column("threshold", sa.BigInteger, primary_key=True),
        sa.Column("reached_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    for table in ("growth_milestones", "order_growth", "growth_settings", "growth_counts"):
        op.drop_table(table)
    op.drop_index("ix_growth_ledger_member", table_name="growth_ledger")
    op.drop_table("growth_ledger")
    op.drop_table("growth_accounts")
