"""Typed cache values and the per-shop settings memo."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from enum import IntEnum
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String, Table, insert, select, update

from services.kit.cache import LocalCache
from services.kit.codec import CodecError, DataclassCodec, TypedCache
from services.kit.memo import ShopMemo
from services.kit.storage import Database, UnitOfWork
from services.kit.tables import kit_tables


class Kind(IntEnum):
    SILVER = 2
    GOLD = 3


@dataclass(frozen=True)
class Expiry:
    at: datetime
    amount: int


@dataclass(frozen=True)
class Balance:
    member_id: str
    available: int
    rate: float
    closed: bool
    kind: Kind
    birthday: date | None
    next_expiry: Expiry | None
    levels: tuple[int, ...]


VALUE = Balance("m-1", 1200, 1.5, False, Kind.GOLD, date(1990, 5, 17), Expiry(datetime(2027, 1, 1, 16), 300), (1, 2))


def test_a_value_round_trips_with_its_types() -> None:
    codec = DataclassCodec(Balance)
    decoded = codec.decode(codec.encode(VALUE))
    assert decoded == VALUE
    assert isinstance(decoded.kind, Kind) and isinstance(decoded.levels, tuple)


def test_empty_optionals_round_trip() -> None:
    codec = DataclassCodec(Balance)
    value = Balance("m|2", 0, 0.0, True, Kind.SILVER, None, None, ())
    assert codec.decode(codec.encode(value)) == value  # a "|" in a value is just text


def test_values_of_a_frozen_class_are_decoded_once_and_shared_but_mutable_ones_never() -> None:
    codec = DataclassCodec(Balance)
    raw = codec.encode(VALUE)
    assert codec.decode(raw) is codec.decode(bytes(raw))

    @dataclass
    class Draft:
        member_id: str

    drafts = DataclassCodec(Draft)
    raw = drafts.encode(Draft("m-1"))
    assert drafts.decode(raw) == drafts.decode(raw) and drafts.decode(raw) is not drafts.decode(raw)


def test_the_bytes_are_compact() -> None:
    assert len(DataclassCodec(Balance).encode(VALUE)) < 100


def test_a_value_of_another_version_of_the_class_is_refused() -> None:
    @dataclass(frozen=True)
    class Balance:  # the same name, one field more: a newer release
        member_id: str
        available: int
        held: int

    with pytest.raises(CodecError):
        DataclassCodec(Balance).decode(DataclassCodec(globals()["Balance"]).encode(VALUE))


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b'{"a":1}', b"1|2|3", b"\xff\xfe"])
def test_garbage_is_refused(raw: bytes) -> None:
    with pytest.raises(CodecError):
        DataclassCodec(Balance).decode(raw)


def test_fields_without_an_encoding_are_refused_when_the_codec_is_made() -> None:
    @dataclass
    class Odd:
        payload: bytes

    with pytest.raises(TypeError, match="no cache encoding"):
        DataclassCodec(Odd)


def test_a_typed_cache_reads_another_shape_as_a_miss() -> None:
    cache = LocalCache()
    balances = TypedCache(cache, DataclassCodec(Balance))
    balances.add("k", VALUE, 60)
    assert balances.get("k") == VALUE
    cache.set("old", b"1200|0|5000||0", 60)  # what an older release wrote
    assert balances.get("old") is None
    assert balances.get("missing") is None


# ----- the per-shop settings memo --------------------------------------------------------------

metadata = MetaData()
kit = kit_tables(metadata)
programs = Table("programs", metadata, Column("shop_id", String(64), primary_key=True),
                 Column("name", String(64), nullable=False))


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'memo.db'}", service="memo-test", kit=kit, pool_size=4)
    metadata.create_all(database.engine)
    database.transact(lambda uow: uow.conn.execute(insert(programs), {"shop_id": "s1", "name": "first"}))
    return database


class Loader:
    def __init__(self, db: Database):
        self.db, self.loads = db, 0
        self.during_load: list[Callable[[], None]] = []

    def __call__(self, shop_id: str, conn: object) -> str:
        self.loads += 1
        query = select(programs.c.name).where(programs.c.shop_id == shop_id)
        name = conn.execute(query).scalar_one() if conn is not None else self.db.read(
            lambda c: c.execute(query).scalar_one())
        for action in self.during_load:
            action()
        self.during_load.clear()
        return name


def rename(db: Database, memo: ShopMemo, name: str, *, fail: bool = False) -> None:
    def work(uow: UnitOfWork) -> None:
        uow.conn.execute(update(programs).where(programs.c.shop_id == "s1").values(name=name))
        memo.invalidate(uow, "s1")
        if fail:
            raise RuntimeError("rolled back")

    db.transact(work)


def test_the_memo_loads_once_within_its_ttl(db: Database) -> None:
    load = Loader(db)
    memo = ShopMemo(load, ttl=60)
    assert [memo.get("s1") for _ in range(5)] == ["first"] * 5
    assert load.loads == 1


def test_a_change_is_seen_right_after_its_commit(db: Database) -> None:
    memo = ShopMemo(Loader(db), ttl=60)
    assert memo.get("s1") == "first"
    rename(db, memo, "second")
    assert memo.get("s1") == "second"


def test_a_value_read_before_a_commit_is_not_kept_after_it(db: Database) -> None:
    load = Loader(db)
    memo = ShopMemo(load, ttl=60)
    # The reader reads "first"; before it stores it, another thread commits "second".
    load.during_load.append(lambda: rename(db, memo, "second"))
    assert memo.get("s1") == "first"
    assert memo.get("s1") == "second"


def test_an_uncommitted_change_read_through_its_own_transaction_is_not_kept(db: Database) -> None:
    memo = ShopMemo(Loader(db), ttl=60)

    def work(uow: UnitOfWork) -> None:
        uow.conn.execute(update(programs).where(programs.c.shop_id == "s1").values(name="never"))
        memo.invalidate(uow, "s1")
        assert memo.get("s1", uow.conn) == "never"
        raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        db.transact(work)
    assert memo.get("s1") == "first"


def test_a_failed_load_is_not_memoised(db: Database) -> None:
    calls = []

    def load(shop_id: str, conn: object) -> str:
        calls.append(shop_id)
        raise LookupError("no program")

    memo = ShopMemo(load, ttl=60)
    for _ in range(2):
        with pytest.raises(LookupError):
            memo.get("nope")
    assert calls == ["nope", "nope"]


def test_when_the_ttl_ends_one_caller_reloads_while_the_others_keep_the_old_value() -> None:
    names = iter(["first", "second"])
    release, loading, loads = threading.Event(), threading.Event(), []

    def load(shop_id: str, conn: object) -> str:
        loads.append(shop_id)
        if len(loads) == 2:  # the reload waits until the other callers were served
            loading.set()
            release.wait(5)
        return next(names)

    memo = ShopMemo(load, ttl=0.05)
    assert memo.get("s1") == "first"
    time.sleep(0.06)
    reloader = threading.Thread(target=memo.get, args=("s1",))
    reloader.start()
    assert loading.wait(5)
    assert [memo.get("s1") for _ in range(3)] == ["first"] * 3  # no stampede of loads
    release.set()
    reloader.join(5)
    assert memo.get("s1") == "second" and len(loads) == 2
