"""When a pack grant's points are next sent to points (a member points does not know yet is tried
again later, with backoff, so such grants never hold up newer ones).

Revision ID: 0002_grant_retry
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_grant_retry"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pack_grants") as batch:
        batch.add_column(sa.Column("points_attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("points_retry_at", sa.DateTime))


def downgrade() -> None:
    with op.batch_alter_table("pack_grants") as batch:
        batch.drop_column("points_retry_at")
        batch.drop_column("points_attempts")
