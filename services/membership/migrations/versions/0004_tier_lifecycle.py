"""Tier lifecycle and the join decision: each member's tier expiry (NULL for every existing
member: their tiers hold as before), the program's further rules (join threshold parts, join
benefit, tier validity; NULL: the defaults) and the TierExpiring notices.

Revision ID: 0004_tier_lifecycle
Revises: 0003_key_store
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from services.kit.tables import BigId

revision = "0004_tier_lifecycle"
down_revision = "0003_key_store"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("programs", sa.Column("rules", sa.Text))
    op.add_column("members", sa.Column("tier_expires_at", sa.DateTime))
    op.create_index("ix_members_tier_expiry", "members", ["shop_id", "tier_expires_at"])
    op.create_table(
        "tier_expiry_notices",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("tier_level", sa.SmallInteger, nullable=False),
        sa.Column("expected_level", sa.SmallInteger, nullable=False),
        sa.Column("notified_at", sa.DateTime, nullable=False),
    )
    op.create_index("uq_tier_expiry_notices", "tier_expiry_notices", ["shop_id", "member_id", "expires_at"],
                    unique=True)
    op.create_index("ix_tier_expiry_notices_shop", "tier_expiry_notices", ["shop_id", "id"])


def downgrade() -> None:
    op.drop_table("tier_expiry_notices")
    op.drop_index("ix_members_tier_expiry", table_name="members")
    with op.batch_alter_table("members") as batch:
        batch.drop_column("tier_expires_at")
    with op.batch_alter_table("programs") as batch:
        batch.drop_column("rules")
