"""The key store: buyers' data keys (tables.data_keys) in a database of their own. A backup of
the membership database then holds no key, and a key destroyed here makes every copy of what it
encrypted unreadable, backups of the data included. The keys' own copies are kept short: SQLite
zeroes deleted rows and empties its WAL after each deletion; PostgreSQL vacuums the table."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, and_, bindparam, delete, event, insert, select, text, update
from sqlalchemy.engine import Engine, Row

from services.kit.storage import DIALECTS, Database, Prepared, one_of
from services.kit.timeutil import utcnow
from services.membership.pii import DataKey, PiiKeys
from services.membership.tables import data_keys, key_metadata, kit

NAME = "membership-keys"

# The keys one request has read already (request_scope): a call reads the buyer's key for its work
# and again to seal its stored answer; the second read comes from here. Nothing outlives the request.
_request_keys: ContextVar[dict[tuple[str, str], DataKey] | None] = ContextVar("membership_request_keys",
                                                                              default=None)


# Read on every order call: built once.
_WRAPPED = Prepared(select(data_keys.c.wrapped_key).where(data_keys.c.shop_id == bindparam("b_shop"),
                                                          data_keys.c.key_id == bindparam("b_key")))
_OF_BUYERS = {dialect: Prepared(select(data_keys.c.key_id, data_keys.c.buyer_hash, data_keys.c.wrapped_key,
                                       data_keys.c.in_use).where(
    data_keys.c.shop_id == bindparam("b_shop"), one_of(data_keys.c.buyer_hash, "b_buyers", dialect)))
    for dialect in DIALECTS}


@contextmanager
def request_scope() -> Iterator[None]:
    token = _request_keys.set({})
    try:
        yield
    finally:
        _request_keys.reset(token)


def create_schema(engine: Engine) -> None:
    """Creates the key store's table if it is missing (the service does it at start)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Replicas starting together: one creates, the others find it there.
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": NAME})
        key_metadata.create_all(conn)


def enable_secure_delete(db: Database) -> None:
    """SQLite overwrites deleted and replaced content with zeros instead of leaving it in free
    space, so erased rows and destroyed keys do not linger in the database file."""
    if db.is_sqlite:
        event.listen(db.engine, "connect", lambda dbapi_conn, _record: dbapi_conn.execute("PRAGMA secure_delete=ON"))


def empty_wal(db: Database) -> None:
    """Folds SQLite's WAL back into the (zeroed) file and empties it, so that no earlier page
    image of a deleted row stays on disk."""
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        (waited,) = cur.execute("PRAGMA busy_timeout").fetchone()
        # A long reader (an export) keeps old frames in use: try briefly and leave it to the next deletion.
        cur.execute("PRAGMA busy_timeout=1000")
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        cur.execute(f"PRAGMA busy_timeout={int(waited)}")
        cur.close()
    finally:
        raw.close()


class KeyStore:
    """Reads, creates and destroys data keys; unwrapping needs the PII key."""

    def __init__(self, url: str, pii: PiiKeys, *, pool_size: int = 4, retry_seconds: float = 1.0):
        self.pii = pii
        if url.startswith("sqlite:///"):  # a fresh data folder: the key store may come before any migration
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.db = Database(url, service=NAME, kit=kit, pool_size=pool_size, retry_seconds=retry_seconds)
        enable_secure_delete(self.db)
        create_schema(self.db.engine)

    def key(self, shop_id: str, key_id: str) -> DataKey | None:
        """The data key, or None once it was destroyed."""
        memo = _request_keys.get()
        if memo is not None and (shop_id, key_id) in memo:
            return memo[(shop_id, key_id)]
        wrapped = self.db.read(lambda conn: _WRAPPED(conn, {"b_shop": shop_id, "b_key": key_id}).scalar(),
                               autocommit=True)
        key = self.pii.unwrap(shop_id, key_id, wrapped)
        if key is not None:
            self.remember(shop_id, key_id, key)
        return key

    @staticmethod
    def remember(shop_id: str, key_id: str, key: DataKey) -> None:
        """A key this request holds already (read or created), for its later reads in the request."""
        memo = _request_keys.get()
        if memo is not None:
            memo[(shop_id, key_id)] = key

    def keys(self, shop_id: str, key_ids: list[str]) -> dict[str, DataKey]:
        """key() for many keys of a shop with one query (lists, exports); destroyed ones are absent."""
        if not key_ids:
            return {}
        rows = self.db.read(lambda conn: conn.execute(select(data_keys.c.key_id, data_keys.c.wrapped_key).where(
            data_keys.c.shop_id == shop_id, data_keys.c.key_id.in_(key_ids))).all())
        found = {row.key_id: self.pii.unwrap(shop_id, row.key_id, row.wrapped_key) for row in rows}
        return {key_id: key for key_id, key in found.items() if key is not None}

    def for_buyers(self, shop_id: str, buyer_hashes: list[str]) -> list[Row]:
        """The keys of these buyers that exist: key_id, buyer_hash, wrapped_key, in_use."""
        return self.db.read(lambda conn: _OF_BUYERS[conn.dialect.name](conn, {"b_shop": shop_id,
                                                                              "b_buyers": buyer_hashes}).all(),
                            autocommit=True)

    def add(self, shop_id: str, rows: list[tuple[str, str, bytes]]) -> None:
        """Stores new keys (buyer_hash, key_id, wrapped), committed at once; IntegrityError when
        one of the buyers got a key meanwhile."""
        now = utcnow()
        self.db.transact(lambda uow: uow.conn.execute(insert(data_keys), [
            {"shop_id": shop_id, "buyer_hash": h, "key_id": k, "wrapped_key": w, "created_at": now, "in_use": False}
            for h, k, w in rows]))

    def touch(self, shop_id: str, key_ids: list[str]) -> set[str]:
        """Marks keys no committed row was seen using as just taken (so the sweeper leaves them
        another hour); returns those that still exist."""
        if not key_ids:
            return set()

        def work(conn: Connection) -> set[str]:
            where = and_(data_keys.c.shop_id == shop_id, data_keys.c.key_id.in_(key_ids))
            conn.execute(update(data_keys).where(where, data_keys.c.in_use.is_(False)).values(created_at=utcnow()))
            return set(conn.execute(select(data_keys.c.key_id).where(where)).scalars())

        return self.db.transact(lambda uow: work(uow.conn))

    def unconfirmed(self, before: datetime, limit: int) -> list[Row]:
        """Keys created (or last taken) before `before` that no committed row was seen using."""
        return self.db.read(lambda conn: conn.execute(select(data_keys.c.shop_id, data_keys.c.key_id).where(
            data_keys.c.in_use.is_(False), data_keys.c.created_at < before).limit(limit)).all())

    def confirm(self, shop_id: str, key_ids: Iterable[str]) -> None:
        """Records that committed rows use these keys."""
        ids = list(key_ids)
        if ids:
            self.db.transact(lambda uow: uow.conn.execute(update(data_keys).where(
                data_keys.c.shop_id == shop_id, data_keys.c.key_id.in_(ids)).values(in_use=True)))

    def destroy(self, shop_id: str, key_ids: Iterable[str], *, unused_before: datetime | None = None) -> int:
        """Deletes keys (with `unused_before`: only those still unused and untaken since then) and
        scrubs what the database keeps of them; returns how many were deleted."""
        ids = list(key_ids)
        if not ids:
            return 0
        memo = _request_keys.get()
        for key_id in ids if memo is not None else ():
            memo.pop((shop_id, key_id), None)
        query = delete(data_keys).where(data_keys.c.shop_id == shop_id, data_keys.c.key_id.in_(ids))
        if unused_before is not None:
            query = query.where(data_keys.c.in_use.is_(False), data_keys.c.created_at < unused_before)
        deleted = self.db.transact(lambda uow: uow.conn.execute(query).rowcount)
        if deleted:
            self._scrub()
        return deleted

    def _scrub(self) -> None:
        if self.db.is_sqlite:
            empty_wal(self.db)
            return
        # Dead tuples of the deleted keys are removed now rather than when autovacuum comes by.
        with self.db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(f"VACUUM {data_keys.name}")

    def start(self) -> None:
        """Nothing to run: the store is a Worker only so that the server closes it with the service."""

    def stop(self) -> None:
        self.db.dispose()
