"""The rows every installation has: the plans of SPEC §4.2, the shard accounts of REVENUE and FUNDING, and the
admin's staff groups (SPEC §1).

Written by billing's migrations (with historical models) and re-asserted by the test suite after a flushed
transactional test, through these functions.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.management import create_permissions

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


STAFF_APPS = ("dpp", "billing", "runs", "reaper")
# finance and ops view everything of STAFF_APPS; nobody gets add, change or delete (the admin refuses them anyway).
STAFF_GROUPS: dict[str, list[tuple[str, str]]] = {
    "finance": [("billing", "topup"), ("billing", "adjust")],
    "ops": [("reaper", "reconcile")],
}


def ensure_staff_groups(apps: Any, using: str) -> None:
    """Create the staff groups if missing and grant each every view permission of STAFF_APPS and its own ones.

    Only adds: permissions granted by hand since are kept. Permissions are normally made by a post_migrate signal,
    after every migration; a migration needs them now, so Django's own (idempotent) `create_permissions` runs first.
    """
    for label in STAFF_APPS:
        app_config = apps.get_app_config(label)
        # create_permissions skips an app config without a models module, which a migration's stub never has.
        models_module = getattr(app_config, "models_module", None)
        app_config.models_module = models_module or True
        try:
            create_permissions(app_config, apps=apps, verbosity=0, using=using)
        finally:
            app_config.models_module = models_module
    group_model = apps.get_model("auth", "Group")
    permissions = apps.get_model("auth", "Permission").objects.using(using)
    view_all = list(permissions.filter(content_type__app_label__in=STAFF_APPS, codename__startswith="view_"))
    for name, extra in STAFF_GROUPS.items():
        group, _ = group_model.objects.using(using).get_or_create(name=name)
        specific = [permissions.get(content_type__app_label=app, codename=codename) for app, codename in extra]
        group.permissions.add(*view_all, *specific)
