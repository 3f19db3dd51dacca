"""Every state change of a run, each a compare-and-set (SPEC §3).

A transition is one `UPDATE … WHERE id = ? AND version = ? AND <expected state>`; if no row changed, another
process won the race and this one does nothing else — in particular it posts no money. A transition that ends
a run posts the run's SETTLE in the same database transaction (`_finish`, given how the run ends: its `Ending`,
whose charge runs.charges.charge_for decides), so "terminal ⇔ settled" holds after every commit. Lock order: the
run's row first, then the key spend counters, then the tenant's
accounts (billing.services).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from billing.models import Plan
from billing.selectors import balances_get, key_spend_remaining
from billing.services import ReservationRacedError, ledger_reserve, ledger_reserve_refusal, ledger_settle
from dpp.http.errors import ApplicationError
from dpp.key_limits import KeyNode
from dpp.models import ApiKey, Tenant
from dpp.money import minimum_fee
from dpp.observability import run_finished_observe
from dpp.services import api_key_chain
from runs.charges import Ending, charge_for
from runs.dispatch import publish_run
from runs.models import FinalizeStage, MoneyState, Run, RunStatus
from runs.results import Envelope
from runs.selectors import visible_runs
from runs.submission import (
    Draft,
    Submission,
    fingerprint_matches,
    key_limits_check,
    submission_check,
    submission_read,
    suggested_max_cost_micros,
)
from runs.webhooks import run_ending_announce

logger = logging.getLogger("dpp.runs")


ACCEPT_ATTEMPTS = 3


@dataclass(frozen=True)
class Accepted:
    run: Run
    replayed: bool


# --- submit and accept (API) ---------------------------------------------------------------------------


def run_submit(*, tenant: Tenant, plan: Plan, key: ApiKey, body: Any, idempotency_key: str, trace_id: str) -> Accepted:
    """A submit under its (well-formed) Idempotency-Key: a new run, the earlier receipt for the same payload (the
    same fingerprint: runs.submission), or 422 IDEMPOTENCY_KEY_REUSED for another; a refused request stores
    nothing. Validation order: runs.submission.

    `key` is the API key that authenticated the submit, the one whose limits the run counts against.
    """
    fingerprint: str | None = None
    try:
        draft = submission_read(body=body, default_trace_id=trace_id)
        fingerprint = draft.fingerprint
        submission = _submit_checks(tenant=tenant, plan=plan, key=key, draft=draft, idempotency_key=idempotency_key)
    except ApplicationError:
        # The key decides before validation does: a replay (or another payload under the key) is answered as
        # such, also when the same request would be refused now (e.g. after a plan change). A body that cannot
        # be read is another payload than the valid one stored. A valid payload skips this lookup: run_accept's
        # INSERT finds an existing key by itself.
        existing = _run_find_by_key(tenant=tenant, idempotency_key=idempotency_key)
        if existing is None:
            raise
        return _replay_or_conflict(run=existing, fingerprint=fingerprint, body=body)
    return run_accept(tenant=tenant, plan=plan, submission=submission, api_key=key)


def _submit_checks(*, tenant: Tenant, plan: Plan, key: ApiKey, draft: Draft, idempotency_key: str) -> Submission:
    """Every check of a read request before money is held: its inputs, price floor and plan (runs.submission),
    then what its API key allows (SPEC §8). One function for run_submit and run_quote, so that a quote refuses
    exactly what the submit of the same body would, with the same problem."""
    submission = submission_check(draft=draft, idempotency_key=idempotency_key, plan=plan)
    key_limits_check(
        pack_type=submission.pack_type, max_cost_micros=submission.max_cost_micros, key_chain=key_chain(key)
    )
    return submission


def _run_find_by_key(*, tenant: Tenant, idempotency_key: str) -> Run | None:
    return Run.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()


def _replay_or_conflict(*, run: Run, fingerprint: str | None, body: Any) -> Accepted:
    """The original receipt for the same payload; 422 for another payload under the same key (the draft's status:
    a 409 would tell a generic retrying client to send the same request again)."""
    if not fingerprint_matches(stored=run.request_hash, fingerprint=fingerprint, body=body):
        raise ApplicationError(
            "IDEMPOTENCY_KEY_REUSED",
            f"Idempotency-Key {run.idempotency_key!r} was used for run {run.pk} with a different payload.",
        )
    return Accepted(run=run, replayed=True)


def key_chain(api_key: ApiKey | None) -> tuple[KeyNode, ...]:
    """The submitting key's chain, root first: as authentication read it, or from the database."""
    if api_key is None:
        return ()
    chain: tuple[KeyNode, ...] | None = getattr(api_key, "chain", None)
    return chain if chain is not None else api_key_chain(api_key=api_key)


def run_accept(*, tenant: Tenant, plan: Plan, submission: Submission, api_key: ApiKey | None = None) -> Accepted:
    """Insert the run and hold its money in one transaction, then publish its task after commit.

    Concurrent identical submits: the unique (tenant, key) index makes every loser fail its INSERT once the
    winner commits; the loser then answers the winner's receipt. A refused request leaves no row at all. A
    reservation refused on balances that a concurrent commit changed meanwhile is tried again from the start.
    """
    for _ in range(ACCEPT_ATTEMPTS):
        try:
            run = _accept(tenant=tenant, plan=plan, submission=submission, api_key=api_key)
        except ReservationRacedError:
            logger.warning("accept for tenant %s: the balances moved during the reservation; trying again", tenant.pk)
            continue  # rolled back: the next attempt reads the balances as they are now
        except IntegrityError:
            existing = _run_find_by_key(tenant=tenant, idempotency_key=submission.idempotency_key)
            if existing is None:
                raise
            return _replay_or_conflict(run=existing, fingerprint=submission.request_hash, body=submission.body)
        return Accepted(run=run, replayed=False)
    raise ApplicationError(
        "UNAVAILABLE", "The balance kept changing while the run was accepted; retry.", headers={"Retry-After": "1"}
    )


@transaction.atomic(durable=True)
def _accept(*, tenant: Tenant, plan: Plan, submission: Submission, api_key: ApiKey | None = None) -> Run:
    now = timezone.now()
    # The INSERT comes first: a concurrent request with the same key waits on the unique index here and
    # fails once we commit, before it could touch money (so it replays instead of answering 402).
    run = Run(
        id=uuid.uuid4(),
        tenant=tenant,
        api_key_id=api_key.pk if api_key is not None else None,
        pack_type=submission.pack_type,
        profile_version=submission.profile_version,
        idempotency_key=submission.idempotency_key,
        request_hash=submission.request_hash,
        inputs=submission.inputs,
        timebox_sec=submission.timebox_sec,
        trace_id=submission.trace_id,
        reserved_micros=submission.max_cost_micros,
        minimum_fee_micros=minimum_fee(submission.max_cost_micros),
        created_at=now,
        updated_at=now,
    )
    chain = key_chain(api_key)
    run.key_spend_counted = any(node.has_spend_limit for node in chain)
    run.save(force_insert=True)
    # Holds the tenant's account rows locked until commit, and counts the open reservation on the held row under
    # that lock: the plan's concurrency limit is exact however many accepts race.
    ledger_reserve(
        tenant_id=tenant.pk,
        run_id=run.pk,
        amount_micros=run.reserved_micros,
        trace_id=run.trace_id,
        max_open=plan.max_concurrent_runs,
        key_chain=chain,  # the key spend counters (SPEC §8), counted in the same transaction; a refusal rolls back
        accepted_at=now,
    )
    transaction.on_commit(lambda: publish_run(run), robust=True)
    return run


# --- quote (API, MCP) ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quote:
    """What a submit of a body would cost, and that it would be accepted (SPEC §9), in micros: the view formats."""

    pack_type: str
    price_floor_micros: int
    price_ceiling_micros: int
    suggested_max_cost_micros: int
    minimum_fee_micros: int  # of the given reservation, or else of the suggested one
    available_micros: int
    key_spend_remaining_micros: int | None  # the least room along the key's chain; None: no key of it has a limit

    @property
    def price_exact(self) -> bool:
        return self.price_floor_micros == self.price_ceiling_micros


def run_quote(*, tenant: Tenant, plan: Plan, key: ApiKey, body: Any) -> Quote:
    """What a submit of `body` would get, checked as run_submit checks it (the given max cost, or else the
    suggested one) but with nothing reserved, created or stored, no idempotency key either: a Quote, or the very
    problem the submit would answer (402, 403, 422, 429 CONCURRENCY_LIMITED).

    The key spend, funds and concurrency checks read the counters and balances without locking them: a quote
    says what a submit would get now, and a submit right after it may still meet another's reservation.
    """
    draft = submission_read(body=body, default_trace_id="", reservation_required=False)
    submission = _submit_checks(tenant=tenant, plan=plan, key=key, draft=draft, idempotency_key="")
    chain, now = key_chain(key), timezone.now()
    refusal = ledger_reserve_refusal(
        tenant_id=tenant.pk,
        amount_micros=submission.max_cost_micros,
        max_open=plan.max_concurrent_runs,
        key_chain=chain,
        at=now,
    )
    if refusal is not None:
        raise refusal
    pack, inputs = draft.pack, submission.inputs
    return Quote(
        pack_type=pack.pack_type,
        price_floor_micros=pack.price_floor_micros(inputs),
        price_ceiling_micros=pack.price_ceiling_micros(inputs),
        suggested_max_cost_micros=suggested_max_cost_micros(pack, inputs),
        minimum_fee_micros=minimum_fee(submission.max_cost_micros),
        available_micros=balances_get(tenant_id=tenant.pk).available_micros,
        key_spend_remaining_micros=key_spend_remaining(key_chain=chain, at=now),
    )


# --- terminal transitions (worker, reaper, cancel) ------------------------------------------------------


def _finish(
    run: Run,
    *,
    ending: Ending,
    guard: Q,
    cost_micros: int | None = None,
    reason_code: str = "",
    detail: str = "",
    result: dict[str, Any] | None = None,
) -> bool:
    """CAS the run to its ending's status and post its SETTLE (charge_for's charge); False, nothing done, if lost."""
    charge, status, now = charge_for(run=run, ending=ending, cost_micros=cost_micros), ending.status, timezone.now()
    changes = {
        "status": status,
        "finalize_stage": FinalizeStage.COMMITTED,
        "money_state": MoneyState.SETTLED if charge else MoneyState.REFUNDED,
        "charged_micros": charge,
        "reason_code": reason_code,
        "error_detail": detail.replace("\x00", "\\x00")[:2000],  # text columns cannot hold U+0000
        "updated_at": now,
        "completed_at": now,
        **(result or {}),
    }
    if not _cas(run, guard, changes):
        logger.info("run %s: lost the race to finish it as %s; nothing done", run.pk, status)
        return False
    outcome = f"{status} {reason_code}".strip()
    ledger_settle(
        tenant_id=run.tenant_id,
        run_id=run.pk,
        reserved_micros=run.reserved_micros,
        charge_micros=charge,
        trace_id=run.trace_id,
        reason=outcome,
        counted_run=run if run.key_spend_counted else None,  # its key spend counters get back what is released
    )
    run_ending_announce(run=run)
    logger.info("run %s finished %s, charged %s micros", run.pk, outcome, charge)
    _observe_after_commit(run, status=status, reason_code=reason_code, charge=charge, completed_at=now)
    return True


def _observe_after_commit(run: Run, *, status: str, reason_code: str, charge: int, completed_at: datetime) -> None:
    """The run's ending in the metrics, once its transaction has committed (a rolled-back ending is not counted)."""
    transaction.on_commit(
        partial(
            run_finished_observe,
            pack=run.pack_type,
            status=status,
            reason=reason_code,
            charge_micros=charge,
            created_at=run.created_at,
            started_at=run.started_at,
            completed_at=completed_at,
        )
    )


@dataclass(frozen=True)
class CancelOutcome:
    run: Run
    pending: bool  # True: the run is PROCESSING; the worker stops at its next heartbeat


def run_cancel(*, tenant: Tenant, run_id: uuid.UUID, api_key: ApiKey | None = None) -> CancelOutcome:
    """QUEUED → CANCELED with a full release; PROCESSING → cancel requested; terminal → 409 RUN_TERMINAL. A run
    that `api_key` may not see (runs.selectors.visible_runs) is a 404."""
    for _ in range(3):  # a lost CAS means the run moved on (e.g. leased): look again
        run = visible_runs(tenant=tenant, api_key=api_key).filter(pk=run_id).first()
        if run is None:
            raise ApplicationError("NOT_FOUND")
        if run.is_terminal:
            raise ApplicationError("RUN_TERMINAL", f"Run {run.pk} is already {run.status}.")
        if run.finalize_stage is not None:
            # Claimed: its worker (or the reaper) is committing how it ends, and a cancel no longer stops that
            # (run_claim let no cancel request through). Retrying would not help for up to DPP_FINALIZE_STALE_S.
            raise ApplicationError(
                "RUN_TERMINAL", f"Run {run.pk} is finishing: its outcome is being committed and can no longer change."
            )
        if run.status == RunStatus.QUEUED and _cancel_queued(run):
            break
        if run.status == RunStatus.PROCESSING and _request_cancel(run):
            break
    else:
        raise ApplicationError("UNAVAILABLE", "The run is changing state; retry.", headers={"Retry-After": "1"})
    return CancelOutcome(run=run, pending=not run.is_terminal)  # the winning CAS brought `run` up to date


@transaction.atomic(durable=True)
def _cancel_queued(run: Run) -> bool:
    with run.log_ids():
        return _finish(
            run,
            ending=Ending.CANCELED_BEFORE_START,
            guard=Q(status=RunStatus.QUEUED),
            reason_code="CANCELED_BY_CLIENT",
            detail="canceled by the client before it started",
        )


def _request_cancel(run: Run) -> bool:
    if run.cancel_requested_at is not None:
        return True  # asked before: idempotent
    now = timezone.now()
    guard = Q(status=RunStatus.PROCESSING, finalize_stage__isnull=True)
    return _cas(run, guard, {"cancel_requested_at": now, "updated_at": now})


# --- worker transitions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    run: Run
    token: uuid.UUID


def _cas(run: Run, guard: Q, changes: dict[str, Any]) -> bool:
    """UPDATE the run WHERE its version is still the one read (and `guard` holds), bumping the version; on
    success the in-memory run is brought up to date too (no re-read)."""
    changed = Run.objects.filter(guard, pk=run.pk, version=run.version).update(**changes, version=F("version") + 1)
    if changed != 1:
        return False
    for name, value in changes.items():
        setattr(run, name, value)
    run.version += 1
    return True


def run_lease(*, run_id: uuid.UUID) -> Lease | None:
    """QUEUED → PROCESSING with a fresh lease; None when the run is not QUEUED (a duplicate delivery)."""
    run = Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).first()
    if run is None:
        return None
    token, now = uuid.uuid4(), timezone.now()
    leased = _cas(
        run,
        Q(status=RunStatus.QUEUED),
        {
            "status": RunStatus.PROCESSING,
            "lease_token": token,
            "lease_expires_at": now + timedelta(seconds=settings.DPP_LEASE_S),
            "started_at": now,
            "updated_at": now,
        },
    )
    return Lease(run=run, token=token) if leased else None


class HeartbeatState:
    OK = "OK"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    LOST = "LOST"


def run_heartbeat(*, run_id: uuid.UUID, lease_token: uuid.UUID) -> str:
    """Extend the lease (CAS on the token, lease not yet expired; `version` untouched) and report a cancel."""
    now = timezone.now()
    ours = Q(pk=run_id, lease_token=lease_token, status=RunStatus.PROCESSING, finalize_stage__isnull=True)
    extended = Run.objects.filter(ours, lease_expires_at__gt=now).update(
        lease_expires_at=now + timedelta(seconds=settings.DPP_LEASE_S)
    )
    if extended != 1:
        return HeartbeatState.LOST
    cancel_requested = Run.objects.filter(ours, cancel_requested_at__isnull=False).exists()
    return HeartbeatState.CANCEL_REQUESTED if cancel_requested else HeartbeatState.OK


def _worker_guard(lease_token: uuid.UUID) -> Q:
    return Q(
        status=RunStatus.PROCESSING,
        finalize_stage__isnull=True,
        lease_token=lease_token,
        lease_expires_at__gt=timezone.now(),
    )


@transaction.atomic(durable=True)
def run_fail(*, run: Run, lease_token: uuid.UUID, reason_code: str, detail: str) -> bool:
    """The worker ends a started run that produced no result: FAILED with the minimum fee."""
    return _finish(
        run,
        ending=Ending.FAILED,
        guard=_worker_guard(lease_token),
        reason_code=reason_code,
        detail=detail,
    )


@transaction.atomic(durable=True)
def run_cancel_started(*, run: Run, lease_token: uuid.UUID) -> bool:
    """The worker stopped a run whose cancel was requested: CANCELED with the minimum fee."""
    return _finish(
        run,
        ending=Ending.CANCELED_AFTER_START,
        guard=_worker_guard(lease_token),
        reason_code="CANCELED_BY_CLIENT",
        detail="canceled by the client while it ran",
    )


def run_claim(*, run_id: uuid.UUID, lease_token: uuid.UUID) -> Run | None:
    """Phase 1 of finalize: NULL → CLAIMED with a fresh finalize token; None if the lease was lost or a cancel
    was requested (then the caller ends the run CANCELED instead: a 202 cancel always wins over completion)."""
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        return None
    now = timezone.now()
    guard = _worker_guard(lease_token) & Q(cancel_requested_at__isnull=True)
    changes = {
        "finalize_stage": FinalizeStage.CLAIMED,
        "finalize_token": uuid.uuid4(),
        "claimed_at": now,
        "updated_at": now,
    }
    return run if _cas(run, guard, changes) else None


def _claimed_guard(finalize_token: uuid.UUID) -> Q:
    return Q(finalize_stage=FinalizeStage.CLAIMED, finalize_token=finalize_token)


@transaction.atomic(durable=True)
def run_commit(*, run: Run, stored: Envelope) -> bool:
    """Phase 2 of the worker's finalize: COMPLETED with its stored result, charged its cost (capped)."""
    return _commit(run, stored=stored, ending=Ending.COMPLETED)


def _commit(run: Run, *, stored: Envelope, ending: Ending) -> bool:
    assert run.finalize_token is not None  # noqa: S101 - a claimed run has a token
    return _finish(
        run,
        ending=ending,
        guard=_claimed_guard(run.finalize_token),
        cost_micros=stored.cost_micros,
        result={"result_key": stored.key, "result_sha256": stored.sha256, "result_bytes": stored.size},
    )


# --- reaper transitions ---------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def run_expire_lease(*, run: Run) -> bool:
    """A PROCESSING run whose lease expired unclaimed: FAILED/WORKER_TIMEOUT (CANCELED if asked), minimum fee."""
    canceled = run.cancel_requested_at is not None
    return _finish(
        run,
        ending=Ending.CANCELED_AFTER_START if canceled else Ending.WORKER_TIMEOUT,
        guard=Q(status=RunStatus.PROCESSING, finalize_stage__isnull=True, lease_expires_at__lt=timezone.now()),
        reason_code="CANCELED_BY_CLIENT" if canceled else "WORKER_TIMEOUT",
        detail="the worker stopped heartbeating before it finished",
    )


@transaction.atomic(durable=True)
def run_roll_forward(*, run: Run, stored: Envelope) -> bool:
    """A stale CLAIMED run with a valid envelope: COMPLETED with that result, charged the envelope's cost (capped)."""
    return _commit(run, stored=stored, ending=Ending.ROLLED_FORWARD)


@transaction.atomic(durable=True)
def run_roll_back(*, run: Run) -> bool:
    """A stale CLAIMED run without a valid envelope: FAILED/FINALIZE_ABORTED, minimum fee."""
    assert run.finalize_token is not None  # noqa: S101 - a claimed run has a token
    return _finish(
        run,
        ending=Ending.ROLLED_BACK,
        guard=_claimed_guard(run.finalize_token),
        reason_code="FINALIZE_ABORTED",
        detail="no valid result was stored before the finalize deadline (the worker stopped, or could not upload it)",
    )


@transaction.atomic(durable=True)
def run_expire_queued(*, run: Run) -> bool:
    """A run QUEUED past DPP_QUEUE_TTL_S: EXPIRED/QUEUE_TIMEOUT with a full release."""
    return _finish(
        run,
        ending=Ending.QUEUE_EXPIRED,
        guard=Q(status=RunStatus.QUEUED),
        reason_code="QUEUE_TIMEOUT",
        detail=f"no worker started it within {settings.DPP_QUEUE_TTL_S} s",
    )


def run_mark_published(*, run: Run) -> bool:
    """Record a re-publish: its time, and one more in the run's count of re-drives (which sets when the next is
    due). A CAS on both as `run` read them, so two reapers do not both re-drive."""
    previous = Q(published_at__isnull=True) if run.published_at is None else Q(published_at=run.published_at)
    marked = Run.objects.filter(previous, pk=run.pk, status=RunStatus.QUEUED, redrive_count=run.redrive_count).update(
        published_at=timezone.now(), redrive_count=F("redrive_count") + 1
    )
    return marked == 1
