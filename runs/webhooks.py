"""A run's ending as a webhook event (SPEC §10), recorded in the transaction of the ending itself."""

from __future__ import annotations

from billing.selectors import balances_get
from dpp.webhooks.outbox import webhook_event_record
from runs.models import Run, RunStatus
from runs.presenters import run_body

EVENT_OF_STATUS = {
    RunStatus.COMPLETED: "run.completed",
    RunStatus.FAILED: "run.failed",
    RunStatus.CANCELED: "run.canceled",
    RunStatus.EXPIRED: "run.expired",
}


def run_ending_announce(*, run: Run) -> None:
    """Record the run's end for the tenant's endpoints; the data is the run as GET /v1/runs/{id} shows it, read
    after the settle moved the money (so `budget_remaining_usd` is the balance right after it)."""
    webhook_event_record(
        tenant_id=run.tenant_id,
        event_type=EVENT_OF_STATUS[RunStatus(run.status)],
        data=lambda: run_body(
            run, available_micros=balances_get(tenant_id=run.tenant_id).available_micros, request=None
        ),
    )
