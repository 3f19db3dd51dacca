"""Helpers of the billing tests: runs made through the ORM with their money moved by billing's services.

The run services (runs.services) are another issue's; these helpers do what they will do, in one database
transaction per step: insert the run and post its RESERVE; move it to a terminal state and post its SETTLE.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from billing.services import ledger_reserve, ledger_settle
from runs.models import FinalizeStage, MoneyState, Run, RunStatus
from tests.factories import queued_run_row


def open_run(*, tenant_id: str, reserved_micros: int, reserve: bool = True) -> Run:
    """A QUEUED run holding `reserved_micros` (its RESERVE posted in the same transaction unless `reserve` is off)."""
    with transaction.atomic():
        run = queued_run_row(tenant_id=tenant_id, reserved_micros=reserved_micros)
        run.save(force_insert=True)
        if reserve:
            ledger_reserve(tenant_id=tenant_id, run_id=run.pk, amount_micros=reserved_micros, trace_id=run.trace_id)
    return run


def finish_run(run: Run, *, charge_micros: int, status: str = RunStatus.COMPLETED, settle: bool = True) -> Run:
    """The run made terminal with `charge_micros` charged, its SETTLE posted in the same transaction."""
    now = timezone.now()
    with transaction.atomic():
        changed = Run.objects.filter(pk=run.pk, version=run.version).update(
            status=status,
            money_state=MoneyState.SETTLED if charge_micros else MoneyState.REFUNDED,
            finalize_stage=FinalizeStage.COMMITTED,
            charged_micros=charge_micros,
            version=run.version + 1,
            completed_at=now,
            updated_at=now,
        )
        assert changed == 1
        if settle:
            ledger_settle(
                tenant_id=run.tenant_id,
                run_id=run.pk,
                reserved_micros=run.reserved_micros,
                charge_micros=charge_micros,
                trace_id=run.trace_id,
            )
    run.refresh_from_db()
    return run
