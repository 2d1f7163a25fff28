"""What operators ask of the reports (数据运营) and of a segment's size history, each checking its
fields when made (every violation at once, with its field path)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from enum import IntEnum

from services.kit.errors import Violations
from services.kit.validation import check_ids

DEFAULT_ACTIVE_DAYS = 30
MAX_WINDOW_DAYS = 3650
MAX_REPORT_DAYS = 366
MAX_REPORT_MONTHS = 36
DEFAULT_HISTORY_DAYS = 30
MAX_HISTORY_DAYS = 400
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class Granularity(IntEnum):
    DAY = 1
    MONTH = 2


def _date(value: str, path: str, v: Violations) -> date | None:
    if not value:
        v.add(path, "required")
        return None
    try:
        if _DATE.fullmatch(value):
            return date.fromisoformat(value)
    except ValueError:
        pass
    v.add(path, "a date YYYY-MM-DD")
    return None


def months_between(start: date, end: date) -> int:
    """The calendar months from start's to end's, both counted."""
    return (end.year - start.year) * 12 + end.month - start.month + 1


def _span(start: date, end: date, granularity: Granularity | None, v: Violations) -> None:
    """end_date on or after start_date, and the span within the granularity's limit."""
    if not v.check(start <= end, "end_date", "on or after start_date"):
        return
    if granularity is Granularity.DAY:
        v.check((end - start).days < MAX_REPORT_DAYS, "end_date",
                f"at most {MAX_REPORT_DAYS} days from start_date (by day)")
    elif granularity is Granularity.MONTH:
        v.check(months_between(start, end) <= MAX_REPORT_MONTHS, "end_date",
                f"at most {MAX_REPORT_MONTHS} months from start_date (by month)")


@dataclass(frozen=True)
class MemberReportQuery:
    shop_id: str
    active_days: int

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        v.check(0 <= self.active_days <= MAX_WINDOW_DAYS, "active_days",
                f"1-{MAX_WINDOW_DAYS} days (0: {DEFAULT_ACTIVE_DAYS})")
        v.raise_if_any()

    @property
    def days(self) -> int:
        return self.active_days or DEFAULT_ACTIVE_DAYS


@dataclass(frozen=True)
class SalesReportQuery:
    """Shop-local days start_date..end_date (both included), per day or per month."""

    shop_id: str
    start_date: str
    end_date: str
    granularity_value: int
    start: date = field(init=False)
    end: date = field(init=False)
    granularity: Granularity = field(init=False)

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        start, end = _date(self.start_date, "start_date", v), _date(self.end_date, "end_date", v)
        granularity = None
        if self.granularity_value == 0:
            v.add("granularity", "required")
        elif self.granularity_value not in set(Granularity):
            v.add("granularity", f"unknown value {self.granularity_value}")
        else:
            granularity = Granularity(self.granularity_value)
        if start is not None and end is not None:
            _span(start, end, granularity, v)
        v.raise_if_any()
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "granularity", granularity)


@dataclass(frozen=True)
class RepurchaseQuery:
    shop_id: str
    window_days: int

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        if self.window_days == 0:
            v.add("window_days", "required")
        else:
            v.check(1 <= self.window_days <= MAX_WINDOW_DAYS, "window_days", f"1-{MAX_WINDOW_DAYS} days")
        v.raise_if_any()


@dataclass(frozen=True)
class SizeHistoryQuery:
    shop_id: str
    segment_id: str
    days_back: int

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, segment_id=self.segment_id)
        v.check(0 <= self.days_back <= MAX_HISTORY_DAYS, "days",
                f"1-{MAX_HISTORY_DAYS} days (0: {DEFAULT_HISTORY_DAYS})")
        v.raise_if_any()

    @property
    def days(self) -> int:
        return self.days_back or DEFAULT_HISTORY_DAYS
