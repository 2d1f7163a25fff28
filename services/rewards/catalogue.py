"""The catalogue (积分商城): rewards as the database keeps them, and how much of one a member took.
(The operators' create/update/restock handlers join these reads here.)"""

from __future__ import annotations

from sqlalchemy import Connection, Row, select

from services.kit.errors import NotFound
from services.rewards import reasons
from services.rewards.domain import Reward, RewardKind, RewardStatus, Usage, spec_from_json
from services.rewards.tables import rewards, usage


def row_to_reward(row: Row) -> Reward:
    kind = RewardKind(row.kind)
    return Reward(
        shop_id=row.shop_id, reward_id=row.reward_id, name=row.name, description=row.description, kind=kind,
        status=RewardStatus(row.status), points_price=row.points_price, cash_price_fen=row.cash_price_fen,
        min_tier_level=row.min_tier_level, unlimited_stock=row.unlimited_stock, stock=row.stock,
        redeemed=row.redeemed, limit_per_member=row.limit_per_member,
        monthly_limit_per_member=row.monthly_limit_per_member, start_at=row.start_at, end_at=row.end_at,
        spec=spec_from_json(kind, row.spec), created_at=row.created_at, updated_at=row.updated_at)


def no_reward(shop_id: str, reward_id: str) -> NotFound:
    return NotFound(f"no reward {reward_id} in shop {shop_id}", reason=reasons.REWARD_NOT_FOUND,
                    metadata={"reward_id": reward_id})


def read_reward(conn: Connection, shop_id: str, reward_id: str, *, for_update: bool = False) -> Reward:
    """The shop's reward, or NOT_FOUND (another shop's id too)."""
    query = select(rewards).where(rewards.c.shop_id == shop_id, rewards.c.reward_id == reward_id)
    row = conn.execute(query.with_for_update() if for_update else query).first()
    if row is None:
        raise no_reward(shop_id, reward_id)
    return row_to_reward(row)


def usage_of(conn: Connection, shop_id: str, reward_id: str, member_id: str, month: str) -> Usage:
    """How many of the reward the member took in their lifetime and in `month` ("YYYY-MM")."""
    rows = dict(conn.execute(select(usage.c.period, usage.c.quantity).where(
        usage.c.shop_id == shop_id, usage.c.reward_id == reward_id, usage.c.member_id == member_id,
        usage.c.period.in_(["", month]))).all())
    return Usage(lifetime=rows.get("", 0), this_month=rows.get(month, 0))
