"""The beat tasks: a reconcile pass every DPP_REAPER_INTERVAL_S, the ledger audit, the activity page's ended days."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from reaper.services import audit_ledger_flags, reconcile_once
from runs.activity import close_days


@shared_task(name="dpp.reaper.reconcile", ignore_result=True)
def reconcile() -> dict[str, Any]:
    report = reconcile_once()
    summary = report.as_dict()
    summary.pop("actions")
    return summary


@shared_task(name="dpp.reaper.audit_ledger", ignore_result=True)
def audit_ledger() -> dict[str, int]:
    return {"audit_flags": audit_ledger_flags().audit_flags}


@shared_task(name="dpp.reaper.close_activity_days", ignore_result=True)
def close_activity_days() -> dict[str, int]:
    """The activity page's ended days summed once (runs.activity.close_days), hourly at minute 10."""
    return {"days_closed": close_days()}
