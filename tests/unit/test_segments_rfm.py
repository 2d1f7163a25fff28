"""The RFM recompute (rfm.py) against a plain Python reading of the same definition, over facts
dated in the past (which the integration tests cannot backdate beyond a month), on in-memory SQLite
and on PostgreSQL when LOYALTY_TEST_PG_URL is set: quintile bounds, scores (equal values alike),
classes, counts, who is scored, and another shop untouched."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, insert, select

from services.segments import rfm
from services.segments.tables import member_facts, metadata, programs, rfm_runs, rfm_scores
from tests.support.scratch_db import scratch_engine

NOW = datetime(2026, 6, 15, 12, 0, 0)
SHOP = "shop-1"
TABLES = [member_facts, rfm_scores, rfm_runs, programs]



@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """The tables in memory (SQLite), and in a database of their own on PostgreSQL when
    LOYALTY_TEST_PG_URL is set (scripts/test-backends.sh sets it)."""
    yield from scratch_engine(request.param, metadata, TABLES, "segments_rfm")


def facts_row(shop_id: str, member_id: str, *, trades: int, spend_fen: int, last: datetime | None,
              left: bool = False) -> dict:
    return {"shop_id": shop_id, "member_id": member_id, "left_at": NOW if left else None, "joined_at": NOW,
            "join_channel": 0, "referrer_member_id": "", "tier_level": 0, "points_balance": 0,
            "last_purchase_at": last, "trades": trades, "spend_fen": spend_fen, "refunds": 0, "referrals": 0,
            "units": 0, "promoted_trades": 0, "updated_at": NOW}


def plain_scores(values: list[int], *, fewer_is_better: bool) -> tuple[list[int], list[int]]:
    """NTILE(5) read plainly: sorted worst first, fifths of sizes n // 5 (+1 for the first n % 5);
    the k-th bound is the best value of the first k fifths; a score is 1 + the bounds passed."""
    ordered = sorted(values, reverse=fewer_is_better)
    q, r = divmod(len(ordered), 5)
    sizes = [q + (1 if k < r else 0) for k in range(5)]
    bounds = [ordered[sum(sizes[:k]) - 1] for k in range(1, 5)]
    passed = (lambda v, b: v < b) if fewer_is_better else (lambda v, b: v > b)
    return bounds, [1 + sum(passed(v, b) for b in bounds) for v in values]


people = st.lists(st.tuples(
    st.integers(0, 400),  # days since the last purchase
    st.integers(0, 23),  # and hours
    st.integers(0, 6),  # trades (0: never bought)
    st.integers(0, 30) | st.integers(0, 10**9),  # spend in fen
    st.booleans() | st.just(False),  # left
), max_size=30)


@settings(max_examples=150, deadline=None)
@given(members=people)
def test_a_recompute_scores_as_the_plain_reading(engine: Engine, members: list[tuple]) -> None:
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(delete(table))
        rows = [facts_row(SHOP, f"m{i:02d}", trades=trades, spend_fen=spend if trades else 0,
                          last=NOW - timedelta(days=days, hours=hours) if trades else None, left=left)
                for i, (days, hours, trades, spend, left) in enumerate(members)]
        if rows:
            conn.execute(insert(member_facts), rows)
        # Another shop's buyer and scores: never read or replaced by this shop's recompute.
        conn.execute(insert(member_facts).values(facts_row("shop-2", "m00", trades=9, spend_fen=9, last=NOW)))
        conn.execute(insert(rfm_scores).values(shop_id="shop-2", member_id="m00", recency=2, frequency=2, monetary=2,
                                               rfm_class=8))
        summary = rfm.recompute(SimpleNamespace(conn=conn), SHOP, NOW)
        scored = {r.member_id: r for r in conn.execute(select(rfm_scores).where(rfm_scores.c.shop_id == SHOP))}
        theirs = conn.execute(select(rfm_scores.c.rfm_class).where(rfm_scores.c.shop_id == "shop-2")).all()
        again = rfm.summary(conn, SHOP)
    assert theirs == [(8,)] and again == summary

    buyers = [(f"m{i:02d}", days, trades, spend) for i, (days, _, trades, spend, left) in enumerate(members)
              if trades and not left]
    assert sorted(scored) == sorted(b[0] for b in buyers)
    assert summary.scored_members == len(buyers) and summary.computed_at == NOW
    if not buyers:
        assert summary.bounds == rfm.Bounds() and set(summary.counts.values()) == {0}
        return
    r_bounds, r = plain_scores([b[1] for b in buyers], fewer_is_better=True)
    f_bounds, f = plain_scores([b[2] for b in buyers], fewer_is_better=False)
    m_bounds, m = plain_scores([b[3] for b in buyers], fewer_is_better=False)
    assert summary.bounds == rfm.Bounds(tuple(r_bounds), tuple(f_bounds), tuple(m_bounds))
    expected = {}
    for i, (member_id, *_) in enumerate(buyers):
        expected[member_id] = (r[i], f[i], m[i], rfm.class_of(r[i], f[i], m[i]))
        got = scored[member_id]
        assert (got.recency, got.frequency, got.monetary, got.rfm_class) == expected[member_id]
    assert summary.counts == {c: sum(1 for e in expected.values() if e[3] is c) for c in rfm.RfmClass}
    # A score depends on the value alone.
    for id1, d1, t1, s1 in buyers:
        for id2, d2, t2, s2 in buyers:
            a, b = scored[id1], scored[id2]
            assert (d1 != d2 or a.recency == b.recency) and (t1 != t2 or a.frequency == b.frequency)
            assert s1 != s2 or a.monetary == b.monetary


def test_the_classes_follow_the_proto() -> None:
    c = rfm.RfmClass
    assert [rfm.class_of(r, f, m) for r, f, m in
            [(5, 5, 5), (3, 2, 3), (2, 3, 3), (1, 1, 5), (3, 3, 2), (5, 1, 1), (2, 4, 1), (2, 2, 2)]] == [
        c.IMPORTANT_VALUE, c.IMPORTANT_DEVELOP, c.IMPORTANT_KEEP, c.IMPORTANT_RETAIN, c.GENERAL_VALUE,
        c.GENERAL_DEVELOP, c.GENERAL_KEEP, c.GENERAL_RETAIN]


def test_shops_are_due_a_day_after_their_last_recompute(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(delete(table))
        for shop_id in ("shop-a", "shop-b"):
            conn.execute(insert(member_facts).values(facts_row(shop_id, "m1", trades=1, spend_fen=5, last=NOW)))
        conn.execute(insert(programs).values(shop_id="shop-c", time_zone="Asia/Shanghai", updated_at=NOW))
        assert rfm.shops_due(conn, NOW) == ["shop-a", "shop-b", "shop-c"]
        rfm.recompute(SimpleNamespace(conn=conn), "shop-a", NOW - timedelta(hours=2))
        rfm.recompute(SimpleNamespace(conn=conn), "shop-b", NOW - timedelta(days=2))
        assert rfm.shops_due(conn, NOW - timedelta(days=1)) == ["shop-b", "shop-c"]
        assert rfm.shops_due(conn, NOW) == ["shop-a", "shop-b", "shop-c"]
