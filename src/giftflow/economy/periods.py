"""Calendar arithmetic in a person's own time zone: days, months, ages (SPEC.md §2.4)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ZONES_CACHED_MAX = 512
"""Time zones kept parsed."""


@lru_cache(maxsize=ZONES_CACHED_MAX)
def zone(name: str) -> ZoneInfo | None:
    """The IANA time zone ``name``, or ``None`` when it does not exist."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local_date(now_ms: int, time_zone: str) -> date:
    """The calendar date at ``now_ms`` in ``time_zone``."""
    found = zone(time_zone)
    return datetime.fromtimestamp(now_ms // 1000, tz=found or UTC).date()


def day_period(day: date) -> str:
    """The counter period of a calendar day: ``D2026-11-25``."""
    return f"D{day.isoformat()}"


def month_period(day: date) -> str:
    """The counter period of the calendar month of ``day``: ``M2026-11``."""
    return f"M{day.year:04d}-{day.month:02d}"


def end_of_day_ms(day: date, time_zone: str) -> int:
    """The first millisecond after ``day`` ends in ``time_zone`` (its next local midnight)."""
    found = zone(time_zone) or UTC
    midnight = datetime.combine(day + timedelta(days=1), time(0), tzinfo=found)
    return int(midnight.timestamp()) * 1000


def age_on(birth_date: date, day: date) -> int:
    """Whole years from ``birth_date`` to ``day`` (a 29 February birthday counts on 1 March)."""
    years = day.year - birth_date.year
    if (day.month, day.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years
