"""Tiers: a member's tier (cached), manual tiers, the tier history, and re-evaluation of every
member at once in set-based SQL (the ladder of domain.Ladder written as one CASE)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from loyalty.membership.v1 import events_pb2
from sqlalchemy import ColumnElement, Connection, and_, case, func, insert, literal, select, update

from services.kit.cache import cache_key, invalidate_on_commit
from services.kit.codec import DataclassCodec, TypedCache
from services.kit.errors import InvalidArgument
from services.kit.storage import UnitOfWork
from services.kit.timeutil import to_timestamp, utcnow
from services.membership import commands, rules, standing, tables, views
from services.membership.domain import DowngradePolicy, Ladder, MemberStatus, QualificationMode, Tier, TierChangeReason
from services.membership.tables import members

if TYPE_CHECKING:
    from services.membership.context import Membership


@dataclass(frozen=True)
class TierView:
    member_id: str
    tier: Tier
    since: datetime


@dataclass(frozen=True)
class CachedTier:
    """What the cache keeps of a member's tier: the level, resolved against the current ladder
    when read, so a ladder change needs no invalidation of every member."""

    member_id: str
    level: int
    since: datetime


TIER_CODEC = DataclassCodec(CachedTier)


@dataclass(frozen=True)
class TierChange:
    id: int
    from_level: int
    to_level: int
    reason: int
    note: str
    operator: str
    order_id: str
    changed_at: datetime


@dataclass(frozen=True)
class TierSet:
    member_id: str
    from_level: int
    tier: Tier


@dataclass(frozen=True)
class Reevaluation:
    upgraded: int
    downgraded: int
    unchanged: int


def tier_cache_keys(shop_id: str, member_id: str, buyer_hash: str | None) -> list[str]:
    """The cache entries of a member's tier: by member id, and by the keyed hash of the buyer id
    (never the buyer id itself, so no cache key outlives an erasure in readable form)."""
    keys = [cache_key(shop_id, "tier", "m", member_id), *standing.member_keys(shop_id, member_id)]
    if buyer_hash:
        keys.append(cache_key(shop_id, "tier", "b", buyer_hash))
    return keys


# ----- reads ------------------------------------------------------------------------------------


def get_tier(ctx: Membership, shop_id: str, *, member_id: str, buyer_id: str) -> TierView:
    """Cached: the member's tier from the cache when it has it, else from the database."""
    commands.require_one_member_key(member_id, buyer_id)
    program = ctx.programs.get(shop_id)
    buyer_hash = ctx.pii.buyer_hash(shop_id, buyer_id) if buyer_id else ""
    key = cache_key(shop_id, "tier", "m", member_id) if member_id else cache_key(shop_id, "tier", "b", buyer_hash)
    tiers = TypedCache(ctx.cache, TIER_CODEC)
    cached = tiers.get(key)
    if cached is not None:
        return TierView(cached.member_id, program.ladder.tier(cached.level), cached.since)
    query = select(members.c.member_id, members.c.tier_level, members.c.tier_since).where(
        members.c.shop_id == shop_id, members.c.status == MemberStatus.ACTIVE,
        members.c.member_id == member_id if member_id else members.c.buyer_hash == buyer_hash)
    row = ctx.db.read(lambda conn: conn.execute(query).first())
    if row is None:
        raise views.member_not_found(member_id, buyer_id)
    tiers.add(key, CachedTier(row.member_id, row.tier_level, row.tier_since), ctx.cache_ttl)
    return TierView(row.member_id, program.ladder.tier(row.tier_level), row.tier_since)


def tier_history(ctx: Membership, shop_id: str, *, member_id: str, limit: int,
                 before_id: int | None) -> list[TierChange]:
    """A member's tier changes, newest first (also after they left)."""
    commands.require_member_id(member_id)

    def read(conn: Connection) -> list[TierChange]:
        ctx.programs.get(shop_id, conn)
        if conn.execute(select(members.c.member_id).where(members.c.shop_id == shop_id,
                                                          members.c.member_id == member_id)).first() is None:
            raise views.member_not_found(member_id)
        query = (select(tables.tier_history).where(tables.tier_history.c.shop_id == shop_id,
                                            tables.tier_history.c.member_id == member_id)
                 .order_by(tables.tier_history.c.id.desc()).limit(limit))
        if before_id is not None:
            query = query.where(tables.tier_history.c.id < before_id)
        return [TierChange(r.id, r.from_level, r.to_level, r.reason, r.note, r.operator, r.order_id, r.changed_at)
                for r in conn.execute(query)]

    return ctx.db.read(read)


# ----- handlers ---------------------------------------------------------------------------------


def set_tier(ctx: Membership, uow: UnitOfWork, cmd: commands.SetTier) -> TierSet:
    """A manual tier, audited with who and why."""
    program = ctx.programs.for_update(uow, cmd.shop_id)
    if not 0 <= cmd.level <= program.ladder.top:
        raise InvalidArgument([("tier_level", f"must be 0..{program.ladder.top}")])
    member = uow.conn.execute(select(members.c.member_id, members.c.tier_level, members.c.buyer_hash).where(
        members.c.shop_id == cmd.shop_id, members.c.member_id == cmd.member_id,
        members.c.status == MemberStatus.ACTIVE).with_for_update()).first()
    if member is None:
        raise views.member_not_found(cmd.member_id)
    if member.tier_level != cmd.level:
        change_tier(ctx, uow, program.ladder, cmd.shop_id, member.member_id, member.tier_level, member.buyer_hash,
                    cmd.level, TierChangeReason.MANUAL, note=cmd.reason, operator=cmd.operator)
    return TierSet(cmd.member_id, member.tier_level, program.ladder.tier(cmd.level))


def reevaluate_tiers(ctx: Membership, uow: UnitOfWork, cmd: commands.ReevaluateTiers) -> Reevaluation:
    """Re-applies the current rules to every active member in set-based SQL. A dry run counts the
    same moves without making them."""
    program = ctx.programs.for_update(uow, cmd.shop_id)
    target = target_level_sql(program.ladder)
    counts = uow.conn.execute(select(
        func.coalesce(func.sum(case((target > members.c.tier_level, 1), else_=0)), 0),
        func.coalesce(func.sum(case((target < members.c.tier_level, 1), else_=0)), 0),
        func.count(),
    ).where(members.c.shop_id == cmd.shop_id, members.c.status == MemberStatus.ACTIVE)).one()
    upgraded, downgraded, total = int(counts[0]), int(counts[1]), int(counts[2])
    if not cmd.dry_run and upgraded + downgraded:
        move_setwise(ctx, uow, cmd.shop_id, program.ladder, target, target != members.c.tier_level,
                     TierChangeReason.REEVALUATED, utcnow())
    return Reevaluation(upgraded, downgraded, total - upgraded - downgraded)


# ----- shared by the handlers of tiers, orders and programs -------------------------------------


def change_tier(ctx: Membership, uow: UnitOfWork, ladder: Ladder, shop_id: str, member_id: str, from_level: int,
                buyer_hash: str | None, level: int, reason: TierChangeReason, *, note: str = "", operator: str = "",
                order_id: str = "") -> None:
    """Moves one member (locked by the caller), with its history row, event and cache invalidation."""
    now = utcnow()
    uow.conn.execute(update(members).where(members.c.shop_id == shop_id, members.c.member_id == member_id)
                     .values(tier_level=level, tier_since=now, tier_expires_at=_expiry(ctx, uow, shop_id, now, level)))
    record_tier_change(uow, shop_id, member_id, from_level, level, reason, now, note=note, operator=operator,
                       order_id=order_id)
    uow.emit(shop_id, events_pb2.TierChanged(
        shop_id=shop_id, member_id=member_id, from_level=from_level, to_level=level,
        to_code=ladder.tier(level).code, reason=reason, operator=operator, note=note, order_id=order_id,
        changed_at=to_timestamp(now)))
    invalidate_on_commit(uow, ctx.cache, tier_cache_keys(shop_id, member_id, buyer_hash))


def record_tier_change(uow: UnitOfWork, shop_id: str, member_id: str, from_level: int, to_level: int,
                       reason: TierChangeReason, at: datetime, *, note: str = "", operator: str = "",
                       order_id: str = "") -> None:
    uow.conn.execute(insert(tables.tier_history), {
        "shop_id": shop_id, "member_id": member_id, "from_level": from_level, "to_level": to_level,
        "reason": reason, "note": note, "operator": operator, "order_id": order_id, "changed_at": at})


def move_setwise(ctx: Membership, uow: UnitOfWork, shop_id: str, ladder: Ladder, target: ColumnElement[int],
                 condition: ColumnElement[bool], reason: TierChangeReason, now: datetime) -> int:
    """Moves every active member matching `condition` to `target` (SQL expressions): history rows
    with INSERT ... SELECT, one UPDATE, then a TierChanged event per member moved."""
    scope = and_(members.c.shop_id == shop_id, members.c.status == MemberStatus.ACTIVE, condition)
    # Locks the rows it moves, so a concurrent completion waits and history, events and the
    # update agree.
    moved = uow.conn.execute(select(members.c.member_id, members.c.buyer_hash, members.c.tier_level,
                                    target.label("target")).where(scope).with_for_update()).all()
    if not moved:
        return 0
    uow.conn.execute(insert(tables.tier_history).from_select(
        ["shop_id", "member_id", "from_level", "to_level", "reason", "note", "operator", "order_id", "changed_at"],
        select(members.c.shop_id, members.c.member_id, members.c.tier_level, target, literal(int(reason)),
               literal(""), literal(""), literal(""), literal(now)).where(scope)))
    expiry = _expiry(ctx, uow, shop_id, now, 1)
    uow.conn.execute(update(members).where(scope).values(
        tier_level=target, tier_since=now, tier_expires_at=case((target > 0, expiry), else_=None) if expiry else None))
    changed_at = to_timestamp(now)
    for i in range(0, len(moved), 1000):
        uow.emit_many(shop_id, [
            events_pb2.TierChanged(shop_id=shop_id, member_id=m.member_id, from_level=m.tier_level,
                                   to_level=m.target, to_code=ladder.tier(m.target).code, reason=reason,
                                   changed_at=changed_at)
            for m in moved[i:i + 1000]])
    invalidate_on_commit(uow, ctx.cache, [k for m in moved for k in tier_cache_keys(shop_id, m.member_id,
                                                                                     m.buyer_hash)])
    return len(moved)


def _expiry(ctx: Membership, uow: UnitOfWork, shop_id: str, now: datetime, level: int) -> datetime | None:
    """When a tier reached now expires under the program's tier validity (rules.tier_expiry)."""
    program = ctx.programs.get(shop_id, uow.conn)
    return rules.tier_expiry(program.rules, ZoneInfo(program.time_zone), level, now)


def growth_value_sql() -> ColumnElement[int]:
    """The member's growth value (growth.py), correlated to the members row of the statement."""
    return func.coalesce(select(tables.growth_accounts.c.balance).where(
        tables.growth_accounts.c.shop_id == members.c.shop_id,
        tables.growth_accounts.c.member_id == members.c.member_id).scalar_subquery(), 0)


def target_level_sql(ladder: Ladder, spend: ColumnElement[int] = members.c.cumulative_spend_fen,
                     trades: ColumnElement[int] = members.c.trade_count,
                     current: ColumnElement[int] = members.c.tier_level,
                     growth: ColumnElement[int] | None = None) -> ColumnElement[int]:
    """Ladder.evaluate() as SQL: the tier the figures qualify for as one CASE, then the downgrade
    policy. tests/unit/test_membership_ladder_sql.py proves the two agree. `growth` defaults to
    the member's growth value, read only in QUALIFICATION_MODE_GROWTH."""
    if ladder.mode is QualificationMode.GROWTH and growth is None:
        growth = growth_value_sql()
    whens = []
    for tier in reversed(ladder.tiers[1:]):
        by_spend, by_count = spend >= tier.min_spend_fen, trades >= tier.min_trades
        meets = {QualificationMode.CUMULATIVE_SPEND: by_spend, QualificationMode.TRADE_COUNT: by_count,
                 QualificationMode.GROWTH: growth >= tier.min_growth if growth is not None else None}.get(
            ladder.mode, by_spend | by_count)
        whens.append((meets, tier.level))
    qualified = case(*whens, else_=0) if whens else literal(0)
    if ladder.policy is not DowngradePolicy.RECOMPUTE:  # NEVER and DOWN_ONE_LEVEL: up only
        return case((qualified > current, qualified), (current > ladder.top, ladder.top), else_=current)
    return qualified
