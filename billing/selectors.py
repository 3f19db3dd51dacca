"""Reads of money: balances, the tenant's plan, the tenant's ledger, the key spend counters."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from billing.models import Account, KeySpend, LedgerTransaction, Plan

AccountKind = Account.Kind


@dataclass(frozen=True)
class Balances:
    available_micros: int
    held_micros: int


def balances_get(*, tenant_id: str) -> Balances:
    """The tenant's available and held balances (one query)."""
    rows = dict(
        Account.objects.filter(
            pk__in=[Account.tenant_account_id(tenant_id, kind) for kind in Account.TENANT_KINDS]
        ).values_list("kind", "balance_micros")
    )
    return Balances(available_micros=rows.get(AccountKind.AVAILABLE, 0), held_micros=rows.get(AccountKind.HELD, 0))


def plan_get(*, tenant_id: str) -> Plan:
    """The tenant's open plan (one query). Every onboarded tenant has exactly one."""
    return Plan.objects.get(tenant_plans__tenant_id=tenant_id, tenant_plans__ended_at__isnull=True)


# Plan definitions change rarely (a handful of rows, edited by staff): each process keeps them this long.
# Which plan a tenant is on is never cached: it comes with every authentication (billing.auth).
PLAN_CACHE_SECONDS = 30.0
_plans: dict[int, tuple[float, Plan]] = {}


def plan_by_id(*, plan_id: int) -> Plan:
    """A plan definition, from this process's cache when fresh (no query), else from the database."""
    now = time.monotonic()
    cached = _plans.get(plan_id)
    if cached is not None and now - cached[0] < PLAN_CACHE_SECONDS:
        return cached[1]
    plan = Plan.objects.get(pk=plan_id)
    _plans[plan_id] = (now, plan)
    return plan


def plan_cache_clear() -> None:
    _plans.clear()


def ledger_list(*, tenant_id: str, before_id: int | None = None) -> QuerySet[LedgerTransaction]:
    """The tenant's transactions, newest first, with its deltas and the charge annotated (one query)."""
    available = Account.tenant_account_id(tenant_id, AccountKind.AVAILABLE)
    held = Account.tenant_account_id(tenant_id, AccountKind.HELD)
    revenue = Account.platform_prefix(AccountKind.REVENUE)  # any of its shards
    qs = LedgerTransaction.objects.filter(tenant_id=tenant_id)
    if before_id is not None:
        qs = qs.filter(pk__lt=before_id)
    return qs.order_by("-pk").annotate(
        available_delta_micros=Coalesce(Sum("entries__amount_micros", filter=Q(entries__account_id=available)), 0),
        held_delta_micros=Coalesce(Sum("entries__amount_micros", filter=Q(entries__account_id=held)), 0),
        charged_micros=Coalesce(Sum("entries__amount_micros", filter=Q(entries__account__id__startswith=revenue)), 0),
    )


def key_spend_current(*, api_key_ids: list[int], at: datetime) -> dict[tuple[int, str], tuple[datetime, int]]:
    """The spend counters of these keys whose window contains `at`: (key id, window kind) → (start, spent)."""
    rows = KeySpend.objects.filter(api_key_id__in=api_key_ids, window_start__lte=at, window_end__gt=at)
    return {
        (row.api_key_id, row.window_kind): (row.window_start, row.spent_micros)
        for row in rows.only("api_key_id", "window_kind", "window_start", "spent_micros")
    }
