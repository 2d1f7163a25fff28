"""The tier ladder is written twice: domain.Ladder.evaluate() (one member at a time) and
tiers.target_level_sql() (every member at once, for re-evaluation). For random ladders of every
qualification mode and downgrade policy, and random members, both must give the same tier. The
SQL runs on a real SQLite file, and on PostgreSQL when LOYALTY_TEST_PG_URL is set."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import BigInteger, Column, Integer, MetaData, SmallInteger, Table, create_engine, delete, insert, select
from sqlalchemy.engine import Engine

from services.kit.errors import Violations
from services.membership.domain import DowngradePolicy, Ladder, QualificationMode, Tier, validate_tiers
from services.membership.tiers import target_level_sql

metadata = MetaData()
figures = Table(
    "ladder_sql_figures_" + uuid.uuid4().hex[:8],
    metadata,
    Column("id", Integer, primary_key=True),
    Column("spend", BigInteger, nullable=False),
    Column("trades", Integer, nullable=False),
    Column("growth", BigInteger, nullable=False),
    Column("level", SmallInteger, nullable=False),
)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    if request.param == "postgres":
        url = os.environ.get("LOYALTY_TEST_PG_URL")
        if not url:
            pytest.skip("PostgreSQL: set LOYALTY_TEST_PG_URL (`make test` does)")
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('ladder') / 'figures.db'}"
    engine = create_engine(url)
    metadata.create_all(engine)
    yield engine
    metadata.drop_all(engine)
    engine.dispose()


@st.composite
def ladders(draw: st.DrawFn) -> Ladder:
    """A valid ladder: the measures its mode uses rise strictly, the others take any values."""
    mode = draw(st.sampled_from(list(QualificationMode)))
    policy = draw(st.sampled_from(list(DowngradePolicy)))
    uses_spend = mode is not QualificationMode.TRADE_COUNT
    uses_count = mode is not QualificationMode.CUMULATIVE_SPEND
    uses_growth = mode is QualificationMode.GROWTH
    tiers = [Tier(0, "t0", "tier 0", 0, 0, 10000, 1000)]
    spend, trades, growth = 0, 0, 0
    for level in range(1, draw(st.integers(min_value=1, max_value=6))):
        step_spend = draw(st.integers(min_value=1 if uses_spend else -spend, max_value=500_000))
        step_trades = draw(st.integers(min_value=1 if uses_count else -trades, max_value=30))
        step_growth = draw(st.integers(min_value=1 if uses_growth else -growth, max_value=50_000))
        spend, trades, growth = spend + step_spend, trades + step_trades, growth + step_growth
        tiers.append(Tier(level, f"t{level}", f"tier {level}", spend, trades, 10000, 1000, min_growth=growth))
    v = Violations()
    validate_tiers(tiers, v, mode)
    assert not v.items, v.items
    return Ladder(tuple(tiers), mode, policy)


def _members(ladder: Ladder) -> st.SearchStrategy[list[tuple[int, int, int, int]]]:
    """(spend, trades, growth, current level): often exactly at, or one below, a threshold; levels may lie
    above the ladder's top (as right after a ladder shrinks)."""
    spends = sorted({t.min_spend_fen + d for t in ladder.tiers for d in (-1, 0)} - {-1})
    counts = sorted({t.min_trades + d for t in ladder.tiers for d in (-1, 0)} - {-1})
    spend = st.one_of(st.sampled_from(spends), st.integers(min_value=0, max_value=4_000_000))
    trades = st.one_of(st.sampled_from(counts), st.integers(min_value=0, max_value=250))
    growths = sorted({t.min_growth + d for t in ladder.tiers for d in (-1, 0)} - {-1})
    growth = st.one_of(st.sampled_from(growths), st.integers(min_value=0, max_value=400_000))
    level = st.integers(min_value=0, max_value=ladder.top + 2)
    return st.lists(st.tuples(spend, trades, growth, level), min_size=1, max_size=40)


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_set_based_sql_and_the_python_ladder_give_every_member_the_same_tier(engine: Engine,
                                                                              data: st.DataObject) -> None:
    ladder = data.draw(ladders())
    people = data.draw(_members(ladder))
    with engine.begin() as conn:
        conn.execute(delete(figures))
        conn.execute(insert(figures), [{"id": i, "spend": s, "trades": t, "growth": g, "level": lv}
                                       for i, (s, t, g, lv) in enumerate(people)])
        target = target_level_sql(ladder, figures.c.spend, figures.c.trades, figures.c.level, figures.c.growth)
        by_sql = dict(conn.execute(select(figures.c.id, target)).all())
    assert by_sql == {i: ladder.evaluate(lv, s, t, g) for i, (s, t, g, lv) in enumerate(people)}
