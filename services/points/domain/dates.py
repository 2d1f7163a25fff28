"""Shop-local days and months, and when a lot expires (积分有效期)."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.points.domain.enums import ExpiryPolicy


def local_date(at_utc: datetime, zone: ZoneInfo) -> date:
    return at_utc.replace(tzinfo=UTC).astimezone(zone).date()


def local_midnight_utc(day: date, zone: ZoneInfo) -> datetime:
    """The instant the shop-local `day` begins, as naive UTC."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC).replace(tzinfo=None)


def add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def expiry_for(earned_at_utc: datetime, zone: ZoneInfo, policy: ExpiryPolicy, months: int) -> datetime | None:
    """When a lot earned at `earned_at_utc` expires (naive UTC), or None for never.
    ROLLING_MONTHS: valid through the same day `months` later, so it expires at the local
    midnight that ends that day. END_OF_NEXT_YEAR: at the local midnight that begins the year
    after next."""
    earned_day = local_date(earned_at_utc, zone)
    if policy is ExpiryPolicy.NEVER:
        return None
    if policy is ExpiryPolicy.END_OF_NEXT_YEAR:
        return local_midnight_utc(date(earned_day.year + 2, 1, 1), zone)
    return local_midnight_utc(add_months(earned_day, months) + timedelta(days=1), zone)
