"""States no service makes, written on purpose: the tampering the audits and the reaper must detect."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from billing.models import Account
from runs.models import FinalizeStage, MoneyState, Run, RunStatus
from tests.helpers.bulk import queued_run_row


def corrupt_run(run: Run, **fields: Any) -> None:
    """Rewrite the run's row behind the services' back (its version untouched: no CAS would see it)."""
    assert Run.objects.filter(pk=run.pk).update(**fields) == 1


def terminal_without_settle(run: Run, *, charge_micros: int) -> Run:
    """The run's row marked COMPLETED and charged, with no SETTLE posted: its reservation stays held."""
    corrupt_run(
        run,
        status=RunStatus.COMPLETED,
        finalize_stage=FinalizeStage.COMMITTED,
        money_state=MoneyState.SETTLED,
        charged_micros=charge_micros,
        completed_at=timezone.now(),
    )
    run.refresh_from_db()
    return run


def run_without_reserve(*, tenant_id: str, reserved_micros: int) -> Run:
    """A QUEUED run inserted without its RESERVE: it claims money the ledger never held for it."""
    run = queued_run_row(tenant_id=tenant_id, reserved_micros=reserved_micros)
    run.save(force_insert=True)
    return run


def corrupt_held(*, tenant_id: str, balance_micros: int) -> None:
    """The tenant's held balance rewritten with no entry behind it."""
    held = Account.tenant_account_id(tenant_id, Account.Kind.HELD)
    assert Account.objects.filter(pk=held).update(balance_micros=balance_micros) == 1
