"""Revenue and runs per UTC day over the last 30 days (SPEC §13, the admin's activity page).

A day's figures: the runs accepted that day (by created_at) and the revenue charged that day (the charges of the runs
that ended that day, by completed_at: what SETTLE credited to revenue; ADJUSTMENTs are not in it). Neither changes
once the day is over (a run's created_at, completed_at and charge are written once), so an ended day is summed once,
by beat (`close_days`, hourly), into a ClosedDay row; the page reads those rows and sums only the days after the last
of them on the runs table (today, and yesterday until beat has closed it) — the same figures as summing every day
on the runs table, at the cost of a day's runs instead of 30 days' (docs/BENCHMARKS.md, docs/decisions.md).

A day is closed only CLOSE_AFTER past its end: a run's times come from the clock of the process that wrote them,
at the start of a transaction that commits milliseconds later; an hour covers both that and any clock skew.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from runs.models import ClosedDay, Run

ACTIVITY_DAYS = 30
CLOSE_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class ActivityDay:
    day: date
    runs: int
    revenue_micros: int


def _start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _window(days: int, now: datetime) -> list[date]:
    """The last `days` UTC days, oldest first, today included."""
    today = now.astimezone(UTC).date()
    return [today - timedelta(days=offset) for offset in range(days - 1, -1, -1)]


def _in_days(queryset: QuerySet[Run], field: str, since: date, until: date | None) -> QuerySet[Run]:
    queryset = queryset.filter(**{f"{field}__gte": _start(since)})
    return queryset if until is None else queryset.filter(**{f"{field}__lt": _start(until)})


def summed_on_runs(*, since: date, until: date | None = None) -> dict[date, ActivityDay]:
    """The figures of the days from `since` (to `until`, excluded; else to now) summed on the runs table: two GROUP
    BY queries on range scans of the created_at and completed_at indexes. Days without runs or revenue are absent."""
    created = _in_days(Run.objects.order_by(), "created_at", since, until)
    completed = _in_days(Run.objects.order_by().filter(charged_micros__gt=0), "completed_at", since, until)
    runs = created.annotate(day=TruncDate("created_at", tzinfo=UTC))
    counts = dict(runs.values("day").annotate(n=Count("pk")).values_list("day", "n"))
    charged = completed.annotate(day=TruncDate("completed_at", tzinfo=UTC))
    revenue = dict(charged.values("day").annotate(total=Sum("charged_micros")).values_list("day", "total"))
    return {day: ActivityDay(day, counts.get(day, 0), revenue.get(day) or 0) for day in {*counts, *revenue}}


def activity_days(*, days: int = ACTIVITY_DAYS) -> list[ActivityDay]:
    """Each of the last `days` UTC days, oldest first, today included: the ClosedDay rows up to the first day that
    has none, every day from there on summed on the runs table."""
    window = _window(days, timezone.now())
    closed = {
        row.day: ActivityDay(row.day, row.runs, row.revenue_micros)
        for row in ClosedDay.objects.filter(day__gte=window[0], day__lte=window[-1])
    }
    live_from = next((day for day in window if day not in closed), window[-1])  # today is never closed
    live = summed_on_runs(since=live_from)
    return [closed[day] if day < live_from else live.get(day, ActivityDay(day, 0, 0)) for day in window]


def close_days(*, days: int = ACTIVITY_DAYS) -> int:
    """Beat's hourly pass: a ClosedDay row for each day of the window that ended CLOSE_AFTER ago and has none yet,
    summed on the runs table in one pass over those days. Idempotent; two passes at once write the same rows once.
    Returns the number of days closed."""
    now = timezone.now()
    ended = [day for day in _window(days, now) if _start(day + timedelta(days=1)) + CLOSE_AFTER <= now]
    have = set(ClosedDay.objects.filter(day__in=ended).values_list("day", flat=True))
    missing = [day for day in ended if day not in have]
    if not missing:
        return 0
    summed = summed_on_runs(since=missing[0], until=missing[-1] + timedelta(days=1))
    rows = [
        ClosedDay(day=day, runs=figures.runs, revenue_micros=figures.revenue_micros, computed_at=now)
        for day in missing
        for figures in (summed.get(day, ActivityDay(day, 0, 0)),)
    ]
    ClosedDay.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)
