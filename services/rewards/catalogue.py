"""The catalogue (积分商城): rewards as the database keeps them, how much of one a member took,
and the operators' handlers that create, change and restock them. Stock changes only by a
delta in one conditional statement, so a restock never overwrites redemptions made meanwhile
and stock never goes below zero. (The lists live in offers.py.)"""

from __future__ import annotations

import secrets
from dataclasses import replace

from sqlalchemy import Connection, Row, insert, select, update

from services.kit.errors import FailedPrecondition, InvalidArgument, NotFound
from services.kit.storage import UnitOfWork
from services.kit.timeutil import utcnow
from services.rewards import reasons
from services.rewards.commands import catalogue as commands
from services.rewards.domain import MAX_STOCK, Reward, RewardKind, RewardStatus, Usage, spec_from_json, spec_to_json
from services.rewards.service import RewardsService
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


def usages_of(conn: Connection, shop_id: str, reward_ids: list[str], member_id: str, month: str) -> dict[str, Usage]:
    """usage_of for several rewards at once (a page of the member's list): one query, not one per reward."""
    if not reward_ids:
        return {}
    found: dict[str, dict[str, int]] = {}
    for reward_id, period, quantity in conn.execute(select(usage.c.reward_id, usage.c.period, usage.c.quantity).where(
            usage.c.shop_id == shop_id, usage.c.member_id == member_id, usage.c.reward_id.in_(reward_ids),
            usage.c.period.in_(["", month]))).all():
        found.setdefault(reward_id, {})[period] = quantity
    return {reward_id: Usage(lifetime=found.get(reward_id, {}).get("", 0),
                             this_month=found.get(reward_id, {}).get(month, 0)) for reward_id in reward_ids}


def new_reward_id() -> str:
    return "rw_" + secrets.token_hex(12)


def _columns(reward: Reward) -> dict[str, object]:
    """The row of a reward, but for its keys, `redeemed` and `created_at` (set once, by insert)."""
    return {"name": reward.name, "description": reward.description, "kind": int(reward.kind),
            "status": int(reward.status), "points_price": reward.points_price, "cash_price_fen": reward.cash_price_fen,
            "min_tier_level": reward.min_tier_level, "unlimited_stock": reward.unlimited_stock, "stock": reward.stock,
            "limit_per_member": reward.limit_per_member, "monthly_limit_per_member": reward.monthly_limit_per_member,
            "start_at": reward.start_at, "end_at": reward.end_at, "spec": spec_to_json(reward.spec),
            "updated_at": reward.updated_at}


def create_reward(service: RewardsService, uow: UnitOfWork, cmd: commands.CreateReward) -> Reward:
    reward = cmd.draft.to_reward(cmd.shop_id, new_reward_id(), utcnow())
    uow.conn.execute(insert(rewards).values(shop_id=reward.shop_id, reward_id=reward.reward_id, redeemed=0,
                                            created_at=reward.created_at, **_columns(reward)))
    return reward


def get_reward(service: RewardsService, query: commands.RewardQuery) -> Reward:
    return service.db.read(lambda conn: read_reward(conn, query.shop_id, query.reward_id))


def update_reward(service: RewardsService, uow: UnitOfWork, cmd: commands.UpdateReward) -> Reward:
    """The masked fields changed; the whole result must still be a reward Create would accept.
    Stock and `redeemed` are written by their own conditional statements, never from here."""
    stored = read_reward(uow.conn, cmd.shop_id, cmd.reward_id, for_update=True)
    draft = commands.apply_changes(commands.draft_of(stored), cmd.changes)
    commands.draft_violations(draft).raise_if_any()
    changed = draft.to_reward(stored.shop_id, stored.reward_id, utcnow(), redeemed=stored.redeemed,
                              created_at=stored.created_at)
    values = _columns(changed)
    del values["stock"]
    uow.conn.execute(update(rewards).where(rewards.c.shop_id == cmd.shop_id, rewards.c.reward_id == cmd.reward_id)
                     .values(**values))
    return replace(changed, stock=stored.stock)


def add_stock(service: RewardsService, uow: UnitOfWork, cmd: commands.AddStock) -> Reward:
    """Stock plus a signed delta in one conditional update: a removal of more than is left is
    refused (OUT_OF_STOCK), whatever redemptions took meanwhile."""
    where = (rewards.c.shop_id == cmd.shop_id, rewards.c.reward_id == cmd.reward_id)
    done = uow.conn.execute(update(rewards).where(*where, rewards.c.stock + cmd.delta >= 0,
                                                  rewards.c.stock + cmd.delta <= MAX_STOCK)
                            .values(stock=rewards.c.stock + cmd.delta, updated_at=utcnow()))
    reward = read_reward(uow.conn, cmd.shop_id, cmd.reward_id)  # NOT_FOUND for another shop's id
    if done.rowcount == 0 and cmd.delta > 0:
        raise InvalidArgument([("delta", f"stock would pass {MAX_STOCK} (it is {reward.stock})")])
    if done.rowcount == 0:
        raise FailedPrecondition(f"reward {cmd.reward_id} has {reward.stock} in stock; cannot take {-cmd.delta}",
                                 reason=reasons.OUT_OF_STOCK, subject=cmd.reward_id,
                                 metadata={"reward_id": cmd.reward_id, "stock": str(reward.stock)})
    return reward
