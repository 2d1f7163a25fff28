"""Programs and members (projections), the catalogue, usage, redemptions, grants, coupons, the
saga tables and the kit tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from services.kit.saga import create_saga_tables
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
        "members",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(32), primary_key=True),
        sa.Column("tier_level", sa.Integer, nullable=False),
        sa.Column("birth_month", sa.SmallInteger),
        sa.Column("joined_at", sa.DateTime, nullable=False),
        sa.Column("left_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "rewards",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("reward_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(1000), nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("points_price", sa.BigInteger, nullable=False),
        sa.Column("cash_price_fen", sa.BigInteger, nullable=False),
        sa.Column("min_tier_level", sa.Integer, nullable=False),
        sa.Column("unlimited_stock", sa.Boolean, nullable=False),
        sa.Column("stock", sa.BigInteger, nullable=False),
        sa.Column("redeemed", sa.BigInteger, nullable=False),
        sa.Column("limit_per_member", sa.Integer, nullable=False),
        sa.Column("monthly_limit_per_member", sa.Integer, nullable=False),
        sa.Column("start_at", sa.DateTime),
        sa.Column("end_at", sa.DateTime),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_rewards_listing", "rewards", ["shop_id", "created_at", "reward_id"])
    op.create_table(
        "usage",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("reward_id", sa.String(32), primary_key=True),
        sa.Column("member_id", sa.String(32), primary_key=True),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("quantity", sa.Integer, nullable=False),
    )
    op.create_table(
        "redemptions",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("redemption_id", sa.String(32), primary_key=True),
        sa.Column("member_id", sa.String(32), nullable=False),
        sa.Column("reward_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("cash_fen", sa.BigInteger, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("failure_reason", sa.String(64), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("hold_id", sa.String(64)),
        sa.Column("payment_reference", sa.String(128)),
        sa.Column("payment_deadline", sa.DateTime),
        sa.Column("shipped", sa.Boolean, nullable=False),
        sa.Column("shipped_at", sa.DateTime),
        sa.Column("shipment_reference", sa.String(128)),
        sa.Column("cancel_reason", sa.String(500), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("completed_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_redemptions_member", "redemptions", ["shop_id", "member_id", "created_at"])
    op.create_index("ix_redemptions_awaiting", "redemptions", ["state", "payment_deadline"])
    op.create_table(
        "grants",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("redemption_id", sa.String(32), primary_key=True),
        sa.Column("member_id", sa.String(32), nullable=False),
        sa.Column("reward_id", sa.String(32), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("valid_until", sa.DateTime),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "coupons",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("coupon_id", sa.String(32), primary_key=True),
        sa.Column("member_id", sa.String(32), nullable=False),
        sa.Column("reward_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("face_value_fen", sa.BigInteger, nullable=False),
        sa.Column("threshold_fen", sa.BigInteger, nullable=False),
        sa.Column("valid_from", sa.DateTime, nullable=False),
        sa.Column("valid_until", sa.DateTime, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("source", sa.SmallInteger, nullable=False),
        sa.Column("source_reference", sa.String(128), nullable=False),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("order_id", sa.String(64)),
        sa.Column("issued_at", sa.DateTime, nullable=False),
        sa.Column("used_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_coupons_once", "coupons", ["shop_id", "source", "source_reference", "member_id", "ordinal"],
                    unique=True)
    op.create_index("ix_coupons_wallet", "coupons", ["shop_id", "member_id", "issued_at", "coupon_id"])
    op.create_index("ix_coupons_due", "coupons", ["state", "valid_until"])
    op.create_table(
        "benefit_packs",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("pack_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("trigger", sa.SmallInteger, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("items", sa.Text, nullable=False),
        sa.Column("tier_levels", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_benefit_packs_trigger", "benefit_packs", ["trigger", "enabled"])
    op.create_table(
        "pack_grants",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("grant_id", sa.String(32), primary_key=True),
        sa.Column("pack_id", sa.String(32), nullable=False),
        sa.Column("member_id", sa.String(32), nullable=False),
        sa.Column("trigger", sa.SmallInteger, nullable=False),
        sa.Column("period", sa.String(32), nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("points_outcome", sa.String(32), nullable=False),
        sa.Column("coupon_ids", sa.Text, nullable=False),
        sa.Column("granted_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_pack_grants_once", "pack_grants", ["shop_id", "pack_id", "member_id", "period"], unique=True)
    op.create_index("ix_pack_grants_member", "pack_grants", ["shop_id", "member_id", "granted_at"])
    op.create_index("ix_pack_grants_points_due", "pack_grants", ["points_outcome", "granted_at"])
    create_saga_tables(op)
    create_kit_tables(op)
    _create_lottery_tables()
    op.create_table(
        "campaigns",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("campaign_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("audience", sa.Text, nullable=False),
        sa.Column("start_at", sa.DateTime, nullable=False),
        sa.Column("end_at", sa.DateTime, nullable=False),
        sa.Column("all_items", sa.Boolean, nullable=False),
        sa.Column("skus", sa.Text, nullable=False),
        sa.Column("discount_permille", sa.Integer, nullable=False),
        sa.Column("cash_off_fen", sa.BigInteger, nullable=False),
        sa.Column("threshold_fen", sa.BigInteger, nullable=False),
        sa.Column("coupon_reward_id", sa.String(32), nullable=False),
        sa.Column("holdout_bp", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_campaigns_running", "campaigns", ["shop_id", "end_at"])
    op.create_table(
        "tier_discounts",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("level", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("discount_bp", sa.Integer, nullable=False),
        sa.Column("changed_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "member_orders",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(32), nullable=False),
        sa.Column("amount_fen", sa.BigInteger, nullable=False),
        sa.Column("completed_at", sa.DateTime, nullable=False),
        sa.Column("refunded_at", sa.DateTime),
    )
    op.create_index("ix_member_orders_completed", "member_orders", ["shop_id", "completed_at"])



def downgrade() -> None:
    for table in ("member_orders", "tier_discounts", "campaigns", "lottery_draws", "lottery_chances",
                  "lottery_prizes", "lotteries"):
        op.drop_table(table)
    for table in ("pack_grants", "benefit_packs", "coupons", "grants", "redemptions", "usage", "rewards", "members",
                  "programs", "saga_steps", "sagas",
                  "idempotency", "inbox", "outbox"):
        op.drop_table(table)


def _create_lottery_tables() -> None:
    op.create_table(
        "lotteries",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("lottery_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("style", sa.SmallInteger, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("start_at", sa.DateTime),
        sa.Column("end_at", sa.DateTime),
        sa.Column("cost_points", sa.BigInteger, nullable=False),
        sa.Column("free_draws_per_month", sa.Integer, nullable=False),
        sa.Column("free_draw_tier_levels", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "lottery_prizes",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("lottery_id", sa.String(32), primary_key=True),
        sa.Column("prize_id", sa.String(64), primary_key=True),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("reward_id", sa.String(32), nullable=False),
        sa.Column("probability_bp", sa.Integer, nullable=False),
        sa.Column("unlimited_stock", sa.Boolean, nullable=False),
        sa.Column("stock", sa.BigInteger, nullable=False),
        sa.Column("won", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "lottery_chances",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("lottery_id", sa.String(32), primary_key=True),
        sa.Column("member_id", sa.String(32), primary_key=True),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("used", sa.Integer, nullable=False),
    )
    op.create_table(
        "lottery_draws",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("draw_id", sa.String(32), primary_key=True),
        sa.Column("lottery_id", sa.String(32), nullable=False),
        sa.Column("member_id", sa.String(32), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("free", sa.Boolean, nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("cost_points", sa.BigInteger, nullable=False),
        sa.Column("prize_id", sa.String(64), nullable=False),
        sa.Column("prize_name", sa.String(100), nullable=False),
        sa.Column("prize_kind", sa.SmallInteger, nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("reward_id", sa.String(32), nullable=False),
        sa.Column("stock_taken", sa.Boolean, nullable=False),
        sa.Column("coupon_ids", sa.Text, nullable=False),
        sa.Column("points_credited", sa.Boolean, nullable=False),
        sa.Column("shipped", sa.Boolean, nullable=False),
        sa.Column("failure_reason", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("drawn_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_lottery_draws_member", "lottery_draws", ["shop_id", "member_id", "created_at"])
