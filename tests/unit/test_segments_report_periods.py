"""The reports' shop-local periods: each day's and month's UTC start comes from the zone (a day of
23 or 25 hours across a daylight saving change, months cut to the dates asked), and the CASE that
buckets an instant finds the same period a plain bisect finds, on SQLite and on PostgreSQL (when
LOYALTY_TEST_PG_URL is set), boundaries included. The integration tests cannot backdate orders to
a daylight saving change; these can."""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import DateTime, Engine, create_engine, literal, select

from services.segments.commands_reports import Granularity
from services.segments.reports import bucket, periods_of

BERLIN, SHANGHAI = ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Shanghai")


def test_a_day_across_a_daylight_saving_change_has_its_own_length() -> None:
    # Berlin moves from UTC+1 to UTC+2 on 2026-03-29 and back on 2026-10-25.
    spring = periods_of(date(2026, 3, 28), date(2026, 3, 30), Granularity.DAY, BERLIN)
    assert spring == [("2026-03-28", datetime(2026, 3, 27, 23)), ("2026-03-29", datetime(2026, 3, 28, 23)),
                      ("2026-03-30", datetime(2026, 3, 29, 22)), ("", datetime(2026, 3, 30, 22))]
    autumn = periods_of(date(2026, 10, 25), date(2026, 10, 25), Granularity.DAY, BERLIN)
    assert autumn[1][1] - autumn[0][1] == timedelta(hours=25)


def test_months_are_cut_to_the_dates_asked() -> None:
    months = periods_of(date(2026, 1, 15), date(2026, 3, 10), Granularity.MONTH, SHANGHAI)
    assert months == [("2026-01", datetime(2026, 1, 14, 16)), ("2026-02", datetime(2026, 1, 31, 16)),
                      ("2026-03", datetime(2026, 2, 28, 16)), ("", datetime(2026, 3, 10, 16))]
    december = periods_of(date(2026, 12, 1), date(2027, 1, 31), Granularity.MONTH, SHANGHAI)
    assert [label for label, _ in december] == ["2026-12", "2027-01", ""]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "sqlite":
        made = create_engine("sqlite://")
    else:
        url = os.environ.get("LOYALTY_TEST_PG_URL")
        if not url:
            pytest.skip("PostgreSQL: set LOYALTY_TEST_PG_URL (scripts/test-backends.sh does)")
        made = create_engine(url)
    yield made
    made.dispose()


SPRING = periods_of(date(2026, 3, 1), date(2026, 4, 15), Granularity.DAY, BERLIN)
STARTS = [at for _, at in SPRING]


@settings(max_examples=200, deadline=None)
@given(at=st.one_of(st.sampled_from(STARTS[:-1]),
                    st.datetimes(min_value=STARTS[0], max_value=STARTS[-1] - timedelta(microseconds=1))))
def test_the_case_finds_the_period_a_bisect_finds(engine: Engine, at: datetime) -> None:
    at = at.replace(microsecond=0)
    with engine.connect() as conn:
        found = conn.execute(select(bucket(literal(at, DateTime), STARTS))).scalar_one()
    assert found == bisect.bisect_right(STARTS, at) - 1


def test_half_past_eleven_at_night_is_that_days(engine: Engine) -> None:
    late = datetime(2026, 3, 29, 21, 30)  # 23:30 in Berlin on the day of the change (UTC+2 by then)
    early = datetime(2026, 3, 29, 22, 30)  # 00:30 the next day
    with engine.connect() as conn:
        days = [SPRING[conn.execute(select(bucket(literal(at, DateTime), STARTS))).scalar_one()][0]
                for at in (late, early)]
    assert days == ["2026-03-29", "2026-03-30"]
