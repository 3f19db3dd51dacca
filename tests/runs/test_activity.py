"""The activity page's figures (runs.activity): ended days read from ClosedDay rows that beat writes, the rest summed
on the runs table — always the same figures as summing every day on the runs table (here: in Python, run by run)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from freezegun import freeze_time

from runs.activity import ACTIVITY_DAYS, activity_days, close_days
from runs.models import ClosedDay, Run
from tests.helpers.personas import Persona, make_plan, persona_on_plan
from tests.helpers.states import ago, canceled_run, claimed_run, commit, completed_run, store_envelope

pytestmark = pytest.mark.django_db(transaction=False)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _today() -> date:
    return timezone.now().astimezone(UTC).date()


def _every_run_summed() -> list[tuple[date, int, int]]:
    """Runs by the UTC day of created_at, charges by the UTC day of completed_at: the definition, run by run."""
    runs, revenue = Counter[date](), Counter[date]()
    for run in Run.objects.all():
        runs[run.created_at.astimezone(UTC).date()] += 1
        if run.completed_at is not None and run.charged_micros:
            revenue[run.completed_at.astimezone(UTC).date()] += run.charged_micros
    window = [_today() - timedelta(days=offset) for offset in range(ACTIVITY_DAYS - 1, -1, -1)]
    return [(day, runs[day], revenue[day]) for day in window]


def _shown() -> list[tuple[date, int, int]]:
    return [(day.day, day.runs, day.revenue_micros) for day in activity_days()]


def _history(persona: Persona) -> None:
    """Runs on several days: charged, refunded, and one accepted before midnight two days ago that ended after it."""
    with ago(5 * 86_400):
        completed_run(persona, cost_micros=20_000)
        canceled_run(persona)
    before_midnight = _midnight(_today() - timedelta(days=1)) - timedelta(seconds=5)
    with freeze_time(before_midnight, tick=True):
        claimed, _ = claimed_run(persona)
    with freeze_time(before_midnight + timedelta(seconds=15), tick=True):
        commit(claimed, store_envelope(claimed, cost_micros=30_000))
    completed_run(persona, cost_micros=10_000)  # today


def test_ended_days_come_from_closed_days_and_match_every_run_summed() -> None:
    _history(persona_on_plan(make_plan("activity")))
    before = _every_run_summed()
    two_days_ago, yesterday = _today() - timedelta(days=2), _today() - timedelta(days=1)
    assert (two_days_ago, 1, 0) in before  # the run across midnight: accepted two days ago…
    assert (yesterday, 0, 30_000) in before  # … and charged yesterday
    assert _shown() == before  # nothing closed yet: every day summed on the runs table

    with freeze_time(_midnight(_today()) + timedelta(hours=1, minutes=10), tick=True):
        assert close_days() == ACTIVITY_DAYS - 1  # every day but today
        assert close_days() == 0  # idempotent
    assert sorted(ClosedDay.objects.values_list("day", "runs", "revenue_micros")) == before[:-1]

    completed_run(persona_on_plan(make_plan("activity-2")), cost_micros=40_000)  # today again, after the close
    with CaptureQueriesContext(connection) as queries:
        shown = _shown()
    assert shown == _every_run_summed()
    assert shown[-1][1:] == (2, 50_000)
    on_runs = [query["sql"] for query in queries.captured_queries if "runs_run" in query["sql"]]
    assert len(on_runs) == 2
    assert all(_today().isoformat() in sql and yesterday.isoformat() not in sql for sql in on_runs)


def test_a_day_is_closed_only_an_hour_after_its_end() -> None:
    _history(persona_on_plan(make_plan("activity")))
    yesterday = _today() - timedelta(days=1)
    with freeze_time(_midnight(_today()) + timedelta(minutes=59), tick=True):
        assert close_days() == ACTIVITY_DAYS - 2
    assert not ClosedDay.objects.filter(day=yesterday).exists()
    assert _shown() == _every_run_summed()  # yesterday summed on the runs table, and from the closed rows before
    with freeze_time(_midnight(_today()) + timedelta(hours=1, seconds=1), tick=True):
        assert close_days() == 1
    assert ClosedDay.objects.get(day=yesterday).revenue_micros == 30_000
    assert _shown() == _every_run_summed()
