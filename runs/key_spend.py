"""A key's spend recomputed from its runs (SPEC §8): the truth that the KeySpend counters only cache.

The spend of key K in a window = over the runs submitted by K or by a key below it and accepted in the window,
the reservation of each run still open plus the charge of each run settled. `audit_ledger` compares every counter
with it (`KEY_SPEND_CHECKS`), and `key_spend_rebuild` rewrites counters from it (`manage.py rebuild_key_spend`, and
a PATCH that gives a key a spend limit or another window).
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import Case, F, QuerySet, When

from billing.audit import Check, Row, usd
from billing.models import KeySpend
from dpp.key_limits import window_bounds
from dpp.models import ApiKey
from runs.models import OPEN_STATUSES, Run

_OPEN = ", ".join(f"'{status}'" for status in OPEN_STATUSES)

# Per counter row: what its runs say. The keys below K are a prefix match on the path; `%%` is LIKE's `%` (the
# audit passes parameters).
_COUNTER_VS_RUNS = f"""
SELECT * FROM (
SELECT s.id, k.prefix, s.window_kind, s.window_start, s.spent_micros,
       (SELECT COALESCE(SUM(CASE WHEN r.status IN ({_OPEN}) THEN r.reserved_micros ELSE r.charged_micros END), 0)
          FROM dpp_apikey d
          JOIN runs_run r ON r.api_key_id = d.id
         WHERE d.tenant_id = k.tenant_id AND d.path LIKE k.path || '%%'
           AND r.created_at >= s.window_start AND r.created_at < s.window_end) AS expected
  FROM billing_keyspend s
  JOIN dpp_apikey k ON k.id = s.api_key_id) c
 WHERE c.spent_micros <> c.expected
"""  # noqa: S608 - constants


def _describe_counter(row: Row) -> str:
    _, prefix, kind, start, spent, expected = row
    return (
        f"key {prefix}: its {kind} spend counter from {str(start)[:10]} says {usd(spent)}, but its runs (and those"
        f" of the keys below it) say {usd(expected)}; `manage.py rebuild_key_spend` rewrites it from them"
    )


KEY_SPEND_CHECKS: tuple[Check, ...] = (Check("key_spend_equals_runs", _COUNTER_VS_RUNS, _describe_counter),)


def _subtree_runs(api_key: ApiKey) -> QuerySet[Run]:
    subtree = ApiKey.objects.filter(tenant_id=api_key.tenant_id, path__startswith=api_key.path).values("pk")
    return Run.objects.filter(api_key__in=subtree)


@transaction.atomic
def key_spend_rebuild(*, api_key: ApiKey, since: datetime | None = None) -> int:
    """Rewrite the key's counters from its runs: those of its current window kind from the window containing
    `since` on (all of them without `since`); counters of another kind, or of a key without a spend limit, are
    deleted. Returns the number of counter rows written."""
    # Locking the subtree's key rows waits for the submits in flight below the key (a run's INSERT holds a key
    # share lock on its key) and holds back new ones until commit, so that no run is missed.
    subtree = ApiKey.objects.select_for_update().filter(tenant_id=api_key.tenant_id, path__startswith=api_key.path)
    list(subtree.values_list("pk", flat=True))
    api_key.refresh_from_db()
    counters = KeySpend.objects.filter(api_key=api_key)
    counters.exclude(window_kind=api_key.spend_window if api_key.spend_limit_micros is not None else "").delete()
    if api_key.spend_limit_micros is None:
        return 0
    kind = api_key.spend_window
    runs = _subtree_runs(api_key)
    if since is not None:
        start = window_bounds(kind, since)[0]
        counters = counters.filter(window_start__gte=start)
        runs = runs.filter(created_at__gte=start)
    counters.delete()
    runs.filter(key_spend_counted=False).update(key_spend_counted=True)  # their settles give back from now on
    totals: dict[datetime, tuple[datetime, int]] = {}
    amount = Case(When(status__in=OPEN_STATUSES, then=F("reserved_micros")), default=F("charged_micros"))
    for created_at, spent in runs.annotate(amount=amount).values_list("created_at", "amount").iterator():
        window_start, window_end = window_bounds(kind, created_at)
        totals[window_start] = (window_end, totals.get(window_start, (window_end, 0))[1] + (spent or 0))
    KeySpend.objects.bulk_create(
        KeySpend(api_key=api_key, window_kind=kind, window_start=start, window_end=end, spent_micros=spent)
        for start, (end, spent) in totals.items()
    )
    return len(totals)


def key_spend_rebuild_all(*, tenant_id: str | None = None) -> int:
    """Rebuild the counters of every key that has one or a spend limit (of one tenant, if given)."""
    keys = ApiKey.objects.filter(spend_limit_micros__isnull=False) | ApiKey.objects.filter(
        pk__in=KeySpend.objects.values("api_key_id")
    )
    if tenant_id is not None:
        keys = keys.filter(tenant_id=tenant_id)
    return sum(key_spend_rebuild(api_key=key) for key in keys.distinct().order_by("depth", "pk"))
