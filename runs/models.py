"""A run: one paid execution of a pack (SPEC §3).

States: `status` QUEUED → PROCESSING → COMPLETED | FAILED | CANCELED, and QUEUED → CANCELED | EXPIRED;
`money_state` RESERVED → SETTLED (charge > 0) | REFUNDED (charge = 0); `finalize_stage` NULL → CLAIMED → COMMITTED.

Invariants, and where each is kept:
- a run is created RESERVED, in the database transaction that posts its RESERVE (runs.services.run_accept);
- a run is terminal ⇔ finalize_stage is COMMITTED ⇔ money_state is SETTLED/REFUNDED ⇔ it has a SETTLE — the first
  three by CHECK constraints here, the SETTLE by posting it in the same transaction (audit_ledger checks it);
- charged ≤ reserved, both multiples of 100 micros; REFUNDED ⇔ charged = 0 — CHECK constraints;
- an (tenant, Idempotency-Key) pair names at most one run — a unique constraint: the runs table is the
  idempotency store, and keys live as long as their run;
- every state change is a compare-and-set on `version` (and the worker's `lease_token` / `finalize_token`):
  the loser of a race changes nothing and has no side effect (runs.services).
The runs table is also the outbox: a QUEUED run whose task was lost is re-published by the reaper.
"""

from __future__ import annotations

import uuid
from contextlib import AbstractContextManager

from django.db import models
from django.db.models import BigIntegerField, F, Q, Value
from django.db.models.functions import Coalesce, Mod
from django.db.models.lookups import Exact

from dpp.models import ApiKey, Tenant
from dpp.observability import log_context


class RunStatus(models.TextChoices):
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"


class MoneyState(models.TextChoices):
    RESERVED = "RESERVED"
    SETTLED = "SETTLED"
    REFUNDED = "REFUNDED"


class FinalizeStage(models.TextChoices):
    CLAIMED = "CLAIMED"
    COMMITTED = "COMMITTED"


# The admin's sort by charge: an open run (no charge yet, NULL) counts below every charge, so "most charged first"
# ends with the open runs on PostgreSQL and SQLite alike (whose NULLs sort differently), and a plain index on the same
# expression (runs_charged) serves both directions of the sort with no NULLS clause, which SQLite's indexes lack.
CHARGE_ORDER = Coalesce("charged_micros", Value(-1, output_field=BigIntegerField()))

OPEN_STATUSES = (RunStatus.QUEUED, RunStatus.PROCESSING)
TERMINAL_STATUSES = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED, RunStatus.EXPIRED)


class Run(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: the composite indexes below lead with the tenant (every index is paid on every INSERT).
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="runs", db_index=False)
    # The key that submitted it (SPEC §8: its spend counts against that key and every key above it, and only they
    # and the root see it). NULL for runs accepted before keys had limits. Indexed below, with the list order.
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.PROTECT, null=True, blank=True, related_name="runs", db_index=False
    )
    # Whether a spend counter counts it (a key of its chain had a spend limit): only then does its settle give back
    # to the counters, so the runs of keys without limits pay nothing for them.
    key_spend_counted = models.BooleanField(default=False)
    pack_type = models.CharField(max_length=32)
    profile_version = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    money_state = models.CharField(max_length=16, choices=MoneyState.choices, default=MoneyState.RESERVED)
    # NULL is a state of its own (not yet claimed), distinct from any stage: hence a nullable CharField.
    finalize_stage = models.CharField(  # noqa: DJ001
        max_length=16, choices=FinalizeStage.choices, null=True, blank=True
    )
    version = models.PositiveIntegerField(default=0)

    idempotency_key = models.CharField(max_length=64)
    request_hash = models.CharField(max_length=64, help_text="SHA-256 of the canonical request payload.")
    inputs = models.JSONField()
    timebox_sec = models.PositiveSmallIntegerField()
    trace_id = models.CharField(max_length=64)

    reserved_micros = models.BigIntegerField()
    minimum_fee_micros = models.BigIntegerField()
    charged_micros = models.BigIntegerField(null=True, blank=True)

    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    finalize_token = models.UUIDField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True, help_text="Last time its task was published.")
    # Re-publishes by the reaper so far: the n-th waits DPP_REDRIVE_AFTER_S × 2ⁿ after the last (reaper.services).
    # A default in the database too: processes of the previous release insert runs without the column while a
    # deploy rolls. No CHECK (>= 0): adding one would scan the whole table under its lock; only an F() + 1 writes it.
    redrive_count = models.SmallIntegerField(default=0, db_default=0, help_text="Times the reaper re-published it.")

    reason_code = models.CharField(max_length=32, blank=True)
    error_detail = models.TextField(blank=True)
    result_key = models.CharField(max_length=300, blank=True)
    result_sha256 = models.CharField(max_length=64, blank=True)
    result_bytes = models.PositiveIntegerField(null=True, blank=True)

    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [
            # GET /v1/runs: newest first per tenant, keyset pagination on (created_at, id).
            models.Index(fields=["tenant", "-created_at", "-id"], name="runs_tenant_created"),
            models.Index(fields=["tenant", "status", "-created_at"], name="runs_tenant_status_created"),
            # A delegated key's list and its spend (the runs of a few keys, newest first).
            models.Index(fields=["api_key", "-created_at", "-id"], name="runs_api_key_created"),
            models.Index(fields=["tenant", "pack_type", "-created_at"], name="runs_tenant_pack_created"),
            # The admin's list, newest first; its totals (SUM of both money columns over all runs or a date range)
            # read this index alone (an index-only scan: PostgreSQL's INCLUDE; SQLite ignores it), not the runs.
            models.Index(
                fields=["-created_at", "-id"], include=["reserved_micros", "charged_micros"], name="runs_created_money"
            ),
            models.Index(fields=["trace_id"], name="runs_trace"),
            models.Index(fields=["idempotency_key"], name="runs_idempotency_key"),  # admin search
            # The reaper's work lists: small partial indexes, so a pass costs what it acts on, not history.
            models.Index(fields=["created_at"], condition=Q(status="QUEUED"), name="runs_queued"),
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(status="PROCESSING", finalize_stage__isnull=True),
                name="runs_leased",
            ),
            models.Index(fields=["claimed_at"], condition=Q(finalize_stage="CLAIMED"), name="runs_claimed"),
            models.Index(
                fields=["tenant"],
                condition=Q(status__in=["QUEUED", "PROCESSING"]),
                name="runs_open_by_tenant",
            ),
            models.Index(fields=["completed_at"], name="runs_completed"),
            # The admin's money sorts (runs.admin): the top 50 by charge or reservation, ties newest first, read
            # off the index in either direction, within a date range too (created_at is in the index).
            models.Index(CHARGE_ORDER, F("created_at"), F("id"), name="runs_charged"),
            models.Index(fields=["reserved_micros", "created_at", "id"], name="runs_reserved"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "idempotency_key"], name="runs_one_run_per_idempotency_key"),
            models.CheckConstraint(condition=Q(reserved_micros__gt=0), name="runs_reserved_positive"),
            models.CheckConstraint(
                condition=Q(minimum_fee_micros__gte=0, minimum_fee_micros__lte=F("reserved_micros")),
                name="runs_min_fee_within_reservation",
            ),
            models.CheckConstraint(
                condition=Q(charged_micros__isnull=True)
                | Q(charged_micros__gte=0, charged_micros__lte=F("reserved_micros")),
                name="runs_charge_within_reservation",
            ),
            models.CheckConstraint(
                condition=Exact(Mod("reserved_micros", 100), 0) & Exact(Mod("minimum_fee_micros", 100), 0),
                name="runs_amounts_granule",
            ),
            models.CheckConstraint(
                condition=(
                    Q(
                        status__in=["QUEUED", "PROCESSING"],
                        money_state="RESERVED",
                        charged_micros__isnull=True,
                    )
                    & (Q(finalize_stage__isnull=True) | Q(finalize_stage="CLAIMED"))
                )
                | (
                    Q(status__in=["COMPLETED", "FAILED", "CANCELED", "EXPIRED"], finalize_stage="COMMITTED")
                    & (Q(money_state="SETTLED", charged_micros__gt=0) | Q(money_state="REFUNDED", charged_micros=0))
                ),
                name="runs_states_agree",
            ),
            models.CheckConstraint(
                condition=~Q(status="QUEUED") | (Q(finalize_stage__isnull=True) & Q(lease_token__isnull=True)),
                name="runs_queued_not_leased",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pk} {self.pack_type} {self.status}"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def log_ids(self) -> AbstractContextManager[None]:
        """The run's trace, tenant and run ids on every log line written inside (dpp.observability.log_context)."""
        return log_context(trace_id=self.trace_id, tenant_id=self.tenant_id, run_id=str(self.pk))


class ClosedDay(models.Model):
    """The activity page's figures of one UTC day that has ended (runs.activity): written once by beat, an hour
    after midnight, never by a run's own transaction (no row that every run would have to lock, SPEC §12)."""

    day = models.DateField(primary_key=True)
    runs = models.BigIntegerField(help_text="Runs accepted that day (by created_at).")
    revenue_micros = models.BigIntegerField(help_text="Charges of the runs that ended that day (by completed_at).")
    computed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.day}: {self.runs} runs, {self.revenue_micros} micros"
