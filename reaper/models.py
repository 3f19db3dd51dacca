"""Audit flags: what the reaper found and may not fix by itself (SPEC §3.3, last row).

A flag never moves money. It is raised once per (kind, subject) while open, shown in the admin, logged at
CRITICAL and counted in /metrics; a person resolves it with a note.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class AuditFlag(models.Model):
    class Kind(models.TextChoices):
        TERMINAL_WITHOUT_SETTLE = "TERMINAL_WITHOUT_SETTLE", "terminal run without SETTLE"
        SETTLE_WITHOUT_TERMINAL = "SETTLE_WITHOUT_TERMINAL", "SETTLE without a terminal run"
        HELD_MISMATCH = "HELD_MISMATCH", "held balance ≠ open reservations"
        RESERVE_MISMATCH = "RESERVE_MISMATCH", "run without its RESERVE, or a different amount"
        ACTION_FAILED = "ACTION_FAILED", "a reaper action on the run failed"
        LEDGER_AUDIT = "LEDGER_AUDIT", "the scheduled ledger audit found violations"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    subject = models.CharField(max_length=100, help_text="The run id or tenant id the finding is about.")
    tenant_id = models.CharField(max_length=64, blank=True)
    run_id = models.UUIDField(null=True, blank=True)
    detail = models.TextField()
    trace_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=150, blank=True)
    resolution_note = models.TextField(blank=True)

    class Meta:
        ordering = ("-created_at",)
        permissions = [("reconcile", "Can run a reconcile pass")]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "subject"], condition=Q(resolved_at__isnull=True), name="reaper_one_open_flag"
            ),
        ]
        indexes = [models.Index(fields=["created_at"], condition=Q(resolved_at__isnull=True), name="reaper_open")]

    def __str__(self) -> str:
        return f"{self.kind} {self.subject}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None
