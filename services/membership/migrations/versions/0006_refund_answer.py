"""What a refund did to the member's tier, kept with the refund (a retry answers the same).

Revision ID: 0006_refund_answer
Revises: 0005_growth
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_refund_answer"
down_revision = "0005_growth"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("refunds") as batch:
        batch.add_column(sa.Column("tier_level_after", sa.SmallInteger))


def downgrade() -> None:
    with op.batch_alter_table("refunds") as batch:
        batch.drop_column("tier_level_after")
