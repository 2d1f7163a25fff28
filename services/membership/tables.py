"""The membership service's tables. Every table is keyed by shop_id first."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

from services.kit.tables import BigId, kit_tables

metadata = MetaData()
kit = kit_tables(metadata)

programs = Table(
    "programs",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("time_zone", String(64), nullable=False),
    Column("require_follow", Boolean, nullable=False),
    Column("qualification_mode", SmallInteger, nullable=False),
    Column("downgrade_policy", SmallInteger, nullable=False),
    # The tier ladder as JSON: a handful of rows read and replaced as a whole.
    Column("tiers", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    # The join threshold's further parts, the join benefit and tier validity, as JSON (rules.py);
    # NULL: the defaults (no further parts, no benefit, tiers forever).
    Column("rules", Text),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("key_id", String(32), primary_key=True),
    Column("label", String(100), nullable=False),
    Column("created_at", DateTime, nullable=False),
)

# Keys whose member left: the transaction that erases the member's columns records the key here,
# and the key is destroyed in the key store right after it commits (or by the sweeper, after a
# crash in between; see data_keys.py). Only ids: nothing personal.
retired_keys = Table(
    "retired_keys",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("key_id", String(32), primary_key=True),
    Column("retired_at", DateTime, nullable=False),
)

members = Table(
    "members",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("member_id", String(32), primary_key=True),
    Column("status", SmallInteger, nullable=False),
    # Personal fields (PIPL): only what the buyer consented to, each encrypted with the key named
    # by key_id; all erased (NULL), and the key destroyed, when the member leaves.
    Column("key_id", String(32)),
    Column("buyer_hash", String(64)),
    Column("buyer_id_cipher", LargeBinary),
    Column("name_cipher", LargeBinary),
    Column("gender", SmallInteger, nullable=False, default=0),
    Column("phone_cipher", LargeBinary),
    Column("birthday_cipher", LargeBinary),
    Column("region_cipher", LargeBinary),
    Column("consent_fields", String(64), nullable=False, default=""),
    Column("consent_at", DateTime),
    Column("consent_revoked_at", DateTime),
    Column("join_channel", SmallInteger, nullable=False),
    Column("referrer_member_id", String(32)),
    Column("joined_at", DateTime, nullable=False),
    Column("left_at", DateTime),
    Column("tier_level", SmallInteger, nullable=False),
    Column("tier_since", DateTime, nullable=False),
    Column("cumulative_spend_fen", BigInteger, nullable=False),
    Column("trade_count", Integer, nullable=False),
    Column("first_completed_at", DateTime),
    # When the tier held expires and is re-qualified (lifecycle.py); NULL: never.
    Column("tier_expires_at", DateTime),
    Index("uq_members_buyer", "shop_id", "buyer_hash", unique=True),
    Index("ix_members_tier", "shop_id", "tier_level"),
    Index("ix_members_key", "shop_id", "key_id"),
    Index("ix_members_tier_expiry", "shop_id", "tier_expires_at"),
)

orders = Table(
    "orders",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("order_id", String(64), primary_key=True),
    # The buyer, by keyed hash (to match a member) and encrypted with the buyer's data key (to
    # show); both erased when the member leaves.
    Column("buyer_hash", String(64)),
    Column("key_id", String(32)),
    Column("buyer_id_cipher", LargeBinary),
    Column("member_id", String(32)),
    Column("amount_fen", BigInteger, nullable=False),
    Column("refunded_fen", BigInteger, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("paid_at", DateTime, nullable=False),
    Column("completed_at", DateTime),
    # Whether the trade counts toward the member's cumulative spend and trade count.
    Column("counted", Boolean, nullable=False),
    Column("points_rate_milli", Integer, nullable=False),
    # The order's optional details (lines, coupon / campaign applied) as JSON (order_details.py).
    Column("details", Text),
    Index("ix_orders_member", "shop_id", "member_id"),
    Index("ix_orders_key", "shop_id", "key_id"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("order_id", String(64), primary_key=True),
    Column("refund_id", String(64), primary_key=True),
    Column("amount_fen", BigInteger, nullable=False),
    Column("refunded_at", DateTime, nullable=False),
    # What the refund did to the member's tier, so that a retry under any request_id answers the
    # same (NULL: it changed nothing, or it was made before this was kept).
    Column("tier_level_after", SmallInteger),
)

tier_history = Table(
    "tier_history",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("shop_id", String(64), nullable=False),
    Column("member_id", String(32), nullable=False),
    Column("from_level", SmallInteger, nullable=False),
    Column("to_level", SmallInteger, nullable=False),
    Column("reason", SmallInteger, nullable=False),
    Column("note", String(500), nullable=False, default=""),
    Column("operator", String(100), nullable=False, default=""),
    Column("order_id", String(64), nullable=False, default=""),
    Column("changed_at", DateTime, nullable=False),
    Index("ix_tier_history_member", "shop_id", "member_id", "id"),
)

# Growth value (成长值), see growth.py. The member's balance (and when they last earned, for
# idle decay), apart from the members row so that growth writes lock nothing else of it.
growth_accounts = Table(
    "growth_accounts",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("member_id", String(32), primary_key=True),
    Column("balance", BigInteger, nullable=False),
    Column("last_earned_at", DateTime),
    # When idle decay last took its share (a month's idleness is counted once).
    Column("decayed_at", DateTime),
)

# Append-only: every change of a member's growth, with its source and reason.
growth_ledger = Table(
    "growth_ledger",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("shop_id", String(64), nullable=False),
    Column("member_id", String(32), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("source", SmallInteger, nullable=False),
    Column("reference", String(64), nullable=False, default=""),
    Column("reason", String(500), nullable=False, default=""),
    Column("operator", String(100), nullable=False, default=""),
    Column("balance_after", BigInteger, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Index("ix_growth_ledger_member", "shop_id", "member_id", "id"),
)

# Occurrences of a source counted against its caps: per day ("d:2026-11-26"), month ("m:2026-11"),
# ever ("all"), and per subject ("s:<subject>", so the same review never gives twice).
growth_counts = Table(
    "growth_counts",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("member_id", String(32), primary_key=True),
    Column("source", SmallInteger, primary_key=True),
    Column("period", String(80), primary_key=True),
    Column("count", Integer, nullable=False),
)

# A shop's growth rules, decay policy and milestones; no row: the defaults (growth_rules.py).
growth_settings = Table(
    "growth_settings",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("rules", Text, nullable=False),
    Column("decay_kind", SmallInteger, nullable=False),
    Column("decay_months", Integer, nullable=False),
    Column("decay_percent", Integer, nullable=False),
    Column("milestones", Text, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

# The spend growth an order gave, so that its refunds take back their share (once).
order_growth = Table(
    "order_growth",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("order_id", String(64), primary_key=True),
    Column("member_id", String(32), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("growth", BigInteger, nullable=False),
    Column("refunded_fen", BigInteger, nullable=False),
    Column("taken_back", BigInteger, nullable=False),
)

# Milestones a member reached: the unique row makes each one reached (and rewarded) once.
growth_milestones = Table(
    "growth_milestones",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("member_id", String(32), primary_key=True),
    Column("threshold", BigInteger, primary_key=True),
    Column("reached_at", DateTime, nullable=False),
)

# TierExpiring notices: one per member and expiry (what makes the job idempotent), listed for
# the shop by ListTierExpiryNotices.
tier_expiry_notices = Table(
    "tier_expiry_notices",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("shop_id", String(64), nullable=False),
    Column("member_id", String(32), nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("tier_level", SmallInteger, nullable=False),
    Column("expected_level", SmallInteger, nullable=False),
    Column("notified_at", DateTime, nullable=False),
    Index("uq_tier_expiry_notices", "shop_id", "member_id", "expires_at", unique=True),
    Index("ix_tier_expiry_notices_shop", "shop_id", "id"),
)

# The key store: a database of its own (LOYALTY_MEMBERSHIP_KEYS_DB_URL), so that a backup of the
# data above holds no key. A buyer's data key (crypto-shredding, see pii.py), wrapped by
# LOYALTY_PII_KEY; the member's personal fields and the buyer id on their orders are encrypted
# with it, and deleting the row makes every copy of them unreadable.
key_metadata = MetaData()

data_keys = Table(
    "data_keys",
    key_metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("key_id", String(32), primary_key=True),
    # HMAC of the buyer id (pii.PiiKeys.buyer_hash): one key per buyer of a shop.
    Column("buyer_hash", String(64), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    # Created, or last taken for a new row, at: a key no committed row uses an hour later is swept.
    Column("created_at", DateTime, nullable=False),
    # Seen in use by a committed member or order: the sweeper no longer looks at it.
    Column("in_use", Boolean, nullable=False, default=False),
    Index("uq_data_keys_buyer", "shop_id", "buyer_hash", unique=True),
)
