"""Buyers' data keys (crypto-shredding, see pii.py): one per buyer of a shop, created with their
first order or their join, destroyed when the member leaves."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from sqlalchemy import Select, Table, and_, delete, event, insert, select
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from services.kit.storage import Database, UnitOfWork
from services.kit.timeutil import utcnow
from services.membership.pii import DataKey
from services.membership.tables import data_keys

if TYPE_CHECKING:
    from services.membership.context import Membership


def member_field(shop_id: str, member_id: str, name: str) -> str:
    """Where a member's personal field lives: its ciphertext opens only there."""
    return f"{shop_id}/members/{member_id}/{name}"


def order_buyer(shop_id: str, order_id: str) -> str:
    return f"{shop_id}/orders/{order_id}/buyer_id"


def with_key(table: Table) -> Select:
    """Rows of `table` (members or orders) with their data key's wrapped form, if it still exists."""
    return select(table, data_keys.c.wrapped_key).select_from(table.outerjoin(data_keys, and_(
        data_keys.c.shop_id == table.c.shop_id, data_keys.c.key_id == table.c.key_id)))


def unwrap(ctx: Membership, row: Row) -> DataKey | None:
    """The data key of a row read through with_key(), or None once it was destroyed."""
    return ctx.pii.unwrap(row.shop_id, row.key_id, row.wrapped_key) if row.key_id else None


def key_for_buyer(ctx: Membership, uow: UnitOfWork, shop_id: str, buyer_hash: str) -> DataKey:
    """The buyer's data key, created on first use."""
    query = select(data_keys.c.key_id, data_keys.c.wrapped_key).where(
        data_keys.c.shop_id == shop_id, data_keys.c.buyer_hash == buyer_hash)
    row = uow.conn.execute(query).first()
    if row is None:
        key_id = "k_" + secrets.token_hex(10)
        key, wrapped = ctx.pii.new_key(shop_id, key_id)
        try:
            with uow.conn.begin_nested():
                uow.conn.execute(insert(data_keys), {"shop_id": shop_id, "key_id": key_id, "buyer_hash": buyer_hash,
                                                     "wrapped_key": wrapped, "created_at": utcnow()})
            return key
        except IntegrityError:  # a concurrent order or join of the same buyer created it first
            row = uow.conn.execute(query).one()
    return _unwrapped(ctx, shop_id, row.key_id, row.wrapped_key)


def _unwrapped(ctx: Membership, shop_id: str, key_id: str, wrapped: bytes) -> DataKey:
    key = ctx.pii.unwrap(shop_id, key_id, wrapped)
    if key is None:
        raise RuntimeError(f"data key {key_id} of shop {shop_id} does not unwrap: is LOYALTY_PII_KEY the one it "
                           "was created with?")
    return key


def keys_for_buyers(ctx: Membership, uow: UnitOfWork, shop_id: str, buyer_hashes: list[str]) -> dict[str, DataKey]:
    """key_for_buyer() for many buyers with a few statements (imports)."""
    found = uow.conn.execute(select(data_keys.c.key_id, data_keys.c.buyer_hash, data_keys.c.wrapped_key).where(
        data_keys.c.shop_id == shop_id, data_keys.c.buyer_hash.in_(buyer_hashes))).all()
    keys = {row.buyer_hash: _unwrapped(ctx, shop_id, row.key_id, row.wrapped_key) for row in found}
    fresh: dict[str, DataKey] = {}
    rows = []
    now = utcnow()
    for buyer_hash in buyer_hashes:
        if buyer_hash not in keys:
            key_id = "k_" + secrets.token_hex(10)
            fresh[buyer_hash], wrapped = ctx.pii.new_key(shop_id, key_id)
            rows.append({"shop_id": shop_id, "key_id": key_id, "buyer_hash": buyer_hash, "wrapped_key": wrapped,
                         "created_at": now})
    if rows:
        try:
            with uow.conn.begin_nested():
                uow.conn.execute(insert(data_keys), rows)
        except IntegrityError:  # one of them ordered meanwhile: one by one then
            fresh = {h: key_for_buyer(ctx, uow, shop_id, h) for h in fresh}
    return {**keys, **fresh}


def destroy(uow: UnitOfWork, shop_id: str, key_id: str) -> None:
    """Deletes the key: whatever it encrypted, wherever a copy lies, can no longer be read. On
    SQLite the WAL is folded back into the file and emptied after the commit, so that no earlier
    page image of the key stays on disk (secure_delete zeroes it in the file, see enable_secure_delete)."""
    uow.conn.execute(delete(data_keys).where(data_keys.c.shop_id == shop_id, data_keys.c.key_id == key_id))
    if uow.db.is_sqlite:
        uow.after_commit(lambda: _empty_wal(uow.db))


def enable_secure_delete(db: Database) -> None:
    """SQLite overwrites deleted and replaced content with zeros instead of leaving it in free
    space, so erased rows and destroyed keys do not linger in the database file."""
    if db.is_sqlite:
        event.listen(db.engine, "connect", lambda dbapi_conn, _record: dbapi_conn.execute("PRAGMA secure_delete=ON"))


def _empty_wal(db: Database) -> None:
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        (waited,) = cur.execute("PRAGMA busy_timeout").fetchone()
        # A long reader (an export) keeps old frames in use: try briefly and leave it to the next leave.
        cur.execute("PRAGMA busy_timeout=1000")
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        cur.execute(f"PRAGMA busy_timeout={int(waited)}")
        cur.close()
    finally:
        raw.close()
