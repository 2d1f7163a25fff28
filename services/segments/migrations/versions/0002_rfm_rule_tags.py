"""RFM scores and runs, rule-assigned tags, shares / gender / region facts, unique segment names.

Revision ID: 0002_rfm_rule_tags
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_rfm_rule_tags"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("member_facts") as batch:
        batch.add_column(sa.Column("shares", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("gender", sa.SmallInteger))
        batch.add_column(sa.Column("region", sa.String(64)))
    with op.batch_alter_table("tags") as batch:
        batch.add_column(sa.Column("rule", sa.Text))
        batch.add_column(sa.Column("rule_applied_at", sa.DateTime))
    op.create_index("ux_segments_name", "segments", ["shop_id", "name"], unique=True)
    op.create_table(
        "rfm_scores",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(32), primary_key=True),
        sa.Column("recency", sa.SmallInteger, nullable=False),
        sa.Column("frequency", sa.SmallInteger, nullable=False),
        sa.Column("monetary", sa.SmallInteger, nullable=False),
        sa.Column("rfm_class", sa.SmallInteger, nullable=False),
    )
    op.create_index("ix_rfm_scores_class", "rfm_scores", ["shop_id", "rfm_class"])
    op.create_table(
        "rfm_runs",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("computed_at", sa.DateTime, nullable=False),
        sa.Column("scored_members", sa.BigInteger, nullable=False),
        sa.Column("bounds", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rfm_runs")
    op.drop_index("ix_rfm_scores_class", "rfm_scores")
    op.drop_table("rfm_scores")
    op.drop_index("ux_segments_name", "segments")
    with op.batch_alter_table("tags") as batch:
        batch.drop_column("rule_applied_at")
        batch.drop_column("rule")
    with op.batch_alter_table("member_facts") as batch:
        batch.drop_column("region")
        batch.drop_column("gender")
        batch.drop_column("shares")
