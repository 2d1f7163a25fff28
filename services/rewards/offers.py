"""ListRewards: the shop's catalogue for operators, or what one member can redeem now. A member's
view judges each reward with domain.judge against rewards' own projection of the member (their
tier, whether they left) and their usage in the shop-local month, never asking membership.
Pages run in (created_at, reward_id) order; the token is the last reward listed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, or_, select

from services.kit.timeutil import utcnow
from services.rewards import members
from services.rewards.catalogue import row_to_reward, usages_of
from services.rewards.commands.catalogue import ListRewards
from services.rewards.domain import MemberStanding, Reward, RewardStatus, Usage, Verdict, judge, month_of
from services.rewards.service import RewardsService
from services.rewards.tables import rewards

# A member's page of redeemable rewards may skip rewards the SQL could not rule out (their
# limits); past this many rows read, the page ends short with a token, as AIP-158 allows.
MAX_SCAN = 1000
OPERATOR_VERDICT = Verdict()
NO_USAGE = Usage()


@dataclass(frozen=True)
class Offer:
    reward: Reward
    verdict: Verdict


@dataclass(frozen=True)
class Page:
    offers: list[Offer]
    next_after: tuple[str, str] | None  # the cursor of the next page, None on the last


def _cursor(reward: Reward) -> tuple[str, str]:
    assert reward.created_at is not None
    return reward.created_at.isoformat(), reward.reward_id


def _rows(conn: Connection, q: ListRewards, after: tuple[datetime, str] | None, limit: int,
          member: MemberStanding | None, now: datetime) -> list[Reward]:
    c = rewards.c
    query = select(rewards).where(c.shop_id == q.shop_id)
    if q.kind is not None:
        query = query.where(c.kind == int(q.kind))
    if after is not None:
        query = query.where(or_(c.created_at > after[0], and_(c.created_at == after[0], c.reward_id > after[1])))
    if q.member_id:
        # Withdrawn rewards are the operators' history, not an offer, even one to explain.
        query = query.where(c.status != int(RewardStatus.ARCHIVED))
    if q.member_id and not q.include_unavailable:
        # What judge would refuse anyway, ruled out by the database (limits are judged after).
        assert member is not None
        query = query.where(
            c.status == int(RewardStatus.ACTIVE), c.min_tier_level <= member.tier_level,
            or_(c.start_at.is_(None), c.start_at <= now), or_(c.end_at.is_(None), c.end_at > now),
            or_(c.unlimited_stock.is_(True), c.stock >= 1))
    return [row_to_reward(row) for row in conn.execute(query.order_by(c.created_at, c.reward_id).limit(limit))]


def list_rewards(service: RewardsService, q: ListRewards) -> Page:
    after = (datetime.fromisoformat(q.after[0]), q.after[1]) if q.after else None

    def read(conn: Connection) -> Page:
        if not q.member_id:
            found = _rows(conn, q, after, q.limit + 1, None, utcnow())
            page = [Offer(r, OPERATOR_VERDICT) for r in found[:q.limit]]
            return Page(page, _cursor(found[q.limit - 1]) if len(found) > q.limit else None)
        return _member_page(service, conn, q, after)

    return service.db.read(read)


def _member_page(service: RewardsService, conn: Connection, q: ListRewards,
                 after: tuple[datetime, str] | None) -> Page:
    member = members.standing(conn, q.shop_id, q.member_id)
    known = member is not None and not member.left
    if not known and not q.include_unavailable:
        return Page([], None)  # nothing is redeemable by someone who is not a member
    now = utcnow()
    month = month_of(now, service.zones.get(q.shop_id, conn))
    collected: list[Offer] = []
    scanned = 0
    batch_size = max(q.limit + 1, 50)
    while True:
        batch = _rows(conn, q, after, batch_size, member, now)
        usage = usages_of(conn, q.shop_id, [r.reward_id for r in batch], q.member_id, month) if known else {}
        for reward in batch:
            verdict = judge(reward, member, usage.get(reward.reward_id, NO_USAGE), now)
            if verdict.redeemable or q.include_unavailable:
                collected.append(Offer(reward, verdict))
                if len(collected) > q.limit:
                    return Page(collected[:q.limit], _cursor(collected[q.limit - 1].reward))
        scanned += len(batch)
        if len(batch) < batch_size:
            return Page(collected, None)
        last = batch[-1]
        assert last.created_at is not None
        after = (last.created_at, last.reward_id)
        if scanned >= MAX_SCAN:
            return Page(collected, _cursor(last))
