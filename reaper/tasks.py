"""The beat task: one reconcile pass every DPP_REAPER_INTERVAL_S."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from reaper.services import audit_ledger_flags, reconcile_once


@shared_task(name="dpp.reaper.reconcile", ignore_result=True)
def reconcile() -> dict[str, Any]:
    report = reconcile_once()
    summary = report.as_dict()
    summary.pop("actions")
    return summary


@shared_task(name="dpp.reaper.audit_ledger", ignore_result=True)
def audit_ledger() -> dict[str, int]:
    return {"audit_flags": audit_ledger_flags().audit_flags}
