"""Agent keys as the /v1/keys API manages them (SPEC §8): the caller's tree, its writes, and each key's object.

A key sees and manages only itself and the keys below it (any other prefix → 404); only a key that may manage
keys writes (else 403 KEY_CANNOT_MANAGE_KEYS). The rules of the limits are dpp.services'; this module adds what
needs the plan (packs ⊆ the plan's) and the runs (a new spend limit or window rebuilds the key's counters).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from billing.models import Plan
from billing.selectors import key_spend_current
from dpp import key_limits, services
from dpp.http.errors import ApplicationError
from dpp.key_limits import KeyNode
from dpp.models import ApiKey
from dpp.money import format_usd
from runs.key_spend import key_spend_rebuild


def keys_visible(*, caller: ApiKey) -> QuerySet[ApiKey]:
    """The caller and every key below it."""
    return ApiKey.objects.filter(tenant_id=caller.tenant_id, path__startswith=caller.path).select_related("parent")


def key_get(*, caller: ApiKey, key_prefix: str) -> ApiKey:
    """The caller's own key or one below it with this prefix; 404 for any other."""
    found = keys_visible(caller=caller).filter(prefix=key_prefix).order_by("revoked_at", "-pk").first()
    if found is None:
        raise ApplicationError("NOT_FOUND", f"There is no key {key_prefix[:16]!r} at or below yours.")
    return found


def require_manager(caller: ApiKey) -> None:
    if not caller.can_manage_keys:
        raise ApplicationError("KEY_CANNOT_MANAGE_KEYS")


def _check_packs(limits: services.KeyLimits, plan: Plan) -> None:
    outside = plan.packs_outside(limits.allowed_packs)
    if outside:
        message = f"{', '.join(outside)} not in plan {plan.code!r}"
        raise ApplicationError(
            "VALIDATION_ERROR",
            f"limits.allowed_packs: {message}",
            errors=[{"field": "limits.allowed_packs", "message": message}],
        )


def key_create(
    *, caller: ApiKey, plan: Plan, label: str, limits: services.KeyLimits, can_manage_keys: bool
) -> services.IssuedKey:
    """A new key below the caller, within the caller's limits (and the plan's packs)."""
    require_manager(caller)
    _check_packs(limits, plan)
    parent = ApiKey.objects.get(pk=caller.pk)  # as stored now, not as authentication read it
    environment = "test" if parent.prefix.startswith("dpp_test_") else "live"
    return services.api_key_issue(
        tenant=parent.tenant,
        label=label,
        environment=environment,
        parent=parent,
        limits=limits,
        can_manage_keys=can_manage_keys,
    )


@transaction.atomic
def key_update(
    *, caller: ApiKey, plan: Plan, key_prefix: str, label: str | None, limits: dict[str, Any] | None
) -> ApiKey:
    """PATCH: the label and the limits given (a member set to null clears it), with the rules of creation."""
    require_manager(caller)
    api_key = key_get(caller=caller, key_prefix=key_prefix)
    before = services.KeyLimits.of(api_key)
    merged = services.limits_merge(before, **limits) if limits is not None else None
    if merged is not None:
        _check_packs(merged, plan)
    api_key = services.api_key_update(api_key=api_key, label=label, limits=merged)
    if merged is not None and (before.spend_window, before.spend_limit_micros is None) != (
        merged.spend_window,
        merged.spend_limit_micros is None,
    ):
        # A spend limit the key did not have, or another window: count this window's runs from the runs.
        key_spend_rebuild(api_key=api_key, since=timezone.now())
    return api_key


def key_revoke(*, caller: ApiKey, key_prefix: str) -> ApiKey:
    """Revoke the key and every key below it (a revoked key answers 200 again, its first revocation kept)."""
    require_manager(caller)
    api_key = key_get(caller=caller, key_prefix=key_prefix)
    services.api_key_revoke_by_id(api_key=api_key, actor=f"api:{caller.prefix}")
    return api_key


# --- the key object (SPEC §8) ------------------------------------------------------------------------------


def _usd(micros: int | None) -> str | None:
    return None if micros is None else format_usd(micros)


def _instant(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _spend(chain: tuple[KeyNode, ...], counters: dict[tuple[int, str], tuple[datetime, int]], now: datetime) -> Any:
    node = key_limits.nearest_limited(chain)
    if node is None or node.spend_limit_micros is None:
        return None
    start, spent = counters.get((node.id, node.spend_window), (key_limits.window_bounds(node.spend_window, now)[0], 0))
    # The total window has no calendar start: it began when its key was created.
    shown_start = node.created_at if node.spend_window == "total" else start
    return {
        "window": node.spend_window,
        "window_start": _instant(shown_start),
        "spent_usd": format_usd(spent),
        "remaining_usd": format_usd(max(node.spend_limit_micros - spent, 0)),
    }


def key_objects(*, keys: Iterable[ApiKey]) -> list[dict[str, Any]]:
    """The objects of these keys (one query for the keys above them, one for the spend counters)."""
    keys = list(keys)
    ids = {int(part) for key in keys for part in key.path.split("/") if part}
    nodes = {key.pk: services.api_key_node(key) for key in ApiKey.objects.filter(pk__in=ids)}
    now = timezone.now()
    counters = key_spend_current(api_key_ids=list(nodes), at=now)
    result = []
    for key in keys:
        chain = tuple(nodes[int(part)] for part in key.path.split("/") if part)
        result.append(_key_object(key, _spend(chain, counters, now)))
    return result


def _key_object(key: ApiKey, spend: Any) -> dict[str, Any]:
    return {
        "key_prefix": key.prefix,
        "label": key.label,
        "parent_prefix": key.parent.prefix if key.parent is not None else None,
        "can_manage_keys": bool(key.can_manage_keys),
        "created_at": _instant(key.created_at),
        "expires_at": _instant(key.expires_at),
        "revoked_at": _instant(key.revoked_at),
        "last_used_at": _instant(key.last_used_at),
        "limits": {
            "spend_limit_usd": _usd(key.spend_limit_micros),
            "spend_window": key.spend_window or None,
            "max_cost_per_run_usd": _usd(key.max_cost_per_run_micros),
            "allowed_packs": None if key.allowed_packs is None else list(key.allowed_packs),
        },
        "spend": spend,
    }
