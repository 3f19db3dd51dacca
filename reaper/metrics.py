"""Gauges read from the database at scrape time, so every process's /metrics tells the same truth."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Sum
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from billing.models import Account
from reaper.models import AuditFlag
from runs.models import FinalizeStage, Run, RunStatus

logger = logging.getLogger("dpp.reaper.metrics")


_GAUGES = (
    ("dpp_audit_flags_open", "Audit flags raised and not yet resolved."),
    ("dpp_runs_queued", "Runs waiting for a worker."),
    ("dpp_runs_queued_oldest_age_seconds", "Age of the oldest QUEUED run (0 when none): stuck workers or reaper."),
    ("dpp_runs_lease_expired", "PROCESSING runs whose lease expired (the reaper ends them)."),
    ("dpp_runs_claim_stale", "Runs CLAIMED longer than DPP_FINALIZE_STALE_S."),
)
_PLATFORM = (
    "dpp_platform_balance_micros",
    "Platform balances in USD micros by kind (revenue; funding, the outside world), each its shards' sum.",
)


def _platform_balances() -> GaugeMetricFamily:
    """The platform's revenue and funding: each the sum of its 16 shard accounts (SPEC §12), one query."""
    sums = dict(
        Account.objects.filter(tenant__isnull=True).order_by().values_list("kind").annotate(total=Sum("balance_micros"))
    )
    family = GaugeMetricFamily(*_PLATFORM, labels=["kind"])
    for kind in Account.PLATFORM_KINDS:
        family.add_metric([kind.lower()], sums.get(kind) or 0)
    return family


class ReconciliationCollector(Collector):
    """Open audit flags and the work the reaper would find now (each through a small partial index)."""

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Registration asks for the names; answering here keeps it from querying the database at start-up.
        yield from (GaugeMetricFamily(name, doc) for name, doc in _GAUGES)
        yield GaugeMetricFamily(*_PLATFORM, labels=["kind"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            now = timezone.now()
            flags = AuditFlag.objects.filter(resolved_at__isnull=True).count()
            queued = Run.objects.filter(status=RunStatus.QUEUED).count()
            # Through the partial index of QUEUED runs by creation time. A worker that stopped consuming also
            # stops the reaper's passes (its tasks), so queued runs age past any re-drive: this says so.
            oldest = Run.objects.filter(status=RunStatus.QUEUED).order_by("created_at").values("created_at").first()
            expired_leases = Run.objects.filter(
                status=RunStatus.PROCESSING, finalize_stage__isnull=True, lease_expires_at__lt=now
            ).count()
            stale_claims = Run.objects.filter(
                finalize_stage=FinalizeStage.CLAIMED,
                claimed_at__lt=now - timedelta(seconds=settings.DPP_FINALIZE_STALE_S),
            ).count()
            platform = _platform_balances()
        except DatabaseError:
            logger.warning("metrics: the database is unreachable; reconciliation gauges skipped")
            return
        oldest_age = max((now - oldest["created_at"]).total_seconds(), 0.0) if oldest else 0.0
        values = {
            "dpp_audit_flags_open": flags,
            "dpp_runs_queued": queued,
            "dpp_runs_queued_oldest_age_seconds": oldest_age,
            "dpp_runs_lease_expired": expired_leases,
            "dpp_runs_claim_stale": stale_claims,
        }
        yield from (GaugeMetricFamily(name, doc, value=values[name]) for name, doc in _GAUGES)
        yield platform
