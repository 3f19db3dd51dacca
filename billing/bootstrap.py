"""The rows every installation has: the plans of SPEC §4.2 and the shard accounts of REVENUE and FUNDING.

Written by a data migration (with historical models) and re-asserted by the test suite after a flushed
transactional test, through this one function.
"""

from __future__ import annotations

from typing import Any

USD = 1_000_000

PLANS: list[dict[str, Any]] = [
    {
        "code": "starter",
        "name": "Starter",
        "pack_max_cost_micros": {"decision": 1 * USD, "url": 1 * USD},
        "submits_per_min": 60,
        "reads_per_min": 300,
        "max_concurrent_runs": 10,
    },
    {
        "code": "unlimited",
        "name": "Unlimited",
        "pack_max_cost_micros": {"decision": 10_000 * USD, "url": 10_000 * USD, "diagnostic": 10_000 * USD},
        "submits_per_min": 100_000,
        "reads_per_min": 100_000,
        "max_concurrent_runs": 1_000,
    },
]

PLATFORM_KINDS = ("REVENUE", "FUNDING")
PLATFORM_SHARDS = 16  # billing.models.PLATFORM_SHARDS (not imported: migrations call this with historical models)


def ensure_plans(plan_model: Any) -> None:
    for plan in PLANS:
        plan_model.objects.get_or_create(code=plan["code"], defaults=plan)


def ensure_platform_shards(account_model: Any) -> None:
    """Create the shard accounts `@revenue/00` … `@funding/15` if missing; never changes an existing balance."""
    for kind in PLATFORM_KINDS:
        for shard in range(PLATFORM_SHARDS):
            account_model.objects.get_or_create(
                id=f"@{kind.lower()}/{shard:02d}", defaults={"kind": kind, "tenant": None, "shard": shard}
            )


def ensure_platform_rows(plan_model: Any, account_model: Any) -> None:
    """Create the plans and platform accounts if missing; never changes an existing balance."""
    ensure_plans(plan_model)
    ensure_platform_shards(account_model)
