"""Buyers' data keys (crypto-shredding, see pii.py): one per buyer of a shop, created with their
first order or their join, destroyed when the member leaves. They live in the key store
(key_store.py), a database apart from the data, so the two are kept consistent in this order:

- a key is committed in the key store before the member or order row that uses it;
- leaving erases the member's columns and records the key in `retired_keys` in one transaction,
  and destroys the key right after it commits;
- the sweeper (sweep(), every minute) destroys retired keys that outlived a crash between those
  two steps, and keys that no committed row uses an hour after they were made or last taken."""

from __future__ import annotations

import secrets
from collections import defaultdict
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Connection, bindparam, delete, insert, select, union
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from services.kit.jobs import PeriodicJob
from services.kit.storage import DIALECTS, Prepared, UnitOfWork, one_of
from services.kit.timeutil import utcnow
from services.membership.pii import DataKey
from services.membership.tables import members, orders, retired_keys

if TYPE_CHECKING:
    from services.membership.context import Membership

# How long a key may stay unused by any committed row before the sweeper destroys it: far longer
# than any transaction that creates a key and then the row that uses it.
UNUSED_GRACE = timedelta(hours=1)
SWEEP_SECONDS = 60.0
_BATCH = 500


def member_field(shop_id: str, member_id: str, name: str) -> str:
    """Where a member's personal field lives: its ciphertext opens only there."""
    return f"{shop_id}/members/{member_id}/{name}"


def order_buyer(shop_id: str, order_id: str) -> str:
    return f"{shop_id}/orders/{order_id}/buyer_id"


def unwrap(ctx: Membership, row: Row) -> DataKey | None:
    """The data key of a members or orders row, or None once it was destroyed."""
    return ctx.keys.key(row.shop_id, row.key_id) if row.key_id else None


def key_for_buyer(ctx: Membership, uow: UnitOfWork, shop_id: str, buyer_hash: str, *,
                  unconfirmed: list[str] | None = None) -> DataKey:
    """The buyer's data key, created on first use."""
    return keys_for_buyers(ctx, uow, shop_id, [buyer_hash], unconfirmed=unconfirmed)[buyer_hash]


def keys_for_buyers(ctx: Membership, uow: UnitOfWork, shop_id: str, buyer_hashes: list[str], *,
                    unconfirmed: list[str] | None = None, attempt: int = 1) -> dict[str, DataKey]:
    """The buyers' data keys, those missing created (and committed in the key store) first. The
    keys no committed row was seen using are confirmed once `uow` commits, or, given a list
    `unconfirmed`, added to it for the caller to confirm (confirm_on_commit) if it uses them."""
    found = ctx.keys.for_buyers(shop_id, buyer_hashes)
    retired = _retired(uow.conn, shop_id, [row.key_id for row in found])
    if retired:  # a left buyer's key that outlived a crash: destroyed now, never used again
        ctx.keys.destroy(shop_id, retired)
    usable = [row for row in found if row.key_id not in retired]
    alive = ctx.keys.touch(shop_id, [row.key_id for row in usable if not row.in_use])
    keys = {row.buyer_hash: _unwrapped(ctx, shop_id, row.key_id, row.wrapped_key)
            for row in usable if row.in_use or row.key_id in alive}
    missing = [h for h in dict.fromkeys(buyer_hashes) if h not in keys]
    fresh = {h: ctx.keys.pii.new_key(shop_id, "k_" + secrets.token_hex(10)) for h in missing}
    if fresh:
        try:
            ctx.keys.add(shop_id, [(h, key.key_id, wrapped) for h, (key, wrapped) in fresh.items()])
        except IntegrityError:  # a concurrent order or join of one of them created theirs first
            if attempt >= 3:
                raise
            return keys_for_buyers(ctx, uow, shop_id, buyer_hashes, unconfirmed=unconfirmed, attempt=attempt + 1)
    for key, _ in fresh.values():
        ctx.keys.remember(shop_id, key.key_id, key)
    taken = [key.key_id for key, _ in fresh.values()] + sorted(alive)
    if unconfirmed is None:
        confirm_on_commit(ctx, uow, shop_id, taken)
    else:
        unconfirmed.extend(taken)
    return {**keys, **{h: key for h, (key, _) in fresh.items()}}


def confirm_on_commit(ctx: Membership, uow: UnitOfWork, shop_id: str, key_ids: list[str]) -> None:
    """Once the rows that use these keys are committed, the sweeper need not look at them again."""
    if key_ids:
        uow.after_commit(lambda: ctx.keys.confirm(shop_id, key_ids))


def _unwrapped(ctx: Membership, shop_id: str, key_id: str, wrapped: bytes) -> DataKey:
    key = ctx.keys.pii.unwrap(shop_id, key_id, wrapped)
    if key is None:
        raise RuntimeError(f"data key {key_id} of shop {shop_id} does not unwrap: is LOYALTY_PII_KEY the one it "
                           "was created with?")
    ctx.keys.remember(shop_id, key_id, key)
    return key


def _retired(conn: Connection, shop_id: str, key_ids: list[str]) -> list[str]:
    if not key_ids:
        return []
    return list(_RETIRED[conn.dialect.name](conn, {"b_shop": shop_id, "b_keys": key_ids}).scalars())


_RETIRED = {dialect: Prepared(select(retired_keys.c.key_id).where(  # asked on every order call: built once
    retired_keys.c.shop_id == bindparam("b_shop"), one_of(retired_keys.c.key_id, "b_keys", dialect)))
    for dialect in DIALECTS}


def retire(ctx: Membership, uow: UnitOfWork, shop_id: str, key_id: str) -> None:
    """Destroys the key once `uow` commits: whatever it encrypted, wherever a copy lies (backups
    of the membership database included), can no longer be read. Recorded in the transaction, so
    that the sweeper finishes the job if the process stops in between."""
    uow.conn.execute(insert(retired_keys), {"shop_id": shop_id, "key_id": key_id, "retired_at": utcnow()})
    uow.after_commit(lambda: destroy(ctx, shop_id, [key_id]))


def destroy(ctx: Membership, shop_id: str, key_ids: list[str]) -> None:
    """Destroys retired keys in the key store, then forgets that they were retired."""
    ctx.keys.destroy(shop_id, key_ids)
    ctx.db.transact(lambda uow: uow.conn.execute(delete(retired_keys).where(
        retired_keys.c.shop_id == shop_id, retired_keys.c.key_id.in_(key_ids))))


def sweep(ctx: Membership) -> int:
    """One pass of the sweeper; returns how many keys it destroyed."""
    destroyed = 0
    retired = ctx.db.read(lambda conn: conn.execute(
        select(retired_keys.c.shop_id, retired_keys.c.key_id).limit(_BATCH)).all())
    for shop_id, key_ids in _by_shop(retired).items():
        destroy(ctx, shop_id, key_ids)
        destroyed += len(key_ids)
    cutoff = utcnow() - UNUSED_GRACE
    for shop_id, key_ids in _by_shop(ctx.keys.unconfirmed(cutoff, _BATCH)).items():
        used = ctx.db.read(lambda conn, shop_id=shop_id, key_ids=key_ids: set(conn.execute(union(
            select(members.c.key_id).where(members.c.shop_id == shop_id, members.c.key_id.in_(key_ids)),
            select(orders.c.key_id).where(orders.c.shop_id == shop_id, orders.c.key_id.in_(key_ids)))).scalars()))
        ctx.keys.confirm(shop_id, used)
        destroyed += ctx.keys.destroy(shop_id, [k for k in key_ids if k not in used], unused_before=cutoff)
    return destroyed


def _by_shop(rows: list[Row]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for shop_id, key_id in rows:
        grouped[shop_id].append(key_id)
    return grouped


def sweeper(ctx: Membership) -> PeriodicJob:
    """The sweeper as a job of the service's Periodic worker."""
    return PeriodicJob("data-key-sweeper", SWEEP_SECONDS, lambda: sweep(ctx))
