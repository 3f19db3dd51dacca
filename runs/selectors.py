"""Reads of runs: one tenant's run, its list (keyset pagination), its usage per day."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db.models import Count, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, TruncDate

from billing.models import Account
from dpp.dates import utc_days
from dpp.models import Tenant
from runs import sql
from runs.models import Run, RunStatus


def _with_available(qs: QuerySet[Run], tenant: Tenant) -> QuerySet[Run]:
    """Each run annotated with its tenant's available balance (`available_micros`), read in the same query."""
    available = Account.objects.filter(pk=Account.tenant_account_id(tenant.pk, Account.Kind.AVAILABLE))
    return qs.annotate(available_micros=Subquery(available.order_by().values("balance_micros")[:1]))


def run_get(*, tenant: Tenant, run_id: uuid.UUID) -> Run | None:
    """The tenant's run with `available_micros`, or None — also when it is someone else's (indistinguishable)."""
    return sql.run_with_available(tenant_id=tenant.pk, run_id=run_id)


@dataclass(frozen=True)
class RunFilters:
    statuses: tuple[str, ...] = ()
    pack_type: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def run_list(*, tenant: Tenant, filters: RunFilters, after: tuple[datetime, uuid.UUID] | None = None) -> QuerySet[Run]:
    """The tenant's runs newest first, with `available_micros`; `after` is the (created_at, id) of the last row
    already seen."""
    qs = Run.objects.filter(tenant=tenant)
    if filters.statuses:
        qs = qs.filter(status__in=filters.statuses)
    if filters.pack_type:
        qs = qs.filter(pack_type=filters.pack_type)
    if filters.created_after:
        qs = qs.filter(created_at__gt=filters.created_after)
    if filters.created_before:
        qs = qs.filter(created_at__lt=filters.created_before)
    if after is not None:
        created_at, run_id = after
        qs = qs.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, pk__lt=run_id))
    return _with_available(qs.order_by("-created_at", "-pk"), tenant)


def usage_by_day(*, tenant: Tenant, first: date, last: date) -> list[dict[str, Any]]:
    """Per UTC day of acceptance: counts by outcome and the money reserved and charged (int micros).

    Charged and reserved come from the run rows, which are written in the same transactions as their RESERVE
    and SETTLE: `audit_ledger` proves they agree with the ledger.
    """
    start, end = utc_days(first, last)
    rows = (
        Run.objects.filter(tenant=tenant, created_at__gte=start, created_at__lt=end)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(
            runs=Count("pk"),
            completed=Count("pk", filter=Q(status=RunStatus.COMPLETED)),
            failed=Count("pk", filter=Q(status=RunStatus.FAILED)),
            canceled=Count("pk", filter=Q(status=RunStatus.CANCELED)),
            expired=Count("pk", filter=Q(status=RunStatus.EXPIRED)),
            charged_micros=Coalesce(Sum("charged_micros"), 0),
            reserved_micros=Coalesce(Sum("reserved_micros"), 0),
        )
        .order_by("day")
    )
    return [dict(row) for row in rows]
