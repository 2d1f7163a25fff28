"""The operators' lotteries (大转盘 / 九宫格): each with its prize table, one row a slot. A
table is checked whole on every change (lottery_domain's rules, and here that each COUPON or
GIFT prize names a reward of that kind in the shop's catalogue), also while the lottery runs;
new prizes replace the table, each with the stock the operator gave. (Draws live in lottery.py.)"""

from __future__ import annotations

import json
import secrets
from dataclasses import replace

from sqlalchemy import Connection, Row, delete, insert, select, update

from services.kit.errors import FailedPrecondition, NotFound
from services.kit.storage import UnitOfWork
from services.kit.timeutil import utcnow
from services.rewards import catalogue, reasons
from services.rewards.commands import lottery as commands
from services.rewards.domain import RewardKind
from services.rewards.lottery_domain import Lottery, LotteryStyle, Prize, PrizeKind
from services.rewards.service import RewardsService
from services.rewards.tables import lotteries, lottery_prizes

REWARD_KIND_OF = {PrizeKind.COUPON: RewardKind.COUPON, PrizeKind.GIFT: RewardKind.GIFT}


def no_lottery(shop_id: str, lottery_id: str) -> NotFound:
    return NotFound(f"no lottery {lottery_id} in shop {shop_id}", reason=reasons.LOTTERY_NOT_FOUND,
                    metadata={"lottery_id": lottery_id})


def _row_to_prize(row: Row) -> Prize:
    return Prize(prize_id=row.prize_id, name=row.name, kind=PrizeKind(row.kind), probability_bp=row.probability_bp,
                 points=row.points, reward_id=row.reward_id, unlimited_stock=row.unlimited_stock, stock=row.stock,
                 won=row.won)


def prizes_of(conn: Connection, shop_id: str, lottery_ids: list[str]) -> dict[str, tuple[Prize, ...]]:
    found: dict[str, list[Prize]] = {lottery_id: [] for lottery_id in lottery_ids}
    for row in conn.execute(select(lottery_prizes).where(lottery_prizes.c.shop_id == shop_id,
                                                         lottery_prizes.c.lottery_id.in_(lottery_ids))
                            .order_by(lottery_prizes.c.lottery_id, lottery_prizes.c.slot)).all():
        found[row.lottery_id].append(_row_to_prize(row))
    return {lottery_id: tuple(prizes) for lottery_id, prizes in found.items()}


def _row_to_lottery(row: Row, prizes: tuple[Prize, ...]) -> Lottery:
    return Lottery(shop_id=row.shop_id, lottery_id=row.lottery_id, name=row.name, style=LotteryStyle(row.style),
                   prizes=prizes, enabled=row.enabled, start_at=row.start_at, end_at=row.end_at,
                   cost_points=row.cost_points, free_draws_per_month=row.free_draws_per_month,
                   free_draw_tier_levels=tuple(json.loads(row.free_draw_tier_levels)), created_at=row.created_at,
                   updated_at=row.updated_at)


def read_lottery(conn: Connection, shop_id: str, lottery_id: str) -> Lottery:
    """The shop's lottery with its prize table, or NOT_FOUND (another shop's id too)."""
    row = conn.execute(select(lotteries).where(lotteries.c.shop_id == shop_id,
                                               lotteries.c.lottery_id == lottery_id)).first()
    if row is None:
        raise no_lottery(shop_id, lottery_id)
    return _row_to_lottery(row, prizes_of(conn, shop_id, [lottery_id])[lottery_id])


def _check_rewards(conn: Connection, lottery: Lottery) -> None:
    """Every COUPON prize names a coupon reward of the shop's catalogue, every GIFT prize a gift."""
    for i, prize in enumerate(lottery.prizes):
        wanted = REWARD_KIND_OF.get(prize.kind)
        if wanted is None:
            continue
        reward = catalogue.read_reward(conn, lottery.shop_id, prize.reward_id)  # NOT_FOUND: another shop's
        if reward.kind is not wanted:
            raise FailedPrecondition(
                f"prize {i} is a {prize.kind.name} prize but reward {reward.reward_id} is a {reward.kind.name.lower()}",
                reason=reasons.PRIZE_REWARD_MISMATCH, subject=f"reward/{reward.reward_id}",
                metadata={"reward_id": reward.reward_id, "prize": str(i)})


def _lottery_values(lottery: Lottery) -> dict[str, object]:
    return {"name": lottery.name, "style": int(lottery.style), "enabled": lottery.enabled,
            "start_at": lottery.start_at, "end_at": lottery.end_at, "cost_points": lottery.cost_points,
            "free_draws_per_month": lottery.free_draws_per_month,
            "free_draw_tier_levels": json.dumps(sorted(set(lottery.free_draw_tier_levels))),
            "updated_at": lottery.updated_at}


def _write_prizes(conn: Connection, lottery: Lottery) -> None:
    conn.execute(insert(lottery_prizes), [
        {"shop_id": lottery.shop_id, "lottery_id": lottery.lottery_id, "prize_id": p.prize_id, "slot": i,
         "name": p.name, "kind": int(p.kind), "points": p.points, "reward_id": p.reward_id,
         "probability_bp": p.probability_bp, "unlimited_stock": p.unlimited_stock,
         "stock": 0 if p.unlimited_stock else p.stock, "won": p.won} for i, p in enumerate(lottery.prizes)])


def create_lottery(service: RewardsService, uow: UnitOfWork, cmd: commands.CreateLottery) -> Lottery:
    now = utcnow()
    lottery = replace(cmd.lottery, shop_id=cmd.shop_id, lottery_id="lt_" + secrets.token_hex(12),
                      prizes=tuple(replace(p, won=0) for p in cmd.lottery.prizes), created_at=now, updated_at=now)
    _check_rewards(uow.conn, lottery)
    uow.conn.execute(insert(lotteries).values(shop_id=lottery.shop_id, lottery_id=lottery.lottery_id,
                                              created_at=now, **_lottery_values(lottery)))
    _write_prizes(uow.conn, lottery)
    return read_lottery(uow.conn, cmd.shop_id, lottery.lottery_id)


def update_lottery(service: RewardsService, uow: UnitOfWork, cmd: commands.UpdateLottery) -> Lottery:
    """The masked fields changed, the result checked whole like a new lottery (a running
    lottery's prize table too). New prizes replace the table, each with the stock given; a prize
    kept (same prize_id) keeps its count of wins (its rows locked first, so no draw counts a win
    between this read and the replacement)."""
    if "prizes" in cmd.changes:
        uow.conn.execute(select(lottery_prizes.c.prize_id).where(
            lottery_prizes.c.shop_id == cmd.shop_id, lottery_prizes.c.lottery_id == cmd.lottery_id).with_for_update())
    stored = read_lottery(uow.conn, cmd.shop_id, cmd.lottery_id)
    changed = replace(stored, **cmd.changes, updated_at=utcnow())  # type: ignore[arg-type]
    if "prizes" in cmd.changes:
        won = {p.prize_id: p.won for p in stored.prizes}
        changed = replace(changed, prizes=tuple(replace(p, won=won.get(p.prize_id, 0)) for p in changed.prizes))
    commands.CreateLottery(cmd.shop_id, changed)  # every rule of a new lottery
    _check_rewards(uow.conn, changed)
    uow.conn.execute(update(lotteries).where(lotteries.c.shop_id == cmd.shop_id,
                                             lotteries.c.lottery_id == cmd.lottery_id)
                     .values(**_lottery_values(changed)))
    if "prizes" in cmd.changes:
        uow.conn.execute(delete(lottery_prizes).where(lottery_prizes.c.shop_id == cmd.shop_id,
                                                      lottery_prizes.c.lottery_id == cmd.lottery_id))
        _write_prizes(uow.conn, changed)
    return read_lottery(uow.conn, cmd.shop_id, cmd.lottery_id)


def list_lotteries(service: RewardsService, shop_id: str, limit: int, after: str | None) -> list[Lottery]:
    query = select(lotteries).where(lotteries.c.shop_id == shop_id)
    if after is not None:
        query = query.where(lotteries.c.lottery_id > after)

    def read(conn: Connection) -> list[Lottery]:
        rows = conn.execute(query.order_by(lotteries.c.lottery_id).limit(limit)).all()
        prizes = prizes_of(conn, shop_id, [r.lottery_id for r in rows])
        return [_row_to_lottery(r, prizes[r.lottery_id]) for r in rows]

    return service.db.read(read)
