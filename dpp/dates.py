"""UTC calendar days as instants, for filters on timestamps by day (usage per day, exports by date)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta


def utc_days(first: date, last: date) -> tuple[datetime, datetime]:
    """The half-open range [first 00:00 UTC, the day after `last` 00:00 UTC). For `last` = 9999-12-31, which has
    no day after, the end is the last representable instant (a filter on it would otherwise be a 500)."""
    start = datetime.combine(first, time.min, tzinfo=UTC)
    if last == date.max:
        return start, datetime.max.replace(tzinfo=UTC)
    return start, datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
