"""Crypto-shredding: personal fields encrypted with a data key per buyer, buyer ids looked up by
keyed hash. Existing plaintext rows are encrypted here, with LOYALTY_PII_KEY from the environment.

Revision ID: 0002_crypto_shredding
Revises: 0001
Create Date: 2026-11-26
"""

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.kit.config import pii_key_from_env
from services.membership.data_keys import member_field, order_buyer
from services.membership.pii import DataKey, PiiKeys

revision = "0002_crypto_shredding"
down_revision = "0001"
branch_labels = None
depends_on = None

# Stored answers of these methods show a person: from now on they are kept sealed (answers.py),
# so the plaintext ones are dropped (a retry of such a request is then answered anew).
_SEALED_ANSWERS = ("JoinMember", "UpdateProfile", "RecordOrder", "CompleteOrder", "RefundOrder")

members = sa.table(
    "members", sa.column("shop_id"), sa.column("member_id"), sa.column("buyer_id"), sa.column("name"),
    sa.column("phone_cipher"), sa.column("birth_year"), sa.column("birth_month"), sa.column("birth_day"),
    sa.column("region"), sa.column("key_id"), sa.column("buyer_hash"), sa.column("buyer_id_cipher"),
    sa.column("name_cipher"), sa.column("birthday_cipher"), sa.column("region_cipher"))
orders = sa.table("orders", sa.column("shop_id"), sa.column("order_id"), sa.column("buyer_id"),
                  sa.column("key_id"), sa.column("buyer_hash"), sa.column("buyer_id_cipher"))
data_keys = sa.table("data_keys", sa.column("shop_id"), sa.column("key_id"), sa.column("buyer_hash"),
                     sa.column("wrapped_key"), sa.column("created_at"))
idempotency = sa.table("idempotency", sa.column("method"))


def _pii_key() -> bytes:
    key = pii_key_from_env()
    if key is None:
        raise RuntimeError(
            "migration 0002_crypto_shredding encrypts the personal data already stored and needs the key it was "
            "stored with: set LOYALTY_PII_KEY (base64 of 32 bytes; in the embedded default it is pii_key in "
            "<LOYALTY_DATA_DIR>/secrets.json) and run the migration again")
    return key


def _legacy_phone(master: bytes, shop_id: str, member_id: str, sealed: bytes | None) -> str | None:
    """A phone as revision 0001 stored it: AES-GCM under the PII key itself, bound to shop/member."""
    if not sealed:
        return None
    try:
        return AESGCM(master).decrypt(sealed[:12], sealed[12:], f"{shop_id}/{member_id}".encode()).decode()
    except (InvalidTag, ValueError):
        return None


def _encrypt_existing(conn: sa.Connection) -> None:
    has_members = conn.execute(sa.select(members.c.member_id).where(members.c.buyer_id.is_not(None)).limit(1)).first()
    has_orders = conn.execute(sa.select(orders.c.order_id).where(orders.c.buyer_id.is_not(None)).limit(1)).first()
    if has_members is None and has_orders is None:
        return
    master = _pii_key()
    pii = PiiKeys(master)
    keys: dict[tuple[str, str], DataKey] = {}
    now = datetime.now(UTC).replace(tzinfo=None)

    def key_for(shop_id: str, buyer_hash: str) -> DataKey:
        if (shop_id, buyer_hash) not in keys:
            key_id = "k_" + secrets.token_hex(10)
            keys[(shop_id, buyer_hash)], wrapped = pii.new_key(shop_id, key_id)
            conn.execute(sa.insert(data_keys).values(shop_id=shop_id, key_id=key_id, buyer_hash=buyer_hash,
                                                     wrapped_key=wrapped, created_at=now))
        return keys[(shop_id, buyer_hash)]

    for m in conn.execute(sa.select(members).where(members.c.buyer_id.is_not(None))).all():
        buyer_hash = pii.buyer_hash(m.shop_id, m.buyer_id)
        key = key_for(m.shop_id, buyer_hash)

        def seal(name: str, value: str | None, m: sa.Row = m, key: DataKey = key) -> bytes | None:
            return key.seal(value, member_field(m.shop_id, m.member_id, name)) if value else None

        birthday = f"{m.birth_year or 0}-{m.birth_month}-{m.birth_day}" if m.birth_month else None
        conn.execute(sa.update(members).where(members.c.shop_id == m.shop_id, members.c.member_id == m.member_id)
                     .values(key_id=key.key_id, buyer_hash=buyer_hash, buyer_id_cipher=seal("buyer_id", m.buyer_id),
                             name_cipher=seal("name", m.name), region_cipher=seal("region", m.region),
                             birthday_cipher=seal("birthday", birthday),
                             phone_cipher=seal("phone", _legacy_phone(master, m.shop_id, m.member_id,
                                                                      m.phone_cipher))))
    for o in conn.execute(sa.select(orders).where(orders.c.buyer_id.is_not(None))).all():
        buyer_hash = pii.buyer_hash(o.shop_id, o.buyer_id)
        key = key_for(o.shop_id, buyer_hash)
        conn.execute(sa.update(orders).where(orders.c.shop_id == o.shop_id, orders.c.order_id == o.order_id)
                     .values(key_id=key.key_id, buyer_hash=buyer_hash,
                             buyer_id_cipher=key.seal(o.buyer_id, order_buyer(o.shop_id, o.order_id))))


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("buyer_hash", sa.String(64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("uq_data_keys_buyer", "data_keys", ["shop_id", "buyer_hash"], unique=True)
    with op.batch_alter_table("members") as batch:
        for name, kind in (("key_id", sa.String(32)), ("buyer_hash", sa.String(64)),
                           ("buyer_id_cipher", sa.LargeBinary), ("name_cipher", sa.LargeBinary),
                           ("birthday_cipher", sa.LargeBinary), ("region_cipher", sa.LargeBinary)):
            batch.add_column(sa.Column(name, kind))
    with op.batch_alter_table("orders") as batch:
        for name, kind in (("buyer_hash", sa.String(64)), ("key_id", sa.String(32)),
                           ("buyer_id_cipher", sa.LargeBinary)):
            batch.add_column(sa.Column(name, kind))

    _encrypt_existing(op.get_bind())
    op.execute(sa.delete(idempotency).where(idempotency.c.method.in_(_SEALED_ANSWERS)))

    with op.batch_alter_table("members") as batch:
        batch.drop_index("uq_members_buyer")
        for name in ("buyer_id", "name", "birth_year", "birth_month", "birth_day", "region"):
            batch.drop_column(name)
        batch.create_index("uq_members_buyer", ["shop_id", "buyer_hash"], unique=True)
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("buyer_id")
        batch.create_index("ix_orders_key", ["shop_id", "key_id"])


def downgrade() -> None:
    raise NotImplementedError(
        "0002_crypto_shredding cannot be undone in place: personal data is now encrypted per buyer (and erased for "
        "those who left); restore a backup taken before the upgrade instead")
