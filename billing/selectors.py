"""Reads of money: balances, the tenant's plan, the tenant's ledger, the key spend counters."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from billing.models import Account, KeySpend, LedgerEntry, LedgerTransaction, Plan
from dpp.http.errors import ApplicationError
from dpp.key_limits import KeyNode, limited_nodes
from dpp.money import format_usd

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


def key_spend_spent(*, nodes: Sequence[KeyNode], at: datetime) -> dict[int, int]:
    """What each of these keys has committed in its own spend window containing `at`: key id → spent (0 without a
    counter row). No query for no keys."""
    counters = key_spend_current(api_key_ids=[node.id for node in nodes], at=at) if nodes else {}
    return {node.id: counters.get((node.id, node.spend_window), (at, 0))[1] for node in nodes}


def key_spend_remaining(*, key_chain: Sequence[KeyNode], at: datetime) -> int | None:
    """What the chain's spend limits still let its key commit at `at`: the least room over every key of the chain
    that has a spend limit (the tightest is the one that refuses a submit; 0 when one is spent), None when none
    has a spend limit. Read without a lock: a concurrent submit may take the room right after."""
    limited = limited_nodes(tuple(key_chain))
    spent = key_spend_spent(nodes=limited, at=at)
    rooms = [(node.spend_limit_micros or 0) - spent[node.id] for node in limited]
    return max(min(rooms), 0) if rooms else None


def ledger_item(txn: Any) -> dict[str, Any]:
    """One transaction as GET /v1/ledger shows it (a row of ledger_list, with its annotations)."""
    return {
        "transaction_id": txn.pk,
        "kind": txn.kind,
        "run_id": str(txn.run_id) if txn.run_id else None,
        "created_at": txn.created_at,
        "reason": txn.reason or None,
        "available_delta_usd": format_usd(txn.available_delta_micros),
        "held_delta_usd": format_usd(txn.held_delta_micros),
        "charged_usd": format_usd(txn.charged_micros),
    }


# [0-9], not \d: \d also matches other scripts' digits, which int() would accept.
_MONTH_RE = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")


def statement_month_parse(month: str) -> tuple[datetime, datetime]:
    """The UTC bounds [start, end) of a `YYYY-MM` month; anything else is a 422 VALIDATION_ERROR (SPEC §13)."""
    match = _MONTH_RE.fullmatch(month)
    year, number = (int(match[1]), int(match[2])) if match else (0, 1)
    try:  # year 0000 (also what no match gives), or the month after 9999-12
        return datetime(year, number, 1, tzinfo=UTC), datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
    except ValueError:
        raise ApplicationError(
            "VALIDATION_ERROR",
            "The month must be YYYY-MM with a month 01-12.",
            errors=[{"field": "month", "message": "expected YYYY-MM with a month 01-12"}],
        ) from None


def balances_before(*, tenant_id: str, moment: datetime) -> Balances:
    """The tenant's available and held balances as of `moment`: the sum of its accounts' entries of transactions
    created before it (one query; the tenant filter lets it use billing_txn_tenant_id, not every transaction)."""
    available = Account.tenant_account_id(tenant_id, AccountKind.AVAILABLE)
    held = Account.tenant_account_id(tenant_id, AccountKind.HELD)
    totals = dict(
        LedgerEntry.objects.filter(
            transaction__tenant_id=tenant_id, transaction__created_at__lt=moment, account_id__in=[available, held]
        )
        .values("account_id")
        .annotate(total=Sum("amount_micros"))
        .values_list("account_id", "total")
    )
    return Balances(available_micros=totals.get(available, 0), held_micros=totals.get(held, 0))


def statement_get(*, tenant_id: str, month: str) -> dict[str, Any]:
    """The tenant's statement of a UTC calendar month (SPEC §13), as the API, `manage.py statement` and the admin
    show it. Closing = opening + the month's lines, so each month's opening is the previous month's closing and
    opening + top-ups - charges + adjustments = closing available + closing held - opening held, to the micro. For
    the current month the lines stop at now (no transaction is created in the future)."""
    start, end = statement_month_parse(month)
    opening = balances_before(tenant_id=tenant_id, moment=start)
    rows: list[Any] = list(  # annotated by ledger_list
        ledger_list(tenant_id=tenant_id).filter(created_at__gte=start, created_at__lt=end).order_by("pk")
    )
    available, held = opening.available_micros, opening.held_micros
    totals = dict.fromkeys(LedgerTransaction.Kind.values, 0)  # by kind: what it moved into the tenant's accounts
    lines = []
    for txn in rows:
        available += txn.available_delta_micros
        held += txn.held_delta_micros
        totals[txn.kind] += txn.available_delta_micros + txn.held_delta_micros
        lines.append({**ledger_item(txn), "available_usd": format_usd(available)})
    return {
        "tenant_id": tenant_id,
        "month": month,
        "opening_available_usd": format_usd(opening.available_micros),
        "opening_held_usd": format_usd(opening.held_micros),
        "topups_usd": format_usd(totals[LedgerTransaction.Kind.TOPUP]),
        # A SETTLE takes the charge out of the tenant's accounts (held -> revenue); the rest goes back to available.
        "charges_usd": format_usd(-totals[LedgerTransaction.Kind.SETTLE]),
        "adjustments_usd": format_usd(totals[LedgerTransaction.Kind.ADJUSTMENT]),
        "closing_available_usd": format_usd(available),
        "closing_held_usd": format_usd(held),
        "runs": sum(1 for line in lines if line["kind"] == LedgerTransaction.Kind.RESERVE),
        "lines": lines,
    }
