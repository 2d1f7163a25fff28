"""What rewards needs of the segments service: who carries which tag (a projection of segments'
tag events, for tag audiences) and the jobs issuing coupons to a segment.

Revision ID: 0003_segments
Revises: 0002_grant_retry
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_segments"
down_revision = "0002_grant_retry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "member_tags",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(32), primary_key=True),
        sa.Column("tag_id", sa.String(64), primary_key=True),
        sa.Column("tagged", sa.Boolean, nullable=False),
        sa.Column("changed_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_member_tags_tag", "member_tags", ["shop_id", "tag_id", "member_id"])
    op.create_table(
        "issuance_jobs",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("reward_id", sa.String(32), nullable=False),
        sa.Column("segment_id", sa.String(64), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("members_seen", sa.BigInteger, nullable=False),
        sa.Column("issued", sa.BigInteger, nullable=False),
        sa.Column("skipped", sa.BigInteger, nullable=False),
        sa.Column("after_member_id", sa.String(32), nullable=False),
        sa.Column("failure_reason", sa.String(64), nullable=False),
        sa.Column("lease_owner", sa.String(32)),
        sa.Column("lease_until", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_issuance_jobs_running", "issuance_jobs", ["state", "lease_until"])


def downgrade() -> None:
    op.drop_table("issuance_jobs")
    op.drop_table("member_tags")
