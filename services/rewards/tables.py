"""The rewards service's tables. Every table is keyed by shop_id first. `members` and
`programs` are projections of membership's events (rewards never reads membership's tables)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

from services.kit.saga import saga_tables
from services.kit.tables import kit_tables

metadata = MetaData()
kit = kit_tables(metadata)
sagas = saga_tables(metadata)

# What rewards knows of each shop: its time zone (calendar months of limits, coupon validity days).
programs = Table(
    "programs",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("time_zone", String(64), nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

# What rewards knows of each member, from membership's events.
members = Table(
    "members",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("member_id", String(32), primary_key=True),
    Column("tier_level", Integer, nullable=False),
    Column("birth_month", SmallInteger),
    Column("joined_at", DateTime, nullable=False),
    Column("left_at", DateTime),
    Column("updated_at", DateTime, nullable=False),
)

rewards = Table(
    "rewards",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("reward_id", String(32), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("description", String(1000), nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("points_price", BigInteger, nullable=False),
    Column("cash_price_fen", BigInteger, nullable=False),
    Column("min_tier_level", Integer, nullable=False),
    Column("unlimited_stock", Boolean, nullable=False),
    Column("stock", BigInteger, nullable=False),  # never below zero (conditional updates)
    Column("redeemed", BigInteger, nullable=False),
    Column("limit_per_member", Integer, nullable=False),
    Column("monthly_limit_per_member", Integer, nullable=False),
    Column("start_at", DateTime),
    Column("end_at", DateTime),
    Column("spec", Text, nullable=False),  # JSON: the coupon, gift or virtual spec of its kind
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_rewards_listing", "shop_id", "created_at", "reward_id"),
)

# How many of a reward each member took: period "" is the lifetime, "YYYY-MM" a shop-local month.
usage = Table(
    "usage",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("reward_id", String(32), primary_key=True),
    Column("member_id", String(32), primary_key=True),
    Column("period", String(7), primary_key=True),
    Column("quantity", Integer, nullable=False),
)

redemptions = Table(
    "redemptions",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("redemption_id", String(32), primary_key=True),
    Column("member_id", String(32), nullable=False),
    Column("reward_id", String(32), nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("cash_fen", BigInteger, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("failure_reason", String(64), nullable=False),
    Column("month", String(7), nullable=False),  # the shop-local month whose limit it counts in
    Column("hold_id", String(64)),
    Column("payment_reference", String(128)),
    Column("payment_deadline", DateTime),
    Column("shipped", Boolean, nullable=False),
    Column("shipped_at", DateTime),
    Column("shipment_reference", String(128)),
    Column("cancel_reason", String(500), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("completed_at", DateTime),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_redemptions_member", "shop_id", "member_id", "created_at"),
    Index("ix_redemptions_awaiting", "state", "payment_deadline"),
)

# Virtual goods granted by a redemption (stored value, cards, free trials).
grants = Table(
    "grants",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("redemption_id", String(32), primary_key=True),
    Column("member_id", String(32), nullable=False),
    Column("reward_id", String(32), nullable=False),
    Column("spec", Text, nullable=False),  # JSON: the virtual spec at redemption
    Column("quantity", Integer, nullable=False),
    Column("valid_until", DateTime),
    Column("revoked", Boolean, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

coupons = Table(
    "coupons",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("coupon_id", String(32), primary_key=True),
    Column("member_id", String(32), nullable=False),
    Column("reward_id", String(32), nullable=False),
    Column("name", String(100), nullable=False),
    Column("face_value_fen", BigInteger, nullable=False),
    Column("threshold_fen", BigInteger, nullable=False),
    Column("valid_from", DateTime, nullable=False),
    Column("valid_until", DateTime, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("source", SmallInteger, nullable=False),
    # Issued once per (source, reference, member, ordinal): a redelivered event or a retried
    # issuance finds its coupons there.
    Column("source_reference", String(128), nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("order_id", String(64)),
    Column("issued_at", DateTime, nullable=False),
    Column("used_at", DateTime),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_coupons_once", "shop_id", "source", "source_reference", "member_id", "ordinal", unique=True),
    Index("ix_coupons_wallet", "shop_id", "member_id", "issued_at", "coupon_id"),
    Index("ix_coupons_due", "state", "valid_until"),
)

benefit_packs = Table(
    "benefit_packs",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("pack_id", String(32), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("trigger", SmallInteger, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("items", Text, nullable=False),  # JSON: [[reward_id, quantity], ...]
    Column("tier_levels", Text, nullable=False),  # JSON: [level, ...]; [] for every tier
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_benefit_packs_trigger", "trigger", "enabled"),
)

# One pack given to one member for one period. points_outcome: "" while points has yet to take
# the Earn, CREDITED once it did, or the reason points refused it (ACCOUNT_CLOSED).
pack_grants = Table(
    "pack_grants",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("grant_id", String(32), primary_key=True),
    Column("pack_id", String(32), nullable=False),
    Column("member_id", String(32), nullable=False),
    Column("trigger", SmallInteger, nullable=False),
    Column("period", String(32), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("points_outcome", String(32), nullable=False),
    Column("coupon_ids", Text, nullable=False),  # JSON list
    Column("granted_at", DateTime, nullable=False),
    # Sending the points again after points did not know the member: how often, and not before when.
    Column("points_attempts", Integer, nullable=False, server_default="0"),
    Column("points_retry_at", DateTime),
    Index("ix_pack_grants_once", "shop_id", "pack_id", "member_id", "period", unique=True),
    Index("ix_pack_grants_member", "shop_id", "member_id", "granted_at"),
    Index("ix_pack_grants_points_due", "points_outcome", "granted_at"),
)

# ----- the lottery (大转盘 / 九宫格) ------------------------------------------------------------------

lotteries = Table(
    "lotteries",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("lottery_id", String(32), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("style", SmallInteger, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("start_at", DateTime),
    Column("end_at", DateTime),
    Column("cost_points", BigInteger, nullable=False),
    Column("free_draws_per_month", Integer, nullable=False),
    Column("free_draw_tier_levels", Text, nullable=False),  # JSON: [level, ...]; [] for every tier
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

# A lottery's prize table, one row a slot. Stock changes only by conditional updates (never below
# zero); an UpdateLottery of the prizes replaces the rows.
lottery_prizes = Table(
    "lottery_prizes",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("lottery_id", String(32), primary_key=True),
    Column("prize_id", String(64), primary_key=True),
    Column("slot", Integer, nullable=False),
    Column("name", String(100), nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("reward_id", String(32), nullable=False),
    Column("probability_bp", Integer, nullable=False),
    Column("unlimited_stock", Boolean, nullable=False),
    Column("stock", BigInteger, nullable=False),
    Column("won", BigInteger, nullable=False),
)

# Free draws a member used of a lottery in a shop-local month ("YYYY-MM"): taken by a conditional
# update within the month's allowance.
lottery_chances = Table(
    "lottery_chances",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("lottery_id", String(32), primary_key=True),
    Column("member_id", String(32), primary_key=True),
    Column("period", String(7), primary_key=True),
    Column("used", Integer, nullable=False),
)

# One draw: accepted PENDING with its saga, COMPLETED with its prize (a snapshot of the slot won;
# a GIFT prize's shipment record, shipped = false until shipped), or FAILED with the reason.
lottery_draws = Table(
    "lottery_draws",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("draw_id", String(32), primary_key=True),
    Column("lottery_id", String(32), nullable=False),
    Column("member_id", String(32), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("free", Boolean, nullable=False),
    Column("month", String(7), nullable=False),
    Column("cost_points", BigInteger, nullable=False),
    Column("prize_id", String(64), nullable=False),
    Column("prize_name", String(100), nullable=False),
    Column("prize_kind", SmallInteger, nullable=False),  # 0 until drawn
    Column("points", BigInteger, nullable=False),
    Column("reward_id", String(32), nullable=False),
    Column("stock_taken", Boolean, nullable=False),  # whether the prize's stock was decremented
    Column("coupon_ids", Text, nullable=False),  # JSON list
    Column("points_credited", Boolean, nullable=False),
    Column("shipped", Boolean, nullable=False),
    Column("failure_reason", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("drawn_at", DateTime),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_lottery_draws_member", "shop_id", "member_id", "created_at"),
)

# Campaigns (营销活动). Their status is derived from the window, never stored. A coupon-after-order
# campaign issues once per order through the coupons' unique (source, reference "<campaign>/<order>").
campaigns = Table(
    "campaigns",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("campaign_id", String(32), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("audience", Text, nullable=False),  # JSON: {"kind", "tier_levels", "tag_ids", "segment_id"}
    Column("start_at", DateTime, nullable=False),
    Column("end_at", DateTime, nullable=False),
    Column("all_items", Boolean, nullable=False),
    Column("skus", Text, nullable=False),  # JSON list; [] with all_items
    Column("discount_permille", Integer, nullable=False),
    Column("cash_off_fen", BigInteger, nullable=False),
    Column("threshold_fen", BigInteger, nullable=False),
    Column("coupon_reward_id", String(32), nullable=False),
    Column("holdout_bp", Integer, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_campaigns_running", "shop_id", "end_at"),
)

# Each tier's discount (价格 in basis points of the list price), from membership's ProgramChanged;
# a shop without rows prices with the default ladder. changed_at: the event's, so an older event
# delivered late does not replace a newer ladder.
tier_discounts = Table(
    "tier_discounts",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("level", Integer, primary_key=True),
    Column("code", String(64), nullable=False),
    Column("discount_bp", Integer, nullable=False),
    Column("changed_at", DateTime, nullable=False),
)

# Members' completed orders, from membership's OrderCompleted (never from its tables): the facts a
# campaign's conversion is measured on. Written once per order (insert-or-ignore on the key), so a
# redelivered event counts nothing twice. refunded_at: set when the order was fully refunded after
# it completed (OrderRefunded), which takes it out of conversion; a redelivered OrderCompleted keeps it.
member_orders = Table(
    "member_orders",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("order_id", String(64), primary_key=True),
    Column("member_id", String(32), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("completed_at", DateTime, nullable=False),
    Column("refunded_at", DateTime),
    Index("ix_member_orders_completed", "shop_id", "completed_at"),
)

# Who carries which tag of the segments service, from its TagAssigned / TagRemoved events (never
# from its tables): the hot path of tag audiences. A row per (member, tag) ever named, `tagged`
# false once removed, `changed_at` the event's time, so an event delivered late (older than the
# row) changes nothing.
member_tags = Table(
    "member_tags",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("member_id", String(32), primary_key=True),
    Column("tag_id", String(64), primary_key=True),
    Column("tagged", Boolean, nullable=False),
    Column("changed_at", DateTime, nullable=False),
    Index("ix_member_tags_tag", "shop_id", "tag_id", "member_id"),
)

# Coupons issued to a segment's members, as a job with progress (IssueCouponsToSegment): the
# runner streams the segment from the segments service, skips the members up to `after_member_id`
# (those done before a restart), and records its progress with each batch's coupons. One runner
# at a time holds a job, until `lease_until` (renewed with each batch).
issuance_jobs = Table(
    "issuance_jobs",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("job_id", String(32), primary_key=True),
    Column("reward_id", String(32), nullable=False),
    Column("segment_id", String(64), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("members_seen", BigInteger, nullable=False),
    Column("issued", BigInteger, nullable=False),
    Column("skipped", BigInteger, nullable=False),
    Column("after_member_id", String(32), nullable=False),
    Column("failure_reason", String(64), nullable=False),
    Column("lease_owner", String(32)),
    Column("lease_until", DateTime),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_issuance_jobs_running", "state", "lease_until"),
)
