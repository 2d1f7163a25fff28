"""The data keys move to a database of their own (the key store, LOYALTY_MEMBERSHIP_KEYS_DB_URL;
by default membership-keys.db beside membership.db), so that a backup of this database holds no
key. Existing keys are copied there (and committed) before their table is dropped here.

Revision ID: 0003_key_store
Revises: 0002_crypto_shredding
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from services.kit.config import ConfigError, keys_db_url
from services.membership.key_store import create_schema
from services.membership.tables import data_keys as store_keys

revision = "0003_key_store"
down_revision = "0002_crypto_shredding"
branch_labels = None
depends_on = None

old_keys = sa.table("data_keys", sa.column("shop_id"), sa.column("key_id"), sa.column("buyer_hash"),
                    sa.column("wrapped_key", sa.LargeBinary), sa.column("created_at", sa.DateTime))


def _move_keys(conn: sa.Connection) -> None:
    """Copies the keys to the key store; a copy already there (an earlier, interrupted run) stays."""
    rows = conn.execute(sa.select(old_keys)).all()
    if not rows:
        return
    try:
        url = keys_db_url("membership", conn.engine.url.render_as_string(hide_password=False))
    except ConfigError as exc:
        raise RuntimeError(f"migration 0003_key_store moves the data keys to their own database: {exc}") from exc
    engine = sa.create_engine(url)
    try:
        create_schema(engine)
        with engine.begin() as store:
            there = {(r.shop_id, r.key_id) for r in store.execute(sa.select(store_keys.c.shop_id, store_keys.c.key_id))}
            moved = [{"shop_id": r.shop_id, "key_id": r.key_id, "buyer_hash": r.buyer_hash,
                      "wrapped_key": r.wrapped_key, "created_at": r.created_at, "in_use": True}
                     for r in rows if (r.shop_id, r.key_id) not in there]
            if moved:
                store.execute(sa.insert(store_keys), moved)
    finally:
        engine.dispose()


def upgrade() -> None:
    conn = op.get_bind()
    op.create_table(
        "retired_keys",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("retired_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_members_key", "members", ["shop_id", "key_id"])
    _move_keys(conn)
    if conn.dialect.name == "sqlite":
        # The dropped table's pages are zeroed rather than left in free space.
        op.execute("PRAGMA secure_delete=ON")
    op.drop_index("uq_data_keys_buyer", table_name="data_keys")
    op.drop_table("data_keys")


def downgrade() -> None:
    raise NotImplementedError(
        "0003_key_store cannot be undone in place: the data keys now live in the key store, and those of members who "
        "left since are destroyed; restore a backup of both databases taken before the upgrade instead")
