"""The segments service's tables. Every table is keyed by shop_id first. `member_facts` and
`member_orders` are a projection of the other services' events (segments never reads their
tables); windows ("trades within 30 days") are computed from the dated orders when a rule runs,
so they stay true as time passes with no new event."""

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

from services.kit.tables import kit_tables

metadata = MetaData()
kit = kit_tables(metadata)

# Each shop's time zone, from membership's ProgramChanged (days and months of the reports).
programs = Table(
    "programs",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("time_zone", String(64), nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

# One row per member: what rules compare. Lifetime figures are kept here; windowed ones come
# from member_orders.
member_facts = Table(
    "member_facts",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("member_id", String(32), primary_key=True),
    Column("left_at", DateTime),  # set when the member left: no rule selects them any more
    Column("joined_at", DateTime, nullable=False),
    Column("join_channel", SmallInteger, nullable=False),
    Column("referrer_member_id", String(32), nullable=False),
    Column("tier_level", Integer, nullable=False),
    Column("birth_month", SmallInteger),  # NULL: not consented (cleared when the member leaves)
    Column("points_balance", BigInteger, nullable=False),
    Column("first_purchase_at", DateTime),
    Column("last_purchase_at", DateTime),
    Column("last_activity_at", DateTime),
    Column("trades", Integer, nullable=False),  # completed, not fully refunded
    Column("spend_fen", BigInteger, nullable=False),  # completed spend less refunds
    Column("refunds", Integer, nullable=False),
    Column("referrals", Integer, nullable=False),
    Column("units", Integer, nullable=False),  # items bought in completed trades (连带率 = units / trades)
    Column("promoted_trades", Integer, nullable=False),  # completed trades with a coupon or campaign applied
    Column("updated_at", DateTime, nullable=False),
    Column("shares", Integer, nullable=False, server_default="0"),  # shares made (ActionRecorded SHARE)
    Column("gender", SmallInteger),  # membership's Gender as consented; NULL: not given
    Column("region", String(64)),  # as consented; NULL: not given
    Index("ix_member_facts_last_purchase", "shop_id", "last_purchase_at"),
    Index("ix_member_facts_joined", "shop_id", "joined_at"),
)

# Each completed order of a member (from OrderCompleted / OrderRefunded): the dated facts that
# windowed conditions count.
member_orders = Table(
    "member_orders",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("order_id", String(64), primary_key=True),
    Column("member_id", String(32), nullable=False),
    Column("completed_at", DateTime, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("refunded_fen", BigInteger, nullable=False),
    Column("refunds", Integer, nullable=False),
    Column("fully_refunded", Boolean, nullable=False),
    Column("units", Integer, nullable=False),
    Column("coupon_applied", Boolean, nullable=False),
    Column("campaign_applied", Boolean, nullable=False),
    Index("ix_member_orders_member", "shop_id", "member_id", "completed_at"),
)

# The categories each member bought (from the order lines OrderCompleted carries), with when last.
member_categories = Table(
    "member_categories",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("member_id", String(32), primary_key=True),
    Column("category_id", String(64), primary_key=True),
    Column("trades", Integer, nullable=False),
    Column("last_bought_at", DateTime, nullable=False),
    Index("ix_member_categories_category", "shop_id", "category_id"),
)

tags = Table(
    "tags",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("tag_id", String(32), primary_key=True),
    Column("name", String(30), nullable=False),
    Column("description", String(200), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("rule", Text),  # JSON of the rule tree of a rule-assigned tag; NULL: a manual tag
    Column("rule_applied_at", DateTime),
    Index("ux_tags_name", "shop_id", "name", unique=True),
)

member_tags = Table(
    "member_tags",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("tag_id", String(32), primary_key=True),
    Column("member_id", String(32), primary_key=True),
    Column("tagged_at", DateTime, nullable=False),
    Index("ix_member_tags_member", "shop_id", "member_id"),
)

# Saved segments (the predefined groups are built from each shop's settings, not stored here).
segments = Table(
    "segments",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("segment_id", String(32), primary_key=True),
    Column("name", String(60), nullable=False),
    Column("description", String(500), nullable=False),
    Column("rule", Text, nullable=False),  # JSON of the rule tree (rules.py)
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_segments_listing", "shop_id", "created_at", "segment_id"),
    Index("ux_segments_name", "shop_id", "name", unique=True),
)

# Each segment's size (saved and predefined alike): the last count of each shop-local day, kept
# by CountSegment and the daily snapshot job; the latest row is the segment's last_count.
segment_sizes = Table(
    "segment_sizes",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("segment_id", String(64), primary_key=True),
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD, shop-local
    Column("count", BigInteger, nullable=False),
    Column("counted_at", DateTime, nullable=False),
)

# A shop's windows and thresholds of the predefined groups (JSON; no row: the defaults).
group_settings = Table(
    "group_settings",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("settings", Text, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

# Each buyer's RFM scores (1-5, quintiles within the shop) and class at the shop's last recompute;
# members without a completed trade have no row.
rfm_scores = Table(
    "rfm_scores",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("member_id", String(32), primary_key=True),
    Column("recency", SmallInteger, nullable=False),
    Column("frequency", SmallInteger, nullable=False),
    Column("monetary", SmallInteger, nullable=False),
    Column("rfm_class", SmallInteger, nullable=False),
    Index("ix_rfm_scores_class", "shop_id", "rfm_class"),
)

# A shop's last RFM recompute: when, how many were scored, the quintile bounds (JSON).
rfm_runs = Table(
    "rfm_runs",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("computed_at", DateTime, nullable=False),
    Column("scored_members", BigInteger, nullable=False),
    Column("bounds", Text, nullable=False),
)
