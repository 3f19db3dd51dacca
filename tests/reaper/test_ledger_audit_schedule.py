"""The whole ledger audit on beat's schedule: what the reaper's recent-window checks cannot see still raises a flag."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.db import connection

from config.celery import app, beat_schedule
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
    assert schedule["ledger-audit"]["schedule"].total_seconds() == settings.DPP_LEDGER_AUDIT_INTERVAL_S == 3600
    assert schedule["ledger-audit"]["options"] == {"expires": 3600}
    assert schedule["reaper-reconcile"]["task"] == "dpp.reaper.reconcile" in app.tasks
    off = beat_schedule(SimpleNamespace(DPP_REAPER_INTERVAL_S=30, DPP_LEDGER_AUDIT_INTERVAL_S=0))
    assert set(off) == {"reaper-reconcile"}
    assert app.conf.beat_schedule == schedule
