"""The reports (数据运营) and segment size history through gRPC on both backends. The facts are made
for real (membership imports, joins, orders completed at chosen shop-local times, refunds; points'
sign-ins) and every figure is checked twice: against the numbers worked out by hand from the
orders made, and against a hand-written SQL over segments' own tables (opened read-only through
the database URL the suite started segments on)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.points.v1 import points_service_pb2 as pp
from loyalty.segments.v1 import rules_pb2 as rpb
from loyalty.segments.v1 import segments_service_pb2 as spb
from sqlalchemy import Engine, create_engine, text

from services.kit.jobs import Periodic
from tests.conftest import ADMIN_KEY, AUTH_SECRET, PII_KEY, ServiceUnderTest, Shop, create_shop, failure_of
from tests.integration.test_membership import rid
from tests.support.builders import eventually, join_member, points_shop
from tests.support.segments import facts_when, segments_api
from tests.support.services import Authed

ROOT = Path(__file__).resolve().parents[2]
SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY, MONTH = spb.GRANULARITY_DAY, spb.GRANULARITY_MONTH


@pytest.fixture
def segments(suite: dict[str, ServiceUnderTest]) -> ServiceUnderTest:
    return suite["segments"]


# ----- making the facts ---------------------------------------------------------------------------


def local_today(zone: ZoneInfo) -> date:
    return datetime.now(UTC).astimezone(zone).date()


def at_local(day: date, hour: int, minute: int, zone: ZoneInfo) -> datetime:
    """The UTC instant of a shop-local wall-clock time."""
    return datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)


def stamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def import_members(shop: Shop, rows: list[tuple[str, datetime, int | None]]) -> list[str]:
    """Members who joined in the past (CRM import): (buyer id, join instant, tier level or None)."""
    return list(shop.api.ImportMembers(mpb.ImportMembersRequest(request_id=rid(), shop_id=shop.shop_id, members=[
        mpb.ImportedMember(buyer_id=buyer, join_time=stamp(joined), **({} if tier is None else {"tier_level": tier}))
        for buyer, joined, tier in rows])).member_ids)


@dataclass(frozen=True)
class Trade:
    """An order made through membership, as the test's own record of it."""

    member: str
    day: date  # shop-local
    sales_fen: int  # amount less refunds
    units: int
    fully_refunded: bool = False


def order(shop: Shop, buyer: str, at: datetime, fen: int, units: int) -> str:
    """An order paid a minute before `at` and completed at `at`, with one line of `units` items."""
    order_id = "o-" + rid()[:12]
    shop.api.RecordOrder(mpb.RecordOrderRequest(
        shop_id=shop.shop_id, order_id=order_id, buyer_id=buyer, amount_fen=fen,
        paid_time=stamp(at - timedelta(minutes=1)),
        lines=[mpb.OrderLine(sku_id="sku-1", category_id="dress", quantity=units, amount_fen=fen)]))
    shop.api.CompleteOrder(mpb.CompleteOrderRequest(shop_id=shop.shop_id, order_id=order_id,
                                                    complete_time=stamp(at)))
    return order_id


def refund(shop: Shop, order_id: str, fen: int) -> None:
    shop.api.RefundOrder(mpb.RefundOrderRequest(shop_id=shop.shop_id, order_id=order_id, refund_id=rid()[:16],
                                                amount_fen=fen))


# ----- reading segments' tables by hand -----------------------------------------------------------


@pytest.fixture
def hand(segments: ServiceUnderTest) -> Iterator[Engine]:
    """Segments' database, read-only, at the URL the suite started it on."""
    url = segments.running.app.db.url
    read_only_url = f"sqlite:///file:{url.removeprefix('sqlite:///')}?mode=ro&uri=true" \
        if url.startswith("sqlite") else url
    engine = create_engine(read_only_url)
    yield engine
    engine.dispose()


def rows(engine: Engine, sql: str, **params: Any) -> list[tuple]:
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET TRANSACTION READ ONLY"))
        return [tuple(r) for r in conn.execute(text(sql), params)]


def local_day_sql(engine: Engine, column: str) -> str:
    """The shop-local (Asia/Shanghai, UTC+8 all year) date of a stored naive-UTC column, YYYY-MM-DD."""
    if engine.dialect.name == "sqlite":
        return f"date({column}, '+8 hours')"
    return f"to_char(({column} AT TIME ZONE 'UTC') AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM-DD')"


def hand_sales(engine: Engine, shop_id: str, start: date, end: date, monthly: bool) -> dict[tuple[str, bool], tuple]:
    """(period, new buyer?) -> (buyers, orders, sales, units), by hand: a buyer is new in a period
    when their first trade's day is in it (the period cut to start..end)."""
    day = local_day_sql(engine, "completed_at")
    period = "substr(o.day, 1, 7)" if monthly else "o.day"
    first_period = "substr(f.first_day, 1, 7)" if monthly else "f.first_day"
    found = rows(engine, f"""
        WITH o AS (SELECT member_id, {day} AS day, amount_fen - refunded_fen AS sales, units
                   FROM member_orders WHERE shop_id = :shop AND fully_refunded = :no),
             f AS (SELECT member_id, MIN(day) AS first_day FROM o GROUP BY member_id)
        SELECT {period}, CASE WHEN f.first_day >= :start AND {first_period} = {period} THEN 1 ELSE 0 END,
               COUNT(DISTINCT o.member_id), COUNT(*), SUM(o.sales), SUM(o.units)
        FROM o JOIN f ON f.member_id = o.member_id
        WHERE o.day >= :start AND o.day <= :end
        GROUP BY 1, 2""", shop=shop_id, no=False, start=start.isoformat(), end=end.isoformat())
    return {(p, bool(new)): tuple(int(x) for x in figures) for p, new, *figures in found}


def hand_new_members(engine: Engine, shop_id: str, start: date, end: date) -> dict[str, int]:
    day = local_day_sql(engine, "joined_at")
    found = rows(engine, f"SELECT {day}, COUNT(*) FROM member_facts WHERE shop_id = :shop "
                         f"AND {day} >= :start AND {day} <= :end GROUP BY 1",
                 shop=shop_id, start=start.isoformat(), end=end.isoformat())
    return {d: int(n) for d, n in found}


def reported_sales(report: spb.SalesReport) -> dict[tuple[str, bool], tuple]:
    out = {}
    for p in report.periods:
        for new, f in ((True, p.new_buyers), (False, p.returning_buyers)):
            if f.orders:
                out[(p.period, new)] = (f.buyers, f.orders, f.sales_fen, f.units)
    return out


def modelled_sales(trades: list[Trade], start: date, end: date, monthly: bool) -> dict[tuple[str, bool], tuple]:
    """The same figures worked out from the test's own record of the orders it made."""
    def period(d: date) -> str:
        return d.strftime("%Y-%m") if monthly else d.isoformat()

    counted = [t for t in trades if not t.fully_refunded]
    first = {t.member: min(x.day for x in counted if x.member == t.member) for t in counted}
    groups: dict[tuple[str, bool], list[Trade]] = {}
    for t in counted:
        if start <= t.day <= end:
            new = first[t.member] >= start and period(first[t.member]) == period(t.day)
            groups.setdefault((period(t.day), new), []).append(t)
    return {k: (len({t.member for t in g}), len(g), sum(t.sales_fen for t in g), sum(t.units for t in g))
            for k, g in groups.items()}


# ----- the shop of the scenario -------------------------------------------------------------------


@dataclass
class Scenario:
    shop: Shop
    api: Authed
    today: date
    a: date  # days of the orders (shop-local): a and b are consecutive, c later
    b: date
    c: date
    members: dict[str, str]  # name -> member id
    trades: list[Trade]


def sales(api: Authed, shop: Shop, start: date, end: date, granularity: int) -> spb.SalesReport:
    return api.GetSalesReport(spb.GetSalesReportRequest(shop_id=shop.shop_id, start_date=start.isoformat(),
                                                        end_date=end.isoformat(), granularity=granularity))


@pytest.fixture
def scenario(segments: ServiceUnderTest, points: ServiceUnderTest, shop: Shop) -> Scenario:
    """Seven imported members (m1-m7), two who join today (j1 signs in, j2 leaves), and orders on
    shop-local days p < a < b < c < today:
    - m1: a 10:00 and a 23:30 (the last half hour of day a), b 00:30 (returning on b), c 18:00;
    - m2: a 12:00 refunded in full (not a trade), b 09:00 (so new on b);
    - m3: b 15:00, 200 yuan of which 50 refunded; m5: b 20:00, 33.34 yuan (客单价 rounds down);
    - m4 (joined b 23:50): c 11:00 and c 21:00; m7 joined b 23:45 and never bought;
    - m6: p 12:00 (before the report), c 10:00 (returning on c)."""
    api, ps = segments_api(segments, shop), points_shop(points, shop)
    today = local_today(SHANGHAI)
    p, a, b, c = today - timedelta(days=12), today - timedelta(days=10), today - timedelta(days=9), \
        today - timedelta(days=3)
    long_ago = at_local(today - timedelta(days=20), 10, 0, SHANGHAI)
    names = ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]
    joined = {"m4": at_local(b, 23, 50, SHANGHAI), "m7": at_local(b, 23, 45, SHANGHAI)}
    tiers = {"m1": 2, "m3": 1, "m6": 1}
    ids = import_members(shop, [(f"buyer-{n}", joined.get(n, long_ago), tiers.get(n)) for n in names])
    members = dict(zip(names, ids, strict=True))
    members["j1"] = shop.api.JoinMember(mpb.JoinMemberRequest(request_id=rid(), shop_id=shop.shop_id,
                                                              buyer_id="buyer-j1",
                                                              join_channel=mpb.JOIN_CHANNEL_LIVE_STREAM)).member_id
    members["j2"] = join_member(shop, "buyer-j2")

    trades: list[Trade] = []

    def buy(name: str, day: date, hour: int, minute: int, fen: int, units: int) -> str:
        trades.append(Trade(name, day, fen, units))
        return order(shop, f"buyer-{name}", at_local(day, hour, minute, SHANGHAI), fen, units)

    buy("m6", p, 12, 0, 5000, 1)
    buy("m1", a, 10, 0, 10000, 2)
    buy("m1", a, 23, 30, 5000, 1)
    buy("m1", b, 0, 30, 3000, 3)
    buy("m1", c, 18, 0, 1000, 1)
    refunded = buy("m2", a, 12, 0, 8000, 1)
    refund(shop, refunded, 8000)
    trades[-1] = Trade("m2", a, 0, 1, fully_refunded=True)
    buy("m2", b, 9, 0, 6000, 2)
    partly = buy("m3", b, 15, 0, 20000, 4)
    refund(shop, partly, 5000)
    trades[-1] = Trade("m3", b, 15000, 4)
    buy("m5", b, 20, 0, 3334, 1)
    buy("m4", c, 11, 0, 9999, 1)
    buy("m4", c, 21, 0, 2, 1)
    buy("m6", c, 10, 0, 7000, 2)

    eventually(lambda: ps.api.GetBalance(pp.GetBalanceRequest(shop_id=shop.shop_id, member_id=members["j1"])),
               "points opened j1's account")
    ps.api.RecordAction(pp.RecordActionRequest(request_id=rid(), shop_id=shop.shop_id, member_id=members["j1"],
                                               action=pp.ACTION_DAILY_SIGN_IN))
    tag = api.CreateTag(spb.CreateTagRequest(request_id=rid(), shop_id=shop.shop_id, tag=spb.Tag(name="蕾丝")))
    expected = {"m1": 4, "m2": 1, "m3": 1, "m4": 2, "m5": 1, "m6": 2, "m7": 0}
    for name, n in expected.items():
        refunds = 1 if name in ("m2", "m3") else 0
        facts_when(api, shop, members[name], lambda f, n=n, r=refunds: f.trades == n and f.refunds == r,
                   f"segments counted {name}'s trades", timeout=60.0)
    facts_when(api, shop, members["j1"], lambda f: f.HasField("last_activity_time"), "j1's sign-in reached segments")
    api.TagMembers(spb.TagMembersRequest(request_id=rid(), shop_id=shop.shop_id, tag_id=tag.tag_id,
                                         member_ids=[members["m3"], members["m5"], members["j1"], members["j2"]]))
    shop.api.LeaveMember(mpb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=members["j2"]))
    facts_when(api, shop, members["j2"], lambda f: f.left, "j2's leaving reached segments")
    return Scenario(shop, api, today, a, b, c, members, trades)


# ----- the member report --------------------------------------------------------------------------


def test_the_member_report_counts_members_now(scenario: Scenario, hand: Engine) -> None:
    s, shop_id = scenario, scenario.shop.shop_id
    report = s.api.GetMemberReport(spb.GetMemberReportRequest(shop_id=shop_id))
    # j2 left: counted nowhere. Active within 30 days: the six buyers and j1 (signed in).
    assert (report.members, report.active_members, report.tagged_members) == (8, 7, 3)
    assert (report.members_with_no_trade, report.members_with_one_trade, report.members_with_more_trades) == (2, 3, 3)
    assert [(t.tier_level, t.members) for t in report.tiers] == [(0, 5), (1, 2), (2, 1)]
    assert [(c.join_channel, c.members) for c in report.join_channels] == sorted(
        [(mpb.JOIN_CHANNEL_LIVE_STREAM, 1), (mpb.JOIN_CHANNEL_CRM_IMPORT, 7)])
    assert report.shop_id == shop_id and report.HasField("report_time")
    # The tiers are membership's own.
    levels = Counter(s.shop.api.GetTier(mpb.GetTierRequest(shop_id=shop_id, member_id=m)).tier.level
                     for name, m in s.members.items() if name != "j2")
    assert sorted(levels.items()) == [(t.tier_level, t.members) for t in report.tiers]
    # Within five days: m1, m4, m6 (day c) and j1 (today).
    recent = s.api.GetMemberReport(spb.GetMemberReportRequest(shop_id=shop_id, active_days=5))
    assert recent.active_members == 4

    since = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=30)
    (totals,) = rows(hand, """
        SELECT COUNT(*), SUM(CASE WHEN last_activity_at >= :since THEN 1 ELSE 0 END),
               SUM(CASE WHEN trades = 0 THEN 1 ELSE 0 END), SUM(CASE WHEN trades = 1 THEN 1 ELSE 0 END),
               SUM(CASE WHEN trades >= 2 THEN 1 ELSE 0 END)
        FROM member_facts WHERE shop_id = :shop AND left_at IS NULL""", shop=shop_id, since=since)
    assert tuple(int(x) for x in totals) == (report.members, report.active_members, report.members_with_no_trade,
                                            report.members_with_one_trade, report.members_with_more_trades)
    (tagged,) = rows(hand, """
        SELECT COUNT(DISTINCT t.member_id) FROM member_tags t JOIN member_facts m
          ON m.shop_id = t.shop_id AND m.member_id = t.member_id
        WHERE t.shop_id = :shop AND m.left_at IS NULL""", shop=shop_id)
    assert tagged[0] == report.tagged_members
    by = "SELECT {0}, COUNT(*) FROM member_facts WHERE shop_id = :shop AND left_at IS NULL GROUP BY {0} ORDER BY {0}"
    assert rows(hand, by.format("tier_level"), shop=shop_id) == [(t.tier_level, t.members) for t in report.tiers]
    assert rows(hand, by.format("join_channel"), shop=shop_id) == [
        (c.join_channel, c.members) for c in report.join_channels]


# ----- the sales report ---------------------------------------------------------------------------


def test_sales_by_day_split_new_and_returning_buyers_in_the_shops_days(scenario: Scenario, hand: Engine) -> None:
    s, shop_id = scenario, scenario.shop.shop_id
    report = sales(s.api, s.shop, s.a, s.today, DAY)
    assert report.time_zone == "Asia/Shanghai"
    assert [p.period for p in report.periods] == [(s.a + timedelta(days=i)).isoformat() for i in range(11)]
    by_day = {p.period: p for p in report.periods}
    a, b, c = by_day[s.a.isoformat()], by_day[s.b.isoformat()], by_day[s.c.isoformat()]

    def figures(f: spb.BuyerFigures) -> tuple:
        return f.buyers, f.orders, f.sales_fen, f.units, f.average_order_fen, round(f.units_per_order, 6)

    # Day a: m1's orders at 10:00 and 23:30 (the last half hour is day a's, though b's in UTC+0
    # terms it is not: 15:30 UTC); m2's order was refunded in full, so it is not a trade.
    assert figures(a.new_buyers) == (1, 2, 15000, 3, 15000, 1.5)
    assert figures(a.returning_buyers) == (0, 0, 0, 0, 0, 0.0)
    # Day b: m2 (first trade), m3 (200 less 50 refunded), m5 new: 客单价 24334 / 3 rounds down,
    # 连带率 7 / 3; m1's 00:30 order (16:30 UTC of day a) is b's, a returning buyer's.
    assert figures(b.new_buyers) == (3, 3, 24334, 7, 8111, round(7 / 3, 6))
    assert figures(b.returning_buyers) == (1, 1, 3000, 3, 3000, 3.0)
    assert b.new_members == 2  # m7 and m4 joined at 23:45 and 23:50 shop-local
    # Day c: m4's two orders (new); m1 and m6 returning (m6 first bought before the report starts).
    assert figures(c.new_buyers) == (1, 2, 10001, 2, 10001, 1.0)
    assert figures(c.returning_buyers) == (2, 2, 8000, 3, 4000, 1.5)
    assert by_day[s.today.isoformat()].new_members == 2  # j1 and j2 (who left since)
    assert sum(p.new_members for p in report.periods) == 4

    assert reported_sales(report) == modelled_sales(s.trades, s.a, s.today, monthly=False)
    assert reported_sales(report) == hand_sales(hand, shop_id, s.a, s.today, monthly=False)
    joins = hand_new_members(hand, shop_id, s.a, s.today)
    assert {p.period: p.new_members for p in report.periods if p.new_members} == joins


def test_sales_by_month_count_a_buyer_new_once_in_the_month(scenario: Scenario, hand: Engine) -> None:
    s, shop_id = scenario, scenario.shop.shop_id
    start = s.a
    report = sales(s.api, s.shop, start, s.today, MONTH)
    months = sorted({(start + timedelta(days=i)).strftime("%Y-%m") for i in range((s.today - start).days + 1)})
    assert [p.period for p in report.periods] == months
    assert reported_sales(report) == modelled_sales(s.trades, start, s.today, monthly=True)
    assert reported_sales(report) == hand_sales(hand, shop_id, start, s.today, monthly=True)
    joins = hand_new_members(hand, shop_id, start, s.today)
    by_month = Counter()
    for day, n in joins.items():
        by_month[day[:7]] += n
    assert {p.period: p.new_members for p in report.periods if p.new_members} == dict(by_month)
    assert sum(p.new_members for p in report.periods) == 4
    # In the month of day c, m1 and m6 are new only if their first trade is in that month too.
    month = next(p for p in report.periods if p.period == s.c.strftime("%Y-%m"))
    total = month.new_buyers.orders + month.returning_buyers.orders
    assert total == sum(1 for t in s.trades if not t.fully_refunded and t.day.strftime("%Y-%m") == month.period
                        and t.day >= start)
    if s.a.strftime("%Y-%m") == s.today.strftime("%Y-%m"):
        # The whole report in one month: m1-m5 are new buyers (each order of theirs in the month
        # counts as a new buyer's); m6 is returning (first bought on day p, before the report).
        (only,) = report.periods
        assert (only.new_buyers.buyers, only.new_buyers.orders, only.new_buyers.sales_fen, only.new_buyers.units,
                only.new_buyers.average_order_fen) == (5, 9, 53335, 16, 10667)
        assert only.new_buyers.units_per_order == pytest.approx(16 / 9)
        back = only.returning_buyers
        assert (back.buyers, back.orders, back.sales_fen, back.average_order_fen, back.units_per_order) == \
            (1, 1, 7000, 7000, 2.0)


def test_a_day_ends_at_the_shops_midnight_in_its_own_zone(segments: ServiceUnderTest, membership: ServiceUnderTest,
                                                         admin: Authed) -> None:
    zone = ZoneInfo("America/Los_Angeles")
    shop = create_shop(membership, admin, time_zone=zone.key)
    api = segments_api(segments, shop)
    day = local_today(zone) - timedelta(days=4)
    eventually(lambda: sales(api, shop, day, day, DAY).time_zone == zone.key, "segments knows the shop's zone",
               timeout=60.0)
    (member,) = import_members(shop, [("buyer-la", at_local(day - timedelta(days=5), 9, 0, zone), None)])
    order(shop, "buyer-la", at_local(day, 23, 30, zone), 1000, 1)  # 07:30 UTC the next day
    order(shop, "buyer-la", at_local(day + timedelta(days=1), 0, 30, zone), 2000, 2)
    facts_when(api, shop, member, lambda f: f.trades == 2, "both trades reached segments", timeout=60.0)
    report = sales(api, shop, day, day + timedelta(days=1), DAY)
    first, second = report.periods
    assert (first.period, first.new_buyers.orders, first.new_buyers.sales_fen) == (day.isoformat(), 1, 1000)
    assert (second.returning_buyers.orders, second.returning_buyers.sales_fen, second.new_buyers.orders) == (1, 2000, 0)


# ----- repurchase ---------------------------------------------------------------------------------


def test_the_repurchase_rate_is_repeat_buyers_over_buyers_in_the_window(scenario: Scenario, hand: Engine) -> None:
    s, shop_id = scenario, scenario.shop.shop_id

    def report(days: int) -> spb.RepurchaseReport:
        return s.api.GetRepurchaseReport(spb.GetRepurchaseReportRequest(shop_id=shop_id, window_days=days))

    # 45 days: six buyers (m2's refunded order does not make m2 a repeat buyer); m1, m4, m6 again.
    wide = report(45)
    assert (wide.window_days, wide.buyers, wide.repeat_buyers, wide.repurchase_rate_bp) == (45, 6, 3, 5000)
    # 5 days: day c only: m1, m4 (twice), m6 — 1 / 3 is 3333 basis points, rounded down.
    narrow = report(5)
    assert (narrow.buyers, narrow.repeat_buyers, narrow.repurchase_rate_bp) == (3, 1, 3333)
    for got in (wide, narrow):
        since = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=got.window_days)
        (found,) = rows(hand, """
            SELECT COUNT(*), SUM(CASE WHEN n >= 2 THEN 1 ELSE 0 END) FROM (
              SELECT member_id, COUNT(*) AS n FROM member_orders
              WHERE shop_id = :shop AND fully_refunded = :no AND completed_at >= :since GROUP BY member_id) x""",
                        shop=shop_id, no=False, since=since)
        assert (int(found[0]), int(found[1])) == (got.buyers, got.repeat_buyers)


def test_an_empty_shop_reports_zeros(segments: ServiceUnderTest, shop: Shop) -> None:
    api = segments_api(segments, shop)
    members = api.GetMemberReport(spb.GetMemberReportRequest(shop_id=shop.shop_id))
    assert (members.members, members.active_members, list(members.tiers)) == (0, 0, [])
    again = api.GetRepurchaseReport(spb.GetRepurchaseReportRequest(shop_id=shop.shop_id, window_days=90))
    assert (again.buyers, again.repurchase_rate_bp) == (0, 0)
    today = local_today(SHANGHAI)
    report = sales(api, shop, today - timedelta(days=365), today, DAY)
    assert len(report.periods) == 366
    assert all(p.new_buyers.orders == p.returning_buyers.orders == 0 for p in report.periods)
    assert report.periods[0].new_buyers.units_per_order == 0.0
    year, month = divmod(today.year * 12 + today.month - 1 - 35, 12)
    assert len(sales(api, shop, date(year, month + 1, 1), today, MONTH).periods) == 36


# ----- segment size history -----------------------------------------------------------------------


def history(api: Authed, shop: Shop, segment_id: str, days: int = 0) -> list[tuple[str, int]]:
    found = api.GetSegmentSizeHistory(spb.GetSegmentSizeHistoryRequest(shop_id=shop.shop_id, segment_id=segment_id,
                                                                       days=days))
    assert all(s.HasField("count_time") for s in found.sizes)
    return [(s.day, s.count) for s in found.sizes]


def snapshot_command(segments: ServiceUnderTest) -> str:
    """`python -m services.segments snapshot-segment-sizes`, as the daily CronJob runs it."""
    env = {**os.environ, "LOYALTY_SEGMENTS_DB_URL": segments.running.app.db.url, "LOYALTY_ADMIN_KEY": ADMIN_KEY,
           "LOYALTY_AUTH_SECRET": AUTH_SECRET.decode(), "LOYALTY_PII_KEY": PII_KEY, "LOYALTY_REDIS_URL": ""}
    done = subprocess.run([sys.executable, "-m", "services.segments", "snapshot-segment-sizes"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_size_history_follows_counts_and_the_daily_snapshot(segments: ServiceUnderTest, membership: ServiceUnderTest,
                                                            admin: Authed, shop: Shop) -> None:
    api = segments_api(segments, shop)
    today = local_today(SHANGHAI).isoformat()
    first = join_member(shop)
    facts_when(api, shop, first, lambda f: f.member_id, "segments heard of the member")
    saved = api.CreateSegment(spb.CreateSegmentRequest(request_id=rid(), shop_id=shop.shop_id, segment=spb.Segment(
        name="普通会员", rule=rpb.Rule(condition=rpb.Condition(fact=rpb.FACT_TIER_LEVEL, op=rpb.OPERATOR_EQ,
                                                               values=[0])))))
    assert history(api, shop, saved.segment_id) == []
    assert api.CountSegment(spb.CountSegmentRequest(shop_id=shop.shop_id, segment_id=saved.segment_id)).count == 1
    assert history(api, shop, saved.segment_id) == [(today, 1)]
    assert history(api, shop, "predefined.new_to_activate") == []

    second = join_member(shop)
    facts_when(api, shop, second, lambda f: f.member_id, "segments heard of the second member")
    # The service's own hourly job counts the segments not counted yet today.
    (job,) = [j for worker in segments.running.app.background if isinstance(worker, Periodic)
              for j in worker.jobs if j.name == "snapshot-segment-sizes"]
    job.fn()
    assert history(api, shop, saved.segment_id) == [(today, 1)]
    assert history(api, shop, "predefined.new_to_activate") == [(today, 2)]
    # The daily command counts them all again: today's row is the day's last count.
    assert "recorded the size of" in snapshot_command(segments)
    assert history(api, shop, saved.segment_id, days=1) == [(today, 2)]
    assert history(api, shop, "predefined.new_to_activate", days=400) == [(today, 2)]
    assert history(api, shop, "predefined.repurchase_window") == [(today, 0)]
    listed = api.GetSegment(spb.GetSegmentRequest(shop_id=shop.shop_id, segment_id=saved.segment_id))
    assert listed.last_count == 2

    other = create_shop(membership, admin)
    for segment_id in (saved.segment_id, "sg_000000000000000000000000"):
        with pytest.raises(grpc.RpcError) as caught:
            history(segments_api(segments, other), other, segment_id)
        assert (caught.value.code(), failure_of(caught.value).reason) == (grpc.StatusCode.NOT_FOUND,
                                                                          "SEGMENT_NOT_FOUND")


# ----- bad inputs ---------------------------------------------------------------------------------


def test_bad_inputs_are_refused_field_by_field(segments: ServiceUnderTest, shop: Shop) -> None:
    api = segments_api(segments, shop)
    shop_id = shop.shop_id

    def refused(call: Any, request: Any) -> tuple[str, dict[str, str]]:
        with pytest.raises(grpc.RpcError) as caught:
            call(request)
        failure = failure_of(caught.value)
        assert failure.code is grpc.StatusCode.INVALID_ARGUMENT
        return failure.reason, failure.fields

    def sales_request(start: str, end: str, granularity: int = DAY) -> spb.GetSalesReportRequest:
        return spb.GetSalesReportRequest(shop_id=shop_id, start_date=start, end_date=end, granularity=granularity)

    for request, reason in [
        (sales_request("", "2026-11-01"), "START_DATE_REQUIRED"),
        (sales_request("2026-13-01", "2026-11-01"), "INVALID_START_DATE"),
        (sales_request("20261101", "2026-11-30"), "INVALID_START_DATE"),
        (sales_request("2026-11-01", "2026-11-31"), "INVALID_END_DATE"),
        (sales_request("2026-11-02", "2026-11-01"), "INVALID_END_DATE"),
        (sales_request("2025-01-01", "2026-01-02"), "INVALID_END_DATE"),  # 367 days
        (sales_request("2023-01-01", "2026-01-31", MONTH), "INVALID_END_DATE"),  # 37 months
        (sales_request("2026-11-01", "2026-11-30", 0), "GRANULARITY_REQUIRED"),
        (sales_request("2026-11-01", "2026-11-30", 9), "INVALID_GRANULARITY"),
    ]:
        assert refused(api.GetSalesReport, request)[0] == reason, request
    reason, fields = refused(api.GetSalesReport, spb.GetSalesReportRequest(shop_id=shop_id))
    assert set(fields) == {"start_date", "end_date", "granularity"}
    assert len(api.GetSalesReport(sales_request("2025-01-01", "2026-01-01")).periods) == 366
    assert len(api.GetSalesReport(sales_request("2023-01-15", "2025-12-01", MONTH)).periods) == 36

    for days in (-1, 3651):
        assert refused(api.GetMemberReport, spb.GetMemberReportRequest(shop_id=shop_id, active_days=days))[0] == \
            "INVALID_ACTIVE_DAYS"
    assert refused(api.GetRepurchaseReport, spb.GetRepurchaseReportRequest(shop_id=shop_id))[0] == \
        "WINDOW_DAYS_REQUIRED"
    for days in (-5, 3651):
        assert refused(api.GetRepurchaseReport, spb.GetRepurchaseReportRequest(shop_id=shop_id, window_days=days))[0] \
            == "INVALID_WINDOW_DAYS"
    for days, reason in ((401, "INVALID_DAYS"), (-1, "INVALID_DAYS")):
        assert refused(api.GetSegmentSizeHistory, spb.GetSegmentSizeHistoryRequest(
            shop_id=shop_id, segment_id="predefined.churn_risk", days=days))[0] == reason
    assert refused(api.GetSegmentSizeHistory, spb.GetSegmentSizeHistoryRequest(shop_id=shop_id))[0] == \
        "SEGMENT_ID_REQUIRED"
