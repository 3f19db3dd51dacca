"""The whole ledger audit on beat's schedule: what the reaper's recent-window checks cannot see still raises a flag."""

from __future__ import annotations

import logging
from datetime import timedelta
from types import SimpleNamespace

import pytest
from celery.beat import ScheduleEntry
from celery.schedules import crontab
from django.conf import settings
from django.db import connection
from freezegun import freeze_time

from config.celery import app, audit_schedule, beat_schedule
from reaper.models import AuditFlag
from reaper.tasks import audit_ledger
from runs.audit import full_audit
from tests.helpers.money import USD
from tests.helpers.personas import make_persona
from tests.helpers.states import queued_run

pytestmark = pytest.mark.django_db(transaction=True)


def _ledger_flags() -> dict[str, str]:
    return dict(AuditFlag.objects.filter(kind=AuditFlag.Kind.LEDGER_AUDIT).values_list("subject", "detail"))


def test_a_clean_ledger_raises_nothing() -> None:
    queued_run(make_persona(plan="unlimited", credit_micros=1 * USD))
    assert audit_ledger() == {"audit_flags": 0}
    assert _ledger_flags() == {}


def test_each_violated_invariant_raises_one_flag_once(caplog: pytest.LogCaptureFixture) -> None:
    persona = make_persona(plan="unlimited", credit_micros=1 * USD)
    queued_run(persona)
    with connection.cursor() as cursor:  # what no service can do: a stored balance drifts from its entries
        cursor.execute(
            "UPDATE billing_account SET balance_micros = balance_micros + 100 WHERE id = %s",
            [f"{persona.tenant.pk}/available"],
        )
    violated = set(full_audit().violation_counts)
    assert "balance_equals_entries" in violated
    with caplog.at_level(logging.CRITICAL, logger="dpp.reaper"):
        assert audit_ledger() == {"audit_flags": len(violated)}
    flags = _ledger_flags()
    assert set(flags) == violated
    assert flags["balance_equals_entries"].startswith("1 violation(s) of balance_equals_entries, e.g. ")
    assert f"{persona.tenant.pk}/available" in flags["balance_equals_entries"]
    assert {r.getMessage().split(":")[0] for r in caplog.records} == {
        f"AUDIT FLAG LEDGER_AUDIT on {invariant}" for invariant in violated
    }
    assert audit_ledger() == {"audit_flags": 0}  # still open: not raised again


def test_beat_runs_the_audit_every_interval_unless_it_is_0() -> None:
    schedule = beat_schedule(settings)
    assert schedule["ledger-audit"]["task"] == "dpp.reaper.audit_ledger" in app.tasks
    assert schedule["ledger-audit"]["schedule"] == crontab(minute=0)
    assert settings.DPP_LEDGER_AUDIT_INTERVAL_S == 3600
    assert schedule["ledger-audit"]["options"] == {"expires": 3600}
    assert schedule["reaper-reconcile"]["task"] == "dpp.reaper.reconcile" in app.tasks
    off = beat_schedule(SimpleNamespace(DPP_REAPER_INTERVAL_S=30, DPP_LEDGER_AUDIT_INTERVAL_S=0))
    assert set(off) == {"reaper-reconcile", "close-activity-days"}
    assert app.conf.beat_schedule == schedule


def _due_after_restarts(schedule: object, *, restart_every_min: int, until: str) -> list[str]:
    """Beat started at 10:00 UTC and restarted every `restart_every_min` minutes from 10:07 (10:07, 10:17, ...):
    each start makes a fresh entry (last_run_at=None, as with a lost or new schedule file); the minutes at which the
    audit was due."""
    ran = []
    with freeze_time("2026-06-01T10:00:00Z") as clock:
        entry = ScheduleEntry(name="ledger-audit", task="dpp.reaper.audit_ledger", schedule=schedule, app=app)
        while clock.time_to_freeze.strftime("%H:%M") != until:
            if (clock.time_to_freeze.minute - 7) % restart_every_min == 0:
                entry = ScheduleEntry(name="ledger-audit", task="dpp.reaper.audit_ledger", schedule=schedule, app=app)
            if entry.is_due().is_due:
                ran.append(clock.time_to_freeze.strftime("%H:%M"))
                entry = next(entry)  # what beat does after sending it: last_run_at = now
            clock.tick(60)
    return ran


def test_a_beat_restarted_every_10_minutes_still_audits_on_the_hour() -> None:
    hourly = audit_schedule(3600)
    assert _due_after_restarts(hourly, restart_every_min=10, until="13:01") == ["11:00", "12:00", "13:00"]
    assert _due_after_restarts(hourly, restart_every_min=1000, until="13:01") == ["11:00", "12:00", "13:00"]
    # The timedelta it replaces counted an hour from every start: restarted every 10 minutes, it never ran.
    assert _due_after_restarts(timedelta(hours=1), restart_every_min=10, until="13:01") == []
    with freeze_time("2026-06-01T10:50:00Z"):
        fresh = ScheduleEntry(name="ledger-audit", task="dpp.reaper.audit_ledger", schedule=hourly, app=app)
        assert fresh.is_due().is_due is False
        assert hourly.remaining_estimate(fresh.last_run_at).total_seconds() == 600


def test_other_audit_intervals_are_on_the_clock_too() -> None:
    assert audit_schedule(900) == crontab(minute="*/15")
    assert audit_schedule(7200) == crontab(minute=0, hour="*/2")
    with pytest.raises(ValueError, match="whole hours"):
        audit_schedule(3601)
