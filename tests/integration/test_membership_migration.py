"""Migrations 0002_crypto_shredding and 0003_key_store on a database that holds plaintext personal
data (revision 0001): the upgrade encrypts it with LOYALTY_PII_KEY and moves the data keys to the
key store, after which the service shows the same members and orders; without the PII key (or,
on PostgreSQL, without the key store's URL) it refuses to run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime

import grpc
import pytest
import sqlalchemy as sa
from alembic import command
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from loyalty.membership.v1 import membership_service_pb2 as pb
from loyalty.membership.v1 import membership_service_pb2_grpc as pb_grpc

from services.kit import migrations
from services.kit.auth import KeyRing
from services.kit.bus import InProcessBus
from services.kit.cache import LocalCache
from services.kit.config import Settings
from services.kit.server import create_server
from services.membership import server as membership_server
from services.membership.domain import default_tiers
from tests.conftest import ADMIN_KEY, AUTH_SECRET, PII_KEY, Authed, Backend

SHOP, MEMBER = "legacy-shop", "m_legacy"
NAME, PHONE, BUYER, REGION = "王五Legacy", "13811112222", "legacy-buyer-7", "浙江Legacy"
WHEN = datetime(2026, 1, 2, 3, 4, 5)

# The tables as revision 0001 defined them.
programs_0001 = sa.table("programs", *(sa.column(c) for c in (
    "shop_id", "name", "time_zone", "require_follow", "qualification_mode", "downgrade_policy", "tiers", "created_at",
    "updated_at")))
members_0001 = sa.table("members", *(sa.column(c) for c in (
    "shop_id", "member_id", "buyer_id", "status", "name", "gender", "phone_cipher", "birth_year", "birth_month",
    "birth_day", "region", "consent_fields", "consent_at", "join_channel", "joined_at", "tier_level", "tier_since",
    "cumulative_spend_fen", "trade_count")))
orders_0001 = sa.table("orders", *(sa.column(c) for c in (
    "shop_id", "order_id", "buyer_id", "member_id", "amount_fen", "refunded_fen", "status", "paid_at", "counted",
    "points_rate_milli")))


@pytest.fixture
def legacy_url(backend: Backend, settings: Settings) -> str:
    """A fresh database at revision 0001 with one member and their paid order, stored as 0001 did."""
    url = backend.database_url("membership")
    command.upgrade(migrations.alembic_config("membership", url), "0001")
    nonce = b"\x01" * 12
    phone_cipher = nonce + AESGCM(settings.pii_key).encrypt(nonce, PHONE.encode(), f"{SHOP}/{MEMBER}".encode())
    ladder = json.dumps({"mode": 1, "policy": 1, "tiers": [asdict(t) for t in default_tiers()]})
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.insert(programs_0001).values(
            shop_id=SHOP, name="Legacy", time_zone="Asia/Shanghai", require_follow=False, qualification_mode=1,
            downgrade_policy=1, tiers=ladder, created_at=WHEN, updated_at=WHEN))
        conn.execute(sa.insert(members_0001).values(
            shop_id=SHOP, member_id=MEMBER, buyer_id=BUYER, status=1, name=NAME, gender=1, phone_cipher=phone_cipher,
            birth_year=1990, birth_month=3, birth_day=4, region=REGION, consent_fields="1,2,3,4,5", consent_at=WHEN,
            join_channel=1, joined_at=WHEN, tier_level=0, tier_since=WHEN, cumulative_spend_fen=0, trade_count=0))
        conn.execute(sa.insert(orders_0001).values(
            shop_id=SHOP, order_id="o-legacy", buyer_id=BUYER, member_id=None, amount_fen=120_000, refunded_fen=0,
            status=1, paid_at=WHEN, counted=False, points_rate_milli=0))
    engine.dispose()
    return url


@pytest.fixture
def keys_url(backend: Backend, legacy_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The key store of the legacy database: named in the environment on PostgreSQL, by default
    membership-…-keys.db beside the SQLite file."""
    if backend.name == "sqlite":
        return legacy_url.removesuffix(".db") + "-keys.db"
    url = backend.database_url("membership_keys")
    monkeypatch.setenv("LOYALTY_MEMBERSHIP_KEYS_DB_URL", url)
    return url


@pytest.fixture
def legacy_service(legacy_url: str, keys_url: str, settings: Settings,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[Authed]:
    """The service on the legacy database, upgraded with the PII key in the environment."""
    monkeypatch.setenv("LOYALTY_PII_KEY", PII_KEY)
    migrations.upgrade("membership", legacy_url)
    keyring, bus = KeyRing(ADMIN_KEY, AUTH_SECRET), InProcessBus()
    app = membership_server.build_app(settings, cache=LocalCache(), keyring=keyring, bus=bus, db_url=legacy_url,
                                      keys_db_url=keys_url)
    running = create_server(app, bus=bus, keyring=keyring, port=0, threads=4, access_log=False)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    yield Authed(pb_grpc.MembershipServiceStub(channel), ADMIN_KEY)
    channel.close()
    running.stop(1.0)
    bus.close()


def test_the_upgrade_encrypts_stored_members_and_orders_and_the_service_still_shows_them(
        legacy_url: str, keys_url: str, legacy_service: Authed) -> None:
    engine = sa.create_engine(legacy_url)
    with engine.connect() as conn:
        values = [value for table in ("members", "orders")
                  for row in conn.execute(sa.text(f"SELECT * FROM {table}")) for value in row]
        assert "data_keys" not in sa.inspect(conn).get_table_names()  # moved to the key store
    engine.dispose()
    store = sa.create_engine(keys_url)
    with store.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM data_keys WHERE shop_id = :s"), {"s": SHOP}).scalar() == 1
    store.dispose()
    stored = b"|".join(bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for v in values)
    for plain in (NAME, PHONE, BUYER, REGION):
        assert plain.encode() not in stored

    member = legacy_service.GetMember(pb.GetMemberRequest(shop_id=SHOP, buyer_id=BUYER))
    assert member.member_id == MEMBER and member.buyer_id == BUYER
    assert (member.profile.name, member.profile.phone_masked, member.profile.region) == (NAME, "138****2222", REGION)
    assert (member.profile.birthday.year, member.profile.birthday.month, member.profile.birthday.day) == (1990, 3, 4)
    completed = legacy_service.CompleteOrder(pb.CompleteOrderRequest(shop_id=SHOP, order_id="o-legacy"))
    assert completed.order.counted and completed.order.buyer_id == BUYER and completed.tier.code == "silver"


def test_the_upgrade_refuses_plaintext_rows_without_the_pii_key(legacy_url: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOYALTY_PII_KEY", raising=False)
    with pytest.raises(RuntimeError, match="set LOYALTY_PII_KEY"):
        migrations.upgrade("membership", legacy_url)


def test_on_postgresql_the_keys_stay_until_the_key_store_is_named(
        backend: Backend, legacy_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without LOYALTY_MEMBERSHIP_KEYS_DB_URL the upgrade is refused and undone; named, it moves the keys."""
    if backend.name == "sqlite":
        pytest.skip("SQLite's key store is a file beside the database by default")
    monkeypatch.setenv("LOYALTY_PII_KEY", PII_KEY)
    monkeypatch.delenv("LOYALTY_MEMBERSHIP_KEYS_DB_URL", raising=False)
    with pytest.raises(RuntimeError, match="LOYALTY_MEMBERSHIP_KEYS_DB_URL"):
        migrations.upgrade("membership", legacy_url)
    engine = sa.create_engine(legacy_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM members")).scalar() == NAME  # one transaction, undone
    keys_url = backend.database_url("membership_keys")
    monkeypatch.setenv("LOYALTY_MEMBERSHIP_KEYS_DB_URL", keys_url)
    migrations.upgrade("membership", legacy_url)
    with engine.connect() as conn:
        assert "data_keys" not in sa.inspect(conn).get_table_names()
    engine.dispose()
    store = sa.create_engine(keys_url)
    with store.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM data_keys WHERE in_use")).scalar() == 1
    store.dispose()
