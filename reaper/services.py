"""One reconcile pass (SPEC §3.3): finish what crashed workers left, re-drive lost tasks, expire stale queued
runs, and raise audit flags for what no rule explains.

Every action is a compare-and-set in runs.services, so any number of passes may run at once: the loser of a
race does nothing. Each finding list is read through a small partial index and capped per pass
(DPP_REAPER_BATCH), so a pass costs what it acts on, not the size of history.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from prometheus_client import Counter

from billing.audit_incremental import ledger_audit_incremental
from billing.models import Account, LedgerTransaction
from dpp.http.errors import DependencyUnavailableError
from dpp.money import format_usd
from dpp.observability import log_context
from dpp.webhooks.outbox import deliveries_redrive
from reaper.models import AuditFlag
from runs import results, services
from runs.dispatch import publish_run
from runs.models import OPEN_STATUSES, TERMINAL_STATUSES, FinalizeStage, Run, RunStatus

logger = logging.getLogger("dpp.reaper")

REAPER_ACTIONS = Counter("dpp_reaper_actions_total", "Reaper actions taken, by kind.", ("action",))
# By the run's re-drive number, the last bucket for the capped delay: mostly "1" is a lost task now and then;
# growing "2" and up is a backlog (or a broker that loses tasks) that the backoff is absorbing.
REDRIVES = Counter("dpp_reaper_redrives_total", "Re-drives published, by the run's re-drive number.", ("attempt",))
REDRIVE_ATTEMPT_LABELS = ("1", "2", "3", "4", "5+")
AUDIT_FLAGS_RAISED = Counter("dpp_audit_flags_raised_total", "Audit flags raised, by kind.", ("kind",))

# Outcomes of an action on one run (operations.md §6). An action that returns False lost the race: another
# process changed the run first, and this one changed nothing.
DONE = "done"
LOST_THE_RACE = "lost the race"
WOULD_DO = "would do"
# A re-drive that won the CAS on published_at but whose publish the broker did not take: nothing raced, and
# published_at and redrive_count stay bumped, so the next attempt comes after the next, longer delay (a back-off
# while the broker is down; the run still expires DPP_QUEUE_TTL_S after its creation).
PUBLISH_FAILED = "publish failed: the broker did not take the task"


@dataclass
class ReconcileReport:
    dry_run: bool
    expired_leases: int = 0
    rolled_forward: int = 0
    rolled_back: int = 0
    redriven: int = 0
    expired_queued: int = 0
    audit_flags: int = 0
    # Stale claims left CLAIMED because the result storage could not be read: neither rolled forward nor back.
    storage_unavailable: int = 0
    # Re-drives whose publish failed (the broker did not take the task): the run stays QUEUED for a later pass.
    redrive_failed: int = 0
    # Actions that raised (their transaction rolled back, nothing changed): each run is flagged ACTION_FAILED.
    actions_failed: int = 0
    # Webhook deliveries overdue (their task lost or their sender dead) published again (SPEC §10).
    webhooks_redriven: int = 0
    actions: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def note(self, action: str, run: Run, outcome: str) -> None:
        self.actions.append({"action": action, "run_id": str(run.pk), "trace_id": run.trace_id, "outcome": outcome})

    @property
    def unfinished(self) -> int:
        """Runs this pass found to act on and had to leave as they were (`reconcile` then exits 1)."""
        return self.storage_unavailable + self.redrive_failed + self.actions_failed


def _scope(qs: QuerySet[Run], run_id: uuid.UUID | None) -> QuerySet[Run]:
    qs = qs.filter(pk=run_id) if run_id is not None else qs
    return qs[: settings.DPP_REAPER_BATCH]


def _act(report: ReconcileReport, action: str, run: Run, do: Callable[..., bool | str]) -> bool:
    """Run one action (unless dry run) with the run's trace id in every log line; count it if it happened.

    `do` returns True (done), False (lost the race: the CAS found the run changed, nothing was done) or, for an
    action that won its CAS and then failed, the outcome to report (counted as `<action>_failed`)."""
    with run.log_ids():
        if report.dry_run:
            report.note(action, run, WOULD_DO)
            return True
        try:
            result = do()
        except (OperationalError, InterfaceError):
            raise  # the database is going away: nothing else can be done in this pass; the next one retries all
        except Exception as exc:  # one run the rules cannot handle must not hold up the others: flag it, go on
            _action_failed(report, action, run, exc)
            return False
        outcome = result if isinstance(result, str) else DONE if result else LOST_THE_RACE
        report.note(action, run, outcome)
        if outcome == DONE:
            REAPER_ACTIONS.labels(action).inc()
            logger.warning("reaper: %s run %s", action, run.pk)
        elif outcome != LOST_THE_RACE:
            REAPER_ACTIONS.labels(f"{action}_failed").inc()
            logger.error("reaper: %s run %s: %s", action, run.pk, outcome)
        return outcome == DONE


def _action_failed(report: ReconcileReport, action: str, run: Run, exc: Exception) -> None:
    """An action raised: its transaction rolled back, so nothing changed. The run's state is one no rule of SPEC
    §3.3 explains (e.g. a SETTLE already posted for a run that is not terminal): flag it for a person, and let the
    pass go on. The next pass tries the run again; the flag is raised once while it stays open."""
    first_line = next(iter(str(exc).strip().splitlines()), "")
    outcome = f"failed: {type(exc).__name__}: {first_line}"[:300] if first_line else f"failed: {type(exc).__name__}"
    report.actions_failed += 1
    report.note(action, run, outcome)
    REAPER_ACTIONS.labels(f"{action}_failed").inc()
    logger.error("reaper: %s run %s: %s", action, run.pk, outcome, exc_info=exc)
    _flag_run(report, AuditFlag.Kind.ACTION_FAILED, run, f"{action} {outcome}; the run was left as it was")


def _expire_leases(report: ReconcileReport, run_id: uuid.UUID | None) -> None:
    now = timezone.now()
    stale = Run.objects.filter(status=RunStatus.PROCESSING, finalize_stage__isnull=True, lease_expires_at__lt=now)
    for run in _scope(stale.order_by("lease_expires_at"), run_id):
        if _act(report, "expire_lease", run, lambda run=run: services.run_expire_lease(run=run)):
            report.expired_leases += 1


def _finish_stale_claims(report: ReconcileReport, run_id: uuid.UUID | None) -> None:
    cutoff = timezone.now() - timedelta(seconds=settings.DPP_FINALIZE_STALE_S)
    stale = Run.objects.filter(finalize_stage=FinalizeStage.CLAIMED, claimed_at__lt=cutoff).order_by("claimed_at")
    claims = list(_scope(stale, run_id))
    for position, run in enumerate(claims):
        assert run.finalize_token is not None  # noqa: S101 - CLAIMED implies a token
        with run.log_ids():  # also envelope_read's "could not read envelope" line is about this run
            try:
                envelope = results.envelope_validate(run=run, key=results.envelope_key(run, run.finalize_token))
            except DependencyUnavailableError:
                # Unreadable is not absent: rolling back would charge the minimum fee for a run whose valid result
                # may be in storage, and a run gets one SETTLE. Leave this claim and the rest for a later pass.
                waiting = claims[position:]
                report.storage_unavailable += len(waiting)
                REAPER_ACTIONS.labels("claim_deferred").inc(len(waiting))
                for left in waiting:
                    report.note("finish_claim", left, "deferred: the result storage is unavailable")
                logger.error(  # noqa: TRY400 - envelope_read logged the cause with its stack
                    "reaper: result storage unavailable; %d stale claim(s) left CLAIMED for the next pass", len(waiting)
                )
                return
        if envelope is not None:
            roll_forward = functools.partial(services.run_roll_forward, run=run, stored=envelope)
            if _act(report, "roll_forward", run, roll_forward):
                report.rolled_forward += 1
        elif _act(report, "roll_back", run, lambda run=run: services.run_roll_back(run=run)):
            report.rolled_back += 1


def _expire_queued(report: ReconcileReport, run_id: uuid.UUID | None) -> None:
    cutoff = timezone.now() - timedelta(seconds=settings.DPP_QUEUE_TTL_S)
    stale = Run.objects.filter(status=RunStatus.QUEUED, created_at__lt=cutoff).order_by("created_at")
    for run in _scope(stale, run_id):
        if _act(report, "expire_queued", run, lambda run=run: services.run_expire_queued(run=run)):
            report.expired_queued += 1


# The longest wait between two re-drives of one run (or DPP_QUEUE_TTL_S if shorter): a run that waits behind a
# backlog for its whole hour is re-published 6 times (60 s default: after 1, 3, 7, 15, 30 and 45 minutes), not
# at every pass; a lost task still goes out again within 15 minutes.
REDRIVE_BACKOFF_CAP_S = 15 * 60


def redrive_delays() -> list[int]:
    """The wait before re-drive n (n = 0, 1, …) after the run's last publish: DPP_REDRIVE_AFTER_S × 2ⁿ up to the
    cap; the last one applies to every later re-drive. So a backlog of N runs that lasts T costs O(N · log T)
    publishes, not one per run per pass (found from outside: 7,417 re-drives for 1,190 runs)."""
    first = settings.DPP_REDRIVE_AFTER_S
    cap = max(first, min(REDRIVE_BACKOFF_CAP_S, settings.DPP_QUEUE_TTL_S))
    delays = [first]
    while delays[-1] < cap:
        delays.append(min(2 * delays[-1], cap))
    return delays


def _redrive_due(now: datetime) -> Q:
    """QUEUED runs whose next re-drive is due, as one condition (the count of re-drives picks the delay)."""
    delays = redrive_delays()
    due = Q(redrive_count=0, published_at__isnull=True)  # published at submit only: the creation time decides
    for n, delay in enumerate(delays):
        count = Q(redrive_count__gte=n) if n == len(delays) - 1 else Q(redrive_count=n)
        due |= count & Q(published_at__lt=now - timedelta(seconds=delay))
    return due


def _redrive(report: ReconcileReport, run_id: uuid.UUID | None) -> None:
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.DPP_REDRIVE_AFTER_S)
    waiting = Run.objects.filter(status=RunStatus.QUEUED, created_at__lt=cutoff).filter(_redrive_due(now))
    for run in _scope(waiting.order_by("created_at"), run_id):
        if _act(report, "redrive", run, lambda run=run: _redrive_one(report, run)):
            report.redriven += 1


def _redrive_one(report: ReconcileReport, run: Run) -> bool | str:
    """Re-publish one run's task. The CAS on published_at decides which reaper publishes (the loser does
    nothing); the winner's publish may still fail, which is no lost race: PUBLISH_FAILED, counted apart."""
    if not services.run_mark_published(run=run):
        return False
    if publish_run(run):  # on failure, publish_run has logged the cause with its stack
        REDRIVES.labels(REDRIVE_ATTEMPT_LABELS[min(run.redrive_count, len(REDRIVE_ATTEMPT_LABELS) - 1)]).inc()
        return True
    report.redrive_failed += 1
    return PUBLISH_FAILED


# --- audit flags: findings no rule explains. Money is never touched here. --------------------------------


def _raise_flag(report: ReconcileReport, *, kind: str, subject: str, detail: str, **ids: Any) -> None:
    """One open flag per (kind, subject): a finding already flagged and not yet resolved is not raised again."""
    if AuditFlag.objects.filter(kind=kind, subject=subject, resolved_at__isnull=True).exists():
        return
    report.audit_flags += 1
    report.actions.append({"action": "audit_flag", "kind": kind, "subject": subject, "detail": detail})
    if report.dry_run:
        return
    # ignore_conflicts: two reapers may find the same thing at once; the partial unique index keeps one.
    AuditFlag.objects.bulk_create([AuditFlag(kind=kind, subject=subject, detail=detail, **ids)], ignore_conflicts=True)
    AUDIT_FLAGS_RAISED.labels(kind).inc()
    run_id = ids.get("run_id")
    with log_context(
        trace_id=ids.get("trace_id") or None,
        tenant_id=ids.get("tenant_id"),
        run_id=str(run_id) if run_id is not None else None,
    ):
        logger.critical("AUDIT FLAG %s on %s: %s", kind, subject, detail, extra={"audit_flag": kind})


def _flag_run(report: ReconcileReport, kind: str, run: Run, detail: str) -> None:
    _raise_flag(
        report,
        kind=kind,
        subject=str(run.pk),
        detail=detail,
        run_id=run.pk,
        tenant_id=run.tenant_id,
        trace_id=run.trace_id,
    )


def _audit_recent_runs(report: ReconcileReport, run_id: uuid.UUID | None) -> None:
    """Terminal runs without SETTLE and SETTLEs without a terminal run, among the recent ones."""
    since = timezone.now() - timedelta(seconds=max(10 * settings.DPP_REAPER_INTERVAL_S, 600))
    # A SETTLE is written in the same transaction that sets completed_at: bounding its time too keeps the
    # planner from reading every SETTLE ever written (the pass must cost what it looks at, not history).
    settles = LedgerTransaction.objects.filter(
        kind=LedgerTransaction.Kind.SETTLE, run_id=OuterRef("pk"), created_at__gte=since - timedelta(hours=1)
    )
    unsettled = Run.objects.filter(status__in=TERMINAL_STATUSES, completed_at__gte=since).filter(~Exists(settles))
    for run in _scope(unsettled, run_id):
        _flag_run(report, AuditFlag.Kind.TERMINAL_WITHOUT_SETTLE, run, f"run is {run.status} but has no SETTLE")
    terminal = Run.objects.filter(pk=OuterRef("run_id"), status__in=TERMINAL_STATUSES)
    orphans = LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.SETTLE, created_at__gte=since).filter(
        ~Exists(terminal)
    )
    if run_id is not None:
        orphans = orphans.filter(run_id=run_id)
    for txn in orphans[: settings.DPP_REAPER_BATCH]:
        _raise_flag(
            report,
            kind=AuditFlag.Kind.SETTLE_WITHOUT_TERMINAL,
            subject=str(txn.run_id),
            detail=f"SETTLE #{txn.pk} exists but its run is not terminal",
            run_id=txn.run_id,
            tenant_id=txn.tenant_id,
            trace_id=txn.trace_id,
        )


def _audit_held(report: ReconcileReport) -> None:
    """Tenants whose held balance differs from the reservations of their open runs (one consistent query)."""
    open_sum = (
        Run.objects.filter(tenant_id=OuterRef("tenant_id"), status__in=OPEN_STATUSES)
        .values("tenant_id")
        .annotate(total=Sum("reserved_micros"))
        .values("total")
    )
    has_open = Run.objects.filter(tenant_id=OuterRef("tenant_id"), status__in=OPEN_STATUSES)
    candidates = (
        Account.objects.filter(kind=Account.Kind.HELD)
        .filter(~Q(balance_micros=0) | Exists(has_open))
        .annotate(open_micros=Coalesce(open_sum, 0))
        .exclude(balance_micros=F("open_micros"))
    )
    for account in candidates[: settings.DPP_REAPER_BATCH]:
        _raise_flag(
            report,
            kind=AuditFlag.Kind.HELD_MISMATCH,
            subject=str(account.tenant_id),
            detail=(
                f"held is {format_usd(account.balance_micros)} USD, "
                f"open reservations {format_usd(account.open_micros)} USD"
            ),
            tenant_id=account.tenant_id,
        )


def audit_ledger_flags() -> ReconcileReport:
    """The ledger audit (SPEC §2.1) as beat schedules it, incremental: every invariant over what was written since
    its last checkpoint, and every account's balance against its checkpoint (billing.audit_incremental), so its
    cost follows the new activity, not the history (§3.3). One flag per violated invariant, so that what the
    reaper's recent-window checks cannot see still reaches `dpp_audit_flags_open` and the admin. `manage.py
    audit_ledger` still checks everything, the run side too. Money is never touched."""
    report = ReconcileReport(dry_run=False)
    audit = ledger_audit_incremental()
    for invariant, count in sorted(audit.violation_counts.items()):
        example = next((v.detail for v in audit.violations if v.invariant == invariant), "")
        _raise_flag(
            report,
            kind=AuditFlag.Kind.LEDGER_AUDIT,
            subject=invariant,
            detail=f"{count} violation(s) of {invariant}, e.g. {example}; run audit_ledger for all",
        )
    logger.info("ledger audit: %d violation(s) in %.1f s", audit.violations_total, audit.seconds.get("total", 0.0))
    return report


def audit_flag_resolve(*, flag_ids: list[int], actor: str, note: str) -> int:
    """Resolve the flags among `flag_ids` that are still open; returns how many this call resolved."""
    if not note.strip():
        raise ValueError("resolving a flag needs a note")
    # Conditional UPDATE: a flag resolved meanwhile by someone else keeps its first resolution.
    return AuditFlag.objects.filter(pk__in=flag_ids, resolved_at__isnull=True).update(
        resolved_at=timezone.now(), resolved_by=actor, resolution_note=note.strip()
    )


def reconcile_once(*, dry_run: bool = False, run_id: uuid.UUID | None = None) -> ReconcileReport:
    """One reaper pass; with `run_id`, only that run (and no tenant-wide check)."""
    report = ReconcileReport(dry_run=dry_run)
    _expire_leases(report, run_id)
    _finish_stale_claims(report, run_id)
    _expire_queued(report, run_id)
    _redrive(report, run_id)
    _audit_recent_runs(report, run_id)
    if run_id is None:
        _audit_held(report)
        if not dry_run:
            report.webhooks_redriven = deliveries_redrive(limit=settings.DPP_REAPER_BATCH)
    return report
