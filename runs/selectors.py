"""Reads of runs: one tenant's run, its list (keyset pagination), its usage per day.

Which runs an API key sees (SPEC §8): a key without a parent, all of its tenant's; a key with one, only the runs
submitted by itself or by keys below it — `visible_runs`, the one filter every read and cancel of a run goes
through (another's run is a 404, like another tenant's). Money reads (usage, account, ledger) stay tenant-wide.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db.models import Count, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, TruncDate

from billing.models import Account
from dpp.dates import utc_days
from dpp.models import ApiKey, Tenant
from runs import sql
from runs.models import Run, RunStatus


def _with_available(qs: QuerySet[Run], tenant: Tenant) -> QuerySet[Run]:
    """Each run annotated with its tenant's available balance (`available_micros`), read in the same query."""
    available = Account.objects.filter(pk=Account.tenant_account_id(tenant.pk, Account.Kind.AVAILABLE))
    return qs.annotate(available_micros=Subquery(available.order_by().values("balance_micros")[:1]))


def visible_runs(*, tenant: Tenant, api_key: ApiKey | None) -> QuerySet[Run]:
    """The runs `api_key` may read and cancel (None: an internal caller, the whole tenant)."""
    runs = Run.objects.filter(tenant=tenant)
    if api_key is not None and api_key.parent_id is not None:
        subtree = ApiKey.objects.filter(tenant=tenant, path__startswith=api_key.path).values("pk")
        runs = runs.filter(api_key__in=subtree)
    return runs


def run_get(*, tenant: Tenant, run_id: uuid.UUID, api_key: ApiKey | None = None) -> Run | None:
    """The run with `available_micros` if `api_key` may see it, else None — also when it is someone else's
    (indistinguishable)."""
    if api_key is not None and api_key.parent_id is not None:
        runs = _with_available(visible_runs(tenant=tenant, api_key=api_key).filter(pk=run_id), tenant)
        return runs.only(*sql.SHOWN_FIELDS).first()
    return sql.run_with_available(tenant_id=tenant.pk, run_id=run_id)


@dataclass(frozen=True)
class RunFilters:
    statuses: tuple[str, ...] = ()
    pack_type: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def run_list(
    *,
    tenant: Tenant,
    filters: RunFilters,
    after: tuple[datetime, uuid.UUID] | None = None,
    api_key: ApiKey | None = None,
) -> QuerySet[Run]:
    """The runs `api_key` sees newest first, with `available_micros`; `after` is the (created_at, id) of the last
    row already seen."""
    qs = visible_runs(tenant=tenant, api_key=api_key)
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
