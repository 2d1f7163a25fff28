"""The bench loader (`python -m services.segments seed-bench`): its facts agree with its dated orders as
the events' projection would keep them, the same seed gives the same shop, and a second load
replaces the first. On SQLite and, when LOYALTY_TEST_PG_URL is set, on PostgreSQL (COPY)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select, text

from services.segments import seed_bench
from services.segments.tables import member_categories, member_facts, member_orders, member_tags, programs, tags
from tests.support.scratch_db import scratch_pg_url

NOW = datetime(2026, 6, 15, 12, 0, 0)
SHOP = "bench-shop"
MEMBERS = 3000


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('seed') / 'segments.db'}"
        return
    yield from scratch_pg_url("segments_seed")


@pytest.fixture(scope="module")
def loaded(url: str) -> Iterator[tuple[seed_bench.Loaded, Engine]]:
    result = seed_bench.seed(url, SHOP, MEMBERS, now=NOW)
    engine = create_engine(url)
    yield result, engine
    engine.dispose()


def rows(engine: Engine, table: object) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(table).where(table.c.shop_id == SHOP)))


def test_the_shop_has_its_members_buyers_tags_and_time_zone(loaded: tuple[seed_bench.Loaded, Engine]) -> None:
    result, engine = loaded
    facts = rows(engine, member_facts)
    assert result.members == len(facts) == MEMBERS
    assert len({f.member_id for f in facts}) == MEMBERS
    buyers = [f for f in facts if f.first_purchase_at is not None]
    assert result.buyers == len(buyers) and 0.5 < len(buyers) / MEMBERS < 0.7
    assert 0.01 < sum(1 for f in facts if f.left_at is not None) / MEMBERS < 0.06
    assert {f.tier_level for f in facts} <= set(range(5))
    assert Counter(f.tier_level for f in facts).most_common(1)[0][0] == 0  # skewed to the bottom
    assert min(f.joined_at for f in facts) >= datetime(2023, 6, 1) and max(f.joined_at for f in facts) <= NOW
    assert {t.name for t in rows(engine, tags)} == {name for name, _ in seed_bench.TAGS}
    assert [p.time_zone for p in rows(engine, programs)] == ["Asia/Shanghai"]


def test_facts_agree_with_the_orders_as_the_projection_keeps_them(loaded: tuple[seed_bench.Loaded, Engine]) -> None:
    _, engine = loaded
    orders: dict[str, list] = defaultdict(list)
    for o in rows(engine, member_orders):
        orders[o.member_id].append(o)
    categories: dict[str, list] = defaultdict(list)
    for c in rows(engine, member_categories):
        categories[c.member_id].append(c)
    tagged = {t.member_id for t in rows(engine, member_tags)}
    facts = rows(engine, member_facts)
    referred = Counter(f.referrer_member_id for f in facts if f.referrer_member_id)
    for f in facts:
        mine = orders.get(f.member_id, [])
        assert f.trades == sum(1 for o in mine if not o.fully_refunded)
        assert f.spend_fen == sum(o.amount_fen - o.refunded_fen for o in mine)
        assert f.refunds == sum(o.refunds for o in mine)
        assert f.units == sum(o.units for o in mine)
        assert f.promoted_trades == sum(1 for o in mine if o.coupon_applied or o.campaign_applied)
        assert f.first_purchase_at == (min(o.completed_at for o in mine) if mine else None)
        assert f.last_purchase_at == (max(o.completed_at for o in mine) if mine else None)
        assert f.referrals == referred.get(f.member_id, 0)
        assert all(f.joined_at <= o.completed_at <= NOW for o in mine)
        if f.last_purchase_at is not None:
            assert f.last_activity_at >= f.last_purchase_at
        bought = categories.get(f.member_id, [])
        if f.left_at is not None:  # leaving clears the birth month, the tags and the categories bought
            assert f.birth_month is None and not bought and f.member_id not in tagged
        else:
            assert sum(c.trades for c in bought) == len(mine)
            assert all(c.last_bought_at <= f.last_purchase_at for c in bought)


def test_the_same_seed_gives_the_same_shop_and_a_second_load_replaces_the_first(
        url: str, loaded: tuple[seed_bench.Loaded, Engine]) -> None:
    first, engine = loaded
    before = sorted(tuple(r) for r in rows(engine, member_facts))
    again = seed_bench.seed(url, SHOP, MEMBERS, now=NOW, migrate=False)
    assert (again.members, again.orders, again.categories, again.tagged) == \
        (first.members, first.orders, first.categories, first.tagged)
    after = sorted(tuple(r) for r in rows(engine, member_facts))
    assert after == before
    assert len(rows(engine, member_orders)) == first.orders


def test_the_command_line_loads_into_the_configured_database(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOYALTY_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LOYALTY_SEGMENTS_DB_URL", raising=False)
    seed_bench.main(["--members", "50", "--shop", "cli-shop"])
    assert "seeded shop 'cli-shop'" in capsys.readouterr().out
    engine = create_engine(f"sqlite:///{tmp_path / 'segments.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM member_facts WHERE shop_id = 'cli-shop'")).scalar() == 50
    engine.dispose()
