"""A member's standing (tier level, spend, trades, tier expiry, growth value) cached for the
progress bar: the storefront card asks for it on every visit, and it changes only when an order
completes or is refunded, growth is posted, or the tier moves.

Writes of one member fence their entry (`member_keys`, also part of every tier invalidation);
set-wise writes (tier validity changed, expiries renewed or announced, growth decay, imports)
fence the shop's generation instead (`invalidate_shop`): every entry carries the generation it
was read under, and an entry of another generation is a miss. While the generation is fenced no
entry is filled, so nothing read before such a commit is served after it. Progress itself is
computed from the standing and the current ladder on every read (a ladder change needs no
invalidation)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import and_, select

from services.kit.cache import cache_key, invalidate_on_commit
from services.kit.codec import DataclassCodec, TypedCache
from services.kit.storage import UnitOfWork
from services.membership.domain import MemberStatus
from services.membership.tables import growth_accounts, members

if TYPE_CHECKING:
    from services.membership.context import Membership

GENERATION_TTL = 7 * 24 * 3600.0  # a generation lives until a set-wise write ends it (or a week)


@dataclass(frozen=True)
class Standing:
    generation: str
    tier_level: int
    cumulative_spend_fen: int
    trade_count: int
    tier_expires_at: datetime | None
    growth_value: int


CODEC = DataclassCodec(Standing)


def member_keys(shop_id: str, member_id: str) -> list[str]:
    return [cache_key(shop_id, "standing", member_id)]


def _generation_key(shop_id: str) -> str:
    return cache_key(shop_id, "standing-gen")


def invalidate_member(ctx: Membership, uow: UnitOfWork, shop_id: str, member_id: str) -> None:
    invalidate_on_commit(uow, ctx.cache, member_keys(shop_id, member_id))


def invalidate_shop(ctx: Membership, uow: UnitOfWork, shop_id: str) -> None:
    """After a set-wise write of the shop's members: no entry read before it is served after."""
    invalidate_on_commit(uow, ctx.cache, [_generation_key(shop_id)])


def _generation(ctx: Membership, shop_id: str) -> str | None:
    """The shop's current generation; a new one when there is none; None while it is fenced."""
    key = _generation_key(shop_id)
    found = ctx.cache.get(key)
    if found is None:
        ctx.cache.add(key, uuid.uuid4().hex.encode(), GENERATION_TTL)
        found = ctx.cache.get(key)
    return found.decode() if isinstance(found, bytes) else found


def read(ctx: Membership, shop_id: str, member_id: str) -> Standing | None:
    """The active member's standing (None: no such active member), from the cache when it holds
    an entry of the shop's current generation, else from the database (and then cached)."""
    generation = _generation(ctx, shop_id)
    entries = TypedCache(ctx.cache, CODEC)
    key = member_keys(shop_id, member_id)[0]
    if generation is not None:
        cached = entries.get(key)
        if cached is not None and cached.generation == generation:
            return cached
    m, g = members.c, growth_accounts.c
    query = (select(m.tier_level, m.cumulative_spend_fen, m.trade_count, m.tier_expires_at, g.balance)
             .outerjoin(growth_accounts, and_(g.shop_id == m.shop_id, g.member_id == m.member_id))
             .where(m.shop_id == shop_id, m.member_id == member_id, m.status == MemberStatus.ACTIVE))
    row = ctx.db.read(lambda conn: conn.execute(query).first())
    if row is None:
        return None
    standing = Standing(generation or "", row.tier_level, row.cumulative_spend_fen, row.trade_count,
                        row.tier_expires_at, row.balance or 0)
    if generation is not None:
        entries.add(key, standing, ctx.cache_ttl)
    return standing
