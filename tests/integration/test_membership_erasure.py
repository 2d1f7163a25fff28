"""Erasure that survives the disk (crypto-shredding): once a member leaves, no copy of their name,
phone, region or buyer id is readable anywhere the suite keeps data — the SQLite file and its
WAL, a pg_dump of the PostgreSQL database, the membership event stream in Redis, and a backup of
the membership database taken before they left (the data keys live in a key store of its own)."""

from __future__ import annotations

import base64
import glob
import os
import sqlite3
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from google.protobuf import field_mask_pb2
from google.type import date_pb2
from loyalty.membership.v1 import membership_service_pb2 as pb
from sqlalchemy import create_engine, func, inspect, select, update
from sqlalchemy.engine import make_url

from services.kit.events import stream_name
from services.kit.timeutil import utcnow
from services.membership import data_keys
from services.membership.context import Membership
from services.membership.pii import PiiKeys
from services.membership.tables import data_keys as key_table
from services.membership.tables import kit, members, retired_keys
from tests.conftest import PII_KEY, Backend, ServiceUnderTest, Shop

ALL_FIELDS = [pb.PROFILE_FIELD_NAME, pb.PROFILE_FIELD_PHONE, pb.PROFILE_FIELD_BIRTHDAY, pb.PROFILE_FIELD_REGION]


def rid() -> str:
    return uuid.uuid4().hex


def _wait_until_published(membership: ServiceUnderTest, shop_id: str) -> None:
    db = membership.running.app.db
    pending = select(func.count()).select_from(kit.outbox).where(
        kit.outbox.c.shop_id == shop_id, kit.outbox.c.published_at.is_(None))
    deadline = time.monotonic() + 20
    while db.read(lambda c: c.execute(pending).scalar()):
        assert time.monotonic() < deadline, "the outbox relay did not publish the events"
        time.sleep(0.05)


def _stored_copies(membership: ServiceUnderTest) -> dict[str, bytes]:
    """Every place the member's data could be read back from, as bytes."""
    url = make_url(membership.running.app.db.url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database)
        return {str(p): p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists()}
    pg_dump = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))[-1]
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    dump = subprocess.run([pg_dump, "--no-owner", f"--dbname={dsn}"], check=True, capture_output=True).stdout
    client = redis.Redis.from_url(os.environ["LOYALTY_TEST_REDIS_URL"])
    try:
        entries = client.xrange(stream_name("membership"))
    finally:
        client.close()
    stream = b"".join(value for _, fields in entries for value in fields.values())
    return {"pg_dump": dump, f"stream {stream_name('membership')}": stream}


def _found(copies: dict[str, bytes], needles: list[str]) -> list[str]:
    """Where a needle occurs, raw (SQLite, the stream) or hex-encoded (bytea in a dump)."""
    hits = []
    for needle in needles:
        raw = needle.encode()
        for where, data in copies.items():
            if raw in data or raw.hex().encode() in data:
                hits.append(f"{needle!r} in {where}")
    return hits


def test_after_leaving_no_copy_of_the_name_phone_region_or_buyer_id_is_readable(
        membership: ServiceUnderTest, shop: Shop) -> None:
    mark = uuid.uuid4().hex[:8]
    name, new_name = f"Zhangsan{mark}张三", f"Lisi{mark}李四"
    phone, new_phone = "13912345678", "13787654321"
    region, new_region = f"Region{mark}", f"Zhejiang{mark}浙江"
    buyer = f"buyer-{mark}-erase"
    joined = shop.api.JoinMember(pb.JoinMemberRequest(
        request_id=rid(), shop_id=shop.shop_id, buyer_id=buyer, join_channel=pb.JOIN_CHANNEL_LIVE_STREAM,
        profile=pb.Profile(name=name, phone=phone, region=region, birthday=date_pb2.Date(month=5, day=17)),
        consent_fields=ALL_FIELDS))
    order_id = f"o-{mark}"
    recorded = shop.api.RecordOrder(pb.RecordOrderRequest(request_id=rid(), shop_id=shop.shop_id,
                                                          order_id=order_id, buyer_id=buyer, amount_fen=150_000))
    assert recorded.buyer_id == buyer
    completed = shop.api.CompleteOrder(pb.CompleteOrderRequest(request_id=rid(), shop_id=shop.shop_id,
                                                               order_id=order_id))
    assert completed.order.counted and completed.order.buyer_id == buyer
    updated = shop.api.UpdateProfile(pb.UpdateProfileRequest(
        request_id=rid(), shop_id=shop.shop_id, member_id=joined.member_id,
        profile=pb.Profile(name=new_name, phone=new_phone, region=new_region),
        update_mask=field_mask_pb2.FieldMask(paths=["name", "phone", "region"])))
    assert updated.profile.name == new_name and updated.profile.phone_masked == "137****4321"
    assert updated.profile.region == new_region
    assert shop.api.GetTier(pb.GetTierRequest(shop_id=shop.shop_id, buyer_id=buyer)).member_id == joined.member_id

    shop.api.LeaveMember(pb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=joined.member_id))
    _wait_until_published(membership, shop.shop_id)

    copies = _stored_copies(membership)
    assert copies and all(copies.values())
    assert _found(copies, [name, new_name, phone, new_phone, region, new_region, buyer]) == []
    left = shop.api.GetMember(pb.GetMemberRequest(shop_id=shop.shop_id, member_id=joined.member_id))
    assert left.buyer_id == "" and left.profile == pb.Profile()
    assert left.cumulative_spend_fen == 150_000  # the anonymised history stays


def test_the_check_finds_what_is_stored_in_the_clear(membership: ServiceUnderTest, shop: Shop) -> None:
    """The search above would see a leak: an order id (not personal, kept in the clear) is found."""
    order_id = f"o-{uuid.uuid4().hex[:8]}-clear"
    shop.api.RecordOrder(pb.RecordOrderRequest(shop_id=shop.shop_id, order_id=order_id, buyer_id="b1",
                                               amount_fen=100))
    assert _found(_stored_copies(membership), [order_id]) != []


def _ctx(membership: ServiceUnderTest) -> Membership:
    return membership.running.app.servicer.ctx


def _join(shop: Shop, name: str, buyer: str) -> str:
    return shop.api.JoinMember(pb.JoinMemberRequest(
        request_id=rid(), shop_id=shop.shop_id, buyer_id=buyer, join_channel=pb.JOIN_CHANNEL_LIVE_STREAM,
        profile=pb.Profile(name=name, region="Region-b"),
        consent_fields=ALL_FIELDS)).member_id


def _backup(membership: ServiceUnderTest, backend: Backend) -> tuple[str, bytes]:
    """A backup of the membership database as an operator takes it (SQLite's backup API, pg_dump),
    restored where it can be read: its URL, and its bytes as stored."""
    url = make_url(membership.running.app.db.url)
    if url.get_backend_name() == "sqlite":
        path = backend.tmp / f"backup-{uuid.uuid4().hex[:6]}.db"
        source, copy = sqlite3.connect(url.database), sqlite3.connect(path)
        source.backup(copy)
        source.close()
        copy.close()
        return f"sqlite:///{path}", path.read_bytes()
    bin_dir = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))[-1]).parent
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    dump = subprocess.run([str(bin_dir / "pg_dump"), "--no-owner", f"--dbname={dsn}"], check=True,
                          capture_output=True).stdout
    restored = backend.database_url("restored")
    target = make_url(restored).set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run([str(bin_dir / "psql"), "-q", "-v", "ON_ERROR_STOP=1", f"--dbname={target}"], input=dump,
                   check=True, capture_output=True)
    return restored, dump


def test_a_backup_taken_before_leaving_holds_no_key_and_cannot_be_read_after_leaving(
        membership: ServiceUnderTest, backend: Backend, shop: Shop) -> None:
    ctx = _ctx(membership)
    name = f"Wangwu{uuid.uuid4().hex[:8]}王五"
    member_id = _join(shop, name, f"buyer-{uuid.uuid4().hex[:8]}-backup")
    backup_url, backup_bytes = _backup(membership, backend)

    engine = create_engine(backup_url)
    with engine.connect() as conn:
        assert "data_keys" not in inspect(conn).get_table_names()
        row = conn.execute(select(members.c.key_id, members.c.name_cipher).where(
            members.c.shop_id == shop.shop_id, members.c.member_id == member_id)).one()
    engine.dispose()
    field = data_keys.member_field(shop.shop_id, member_id, "name")
    wrapped = ctx.keys.db.read(lambda c: c.execute(select(key_table.c.wrapped_key).where(
        key_table.c.shop_id == shop.shop_id, key_table.c.key_id == row.key_id)).scalar())
    assert wrapped and wrapped not in backup_bytes and wrapped.hex().encode() not in backup_bytes
    # The reviewer's way, while the key lives: the backup's ciphertext opens with the stored key.
    assert PiiKeys(base64.b64decode(PII_KEY)).unwrap(shop.shop_id, row.key_id, wrapped).open(
        row.name_cipher, field) == name

    shop.api.LeaveMember(pb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member_id))

    assert ctx.keys.key(shop.shop_id, row.key_id) is None  # nowhere to unwrap a key from: the backup has none
    assert ctx.keys.db.read(lambda c: c.execute(select(func.count()).select_from(key_table).where(
        key_table.c.shop_id == shop.shop_id, key_table.c.key_id == row.key_id)).scalar()) == 0
    if backend.name == "sqlite":  # nor is the destroyed key left in the key store's file or WAL
        keys_path = Path(make_url(ctx.keys.db.url).database)
        for path in (keys_path, Path(f"{keys_path}-wal")):
            assert not path.exists() or wrapped not in path.read_bytes(), path


def test_the_sweeper_destroys_a_key_whose_leaving_stopped_after_its_commit(
        membership: ServiceUnderTest, shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _ctx(membership)
    buyer = f"buyer-{uuid.uuid4().hex[:8]}-crash"
    member_id = _join(shop, "Zhaoliu赵六", buyer)
    key_id = ctx.db.read(lambda c: c.execute(select(members.c.key_id).where(
            members.c.shop_id == shop.shop_id, members.c.member_id == member_id)).scalar())
    with monkeypatch.context() as crash:  # the process stops between the commit and the key's destruction
        crash.setattr(data_keys, "destroy", lambda *_: None)
        shop.api.LeaveMember(pb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member_id))
    assert ctx.keys.key(shop.shop_id, key_id) is not None

    data_keys.sweep(ctx)

    assert ctx.keys.key(shop.shop_id, key_id) is None
    assert ctx.db.read(lambda c: c.execute(select(func.count()).select_from(retired_keys).where(
        retired_keys.c.key_id == key_id)).scalar()) == 0


def test_a_key_left_behind_by_a_crash_is_never_given_to_the_buyer_again(
        membership: ServiceUnderTest, shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _ctx(membership)
    buyer = f"buyer-{uuid.uuid4().hex[:8]}-again"
    member_id = _join(shop, "Sunqi孙七", buyer)
    old = ctx.db.read(lambda c: c.execute(select(members.c.key_id).where(
        members.c.shop_id == shop.shop_id, members.c.member_id == member_id)).scalar())
    with monkeypatch.context() as crash:
        crash.setattr(data_keys, "destroy", lambda *_: None)
        shop.api.LeaveMember(pb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member_id))

    order = shop.api.RecordOrder(pb.RecordOrderRequest(request_id=rid(), shop_id=shop.shop_id,
                                                       order_id=f"o-{uuid.uuid4().hex[:8]}", buyer_id=buyer,
                                                       amount_fen=100))

    assert order.buyer_id == buyer
    assert ctx.keys.key(shop.shop_id, old) is None  # destroyed on the spot, a new key made instead


def test_the_sweeper_destroys_keys_no_committed_row_uses_after_an_hour(
        membership: ServiceUnderTest, shop: Shop) -> None:
    ctx = _ctx(membership)
    member_id = _join(shop, "Zhouba周八", f"buyer-{uuid.uuid4().hex[:8]}-used")
    used = ctx.db.read(lambda c: c.execute(select(members.c.key_id).where(
        members.c.shop_id == shop.shop_id, members.c.member_id == member_id)).scalar())
    orphans = {}  # the member's key is looked at again as if its use had not been seen yet
    for age in ("old", "young"):  # keys whose order or join never committed
        key, wrapped = ctx.pii.new_key(shop.shop_id, f"k_{age}{uuid.uuid4().hex[:8]}")
        ctx.keys.add(shop.shop_id, [(f"hash-{age}-{uuid.uuid4().hex}", key.key_id, wrapped)])
        orphans[age] = key.key_id
    ctx.keys.db.transact(lambda uow: uow.conn.execute(update(key_table).where(
        key_table.c.shop_id == shop.shop_id, key_table.c.key_id.in_([used, orphans["old"]])).values(
        created_at=utcnow() - data_keys.UNUSED_GRACE - timedelta(minutes=1), in_use=False)))

    data_keys.sweep(ctx)

    assert ctx.keys.key(shop.shop_id, orphans["old"]) is None
    assert ctx.keys.key(shop.shop_id, orphans["young"]) is not None
    assert ctx.keys.key(shop.shop_id, used) is not None
    member = shop.api.GetMember(pb.GetMemberRequest(shop_id=shop.shop_id, member_id=member_id))
    assert member.profile.name == "Zhouba周八"


def test_a_retried_order_of_a_buyer_who_left_keeps_no_key_for_them(membership: ServiceUnderTest, shop: Shop) -> None:
    ctx = _ctx(membership)
    buyer = f"buyer-{uuid.uuid4().hex[:8]}-retry"
    member_id = _join(shop, "Wujiu吴九", buyer)
    order = pb.RecordOrderRequest(shop_id=shop.shop_id, order_id=f"o-{uuid.uuid4().hex[:8]}", buyer_id=buyer,
                                  amount_fen=100)
    assert shop.api.RecordOrder(order).buyer_id == buyer
    shop.api.LeaveMember(pb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member_id))

    again = shop.api.RecordOrder(order)  # a late retry: the order id makes it one

    assert (again.order_id, again.amount_fen, again.buyer_id) == (order.order_id, 100, "")
    buyer_hash = ctx.pii.buyer_hash(shop.shop_id, buyer)
    made = ctx.keys.for_buyers(shop.shop_id, [buyer_hash])
    assert [row.in_use for row in made] in ([], [False])  # a key the retry made is no row's: left to the sweeper
    ctx.keys.db.transact(lambda uow: uow.conn.execute(update(key_table).where(
        key_table.c.shop_id == shop.shop_id, key_table.c.buyer_hash == buyer_hash).values(
        created_at=utcnow() - data_keys.UNUSED_GRACE - timedelta(minutes=1))))
    data_keys.sweep(ctx)
    assert ctx.keys.for_buyers(shop.shop_id, [buyer_hash]) == []
