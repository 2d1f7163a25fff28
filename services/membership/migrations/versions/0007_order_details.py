"""An order's optional details (lines with SKU, category and quantity; coupon / campaign applied).

Revision ID: 0007_order_details
Revises: 0006_refund_answer
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_order_details"
down_revision = "0006_refund_answer"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("details", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("details")
