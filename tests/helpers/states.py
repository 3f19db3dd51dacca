"""Runs in the states of SPEC §3, each made by the service that makes it in production.

Every run service is called from one builder here, so that a change of its signature is one edit. A state that
needs age (an expired lease, a stale claim) is built in the past with freezegun (`ago`), not by rewriting its
timestamps. A state no service can make is corruption: tests.helpers.corruption.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from freezegun import freeze_time
from freezegun.api import _freeze_time

from billing.selectors import plan_get
from runs import results
from runs.executor import run_execute
from runs.models import Run
from runs.services import (
    Lease,
    run_accept,
    run_cancel,
    run_claim,
    run_commit,
    run_expire_queued,
    run_fail,
    run_lease,
)
from runs.submission import DEFAULT_TIMEBOX_SEC, submission_parse
from tests.helpers.api import body, new_key
from tests.helpers.personas import Persona


def ago(seconds: float) -> _freeze_time:
    """The clock `seconds` in the past (and ticking): what is built inside it is that old."""
    return freeze_time(timezone.now() - timedelta(seconds=seconds), tick=True)


def later(seconds: float) -> _freeze_time:
    """The clock `seconds` ahead (and ticking): what runs inside it comes that much later."""
    return freeze_time(timezone.now() + timedelta(seconds=seconds), tick=True)


def queued_run(
    persona: Persona,
    *,
    pack_type: str = "diagnostic",
    inputs: dict[str, Any] | None = None,
    max_cost_usd: str = "0.0500",
    timebox_sec: int = DEFAULT_TIMEBOX_SEC,
    key: str | None = None,
    trace_id: str | None = None,
) -> Run:
    """Accepted through the service the API uses: money reserved, task published on commit."""
    payload = body(pack_type, inputs, max_cost_usd=max_cost_usd, timebox_sec=timebox_sec, trace_id=trace_id)
    plan = plan_get(tenant_id=persona.tenant.pk)
    submission = submission_parse(
        body=payload,
        idempotency_key=key or new_key(),
        plan=plan,
        default_trace_id=uuid.uuid4().hex,
    )
    return run_accept(tenant=persona.tenant, plan=plan, submission=submission).run


def lease(run: Run) -> Lease:
    """What a worker does first with a delivery: QUEUED → PROCESSING."""
    leased = run_lease(run_id=run.pk)
    assert leased is not None
    return leased


def leased_run(persona: Persona, **submitted: Any) -> Lease:
    return lease(queued_run(persona, **submitted))


def claim(leased: Lease) -> Run:
    """Phase 1 of finalize: the run CLAIMED with its finalize token."""
    claimed = run_claim(run_id=leased.run.pk, lease_token=leased.token)
    assert claimed is not None
    assert claimed.finalize_token is not None
    return claimed


def claimed_run(persona: Persona, **submitted: Any) -> tuple[Run, Lease]:
    leased = leased_run(persona, **submitted)
    return claim(leased), leased


def expired_lease(persona: Persona, *, expired_for: float = 5, **submitted: Any) -> Lease:
    """Leased by a worker that then stopped heartbeating: its lease ran out `expired_for` seconds ago."""
    with ago(settings.DPP_LEASE_S + expired_for):
        return leased_run(persona, **submitted)


def stale_claim(persona: Persona, **submitted: Any) -> tuple[Run, Lease]:
    """Claimed by a worker that never committed, longer ago than DPP_FINALIZE_STALE_S: the reaper's to end."""
    with ago(settings.DPP_FINALIZE_STALE_S + 5):
        return claimed_run(persona, **submitted)


def store_envelope(claimed: Run, *, cost_micros: int, data: dict[str, Any] | None = None) -> results.Envelope:
    """The envelope the worker uploads between claim and commit, at the key its finalize token names."""
    assert claimed.finalize_token is not None
    content = results.envelope_bytes(
        run=claimed,
        finalize_token=claimed.finalize_token,
        data={"ok": True} if data is None else data,
        cost_micros=cost_micros,
        finished_at=timezone.now(),
    )
    key = results.envelope_key(claimed, claimed.finalize_token)
    return results.envelope_store(key=key, content=content, cost_micros=cost_micros)


def commit(claimed: Run, stored: results.Envelope) -> Run:
    """Phase 2 of finalize: COMPLETED, charged the envelope's cost (capped at the reservation)."""
    assert run_commit(run=claimed, stored=stored)
    return claimed


def completed_run(persona: Persona, *, cost_micros: int, **submitted: Any) -> Run:
    claimed, _ = claimed_run(persona, **submitted)
    return commit(claimed, store_envelope(claimed, cost_micros=cost_micros))


def fail(leased: Lease, *, reason_code: str = "PACK_FAILED", detail: str = "the pack failed") -> Run:
    """The worker ends a started run that produced no result: FAILED with the minimum fee."""
    assert run_fail(run=leased.run, lease_token=leased.token, reason_code=reason_code, detail=detail)
    return leased.run


def failed_run(
    persona: Persona, *, reason_code: str = "PACK_FAILED", detail: str = "the pack failed", **submitted: Any
) -> Run:
    return fail(leased_run(persona, **submitted), reason_code=reason_code, detail=detail)


def cancel(persona: Persona, run: Run) -> Run:
    """The client's cancel: a QUEUED run ends CANCELED, fully released; a PROCESSING one has it requested."""
    return run_cancel(tenant=persona.tenant, run_id=run.pk).run


def canceled_run(persona: Persona, **submitted: Any) -> Run:
    return cancel(persona, queued_run(persona, **submitted))


def expire_queued(run: Run) -> Run:
    """The reaper's end of a run no worker started: EXPIRED/QUEUE_TIMEOUT, fully released."""
    assert run_expire_queued(run=run)
    return run


def expired_run(persona: Persona, **submitted: Any) -> Run:
    return expire_queued(queued_run(persona, **submitted))


def execute(run_id: str | uuid.UUID) -> str:
    """What a worker does with one delivery of the run (needs django_db(transaction=True): a heartbeat thread)."""
    return run_execute(run_id=uuid.UUID(str(run_id)))


def run_row(run_id: str | uuid.UUID) -> Run:
    return Run.objects.get(pk=run_id)
