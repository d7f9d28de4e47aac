"""Time conventions: UTC storage, half-open [start, end) intervals, a display timezone.

Daily partitions are days of the display timezone (America/Denver by default), so a
partition lasts 23, 24 or 25 hours; everything here converts such a local day into the
exact UTC interval it covers.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

DEFAULT_DISPLAY_TZ = "America/Denver"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso_utc(t: datetime) -> str:
    """The one spelling of an instant in stored records: ISO 8601, microseconds, `Z`."""
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def display_tz_name() -> str:
    return os.environ.get("OPS_PLATFORM_TZ", DEFAULT_DISPLAY_TZ)


def local_day_bounds(day: date, tz_name: str | None = None) -> tuple[datetime, datetime]:
    """UTC [start, end) of a calendar day in ``tz_name`` (23/24/25 hours around DST)."""
    tz = ZoneInfo(tz_name or display_tz_name())
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def partition_bounds(partition_key: str, tz_name: str | None = None) -> tuple[datetime, datetime]:
    """UTC [start, end) of a daily partition key ``YYYY-MM-DD``."""
    try:
        day = date.fromisoformat(partition_key)
    except ValueError as exc:
        raise ValueError(f"partition key {partition_key!r} is not a YYYY-MM-DD date") from exc
    return local_day_bounds(day, tz_name)


def local_date_of(ts: datetime, tz_name: str | None = None) -> date:
    """The display-timezone calendar date of a UTC instant."""
    return ts.astimezone(ZoneInfo(tz_name or display_tz_name())).date()


def utc_dates_overlapping(start: datetime, end: datetime) -> list[date]:
    """UTC calendar dates touched by [start, end) (landing files are split by UTC date)."""
    first = start.astimezone(UTC).date()
    last = (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
