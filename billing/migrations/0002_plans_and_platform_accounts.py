"""The two plans of SPEC §4.2 and the platform accounts REVENUE and FUNDING."""

from django.db import migrations

USD = 1_000_000

PLANS = [
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


def create(apps, schema_editor):
    Plan = apps.get_model("billing", "Plan")
    Account = apps.get_model("billing", "Account")
    for plan in PLANS:
        Plan.objects.update_or_create(code=plan["code"], defaults=plan)
    for kind in ("REVENUE", "FUNDING"):
        Account.objects.get_or_create(id=f"@{kind.lower()}", defaults={"kind": kind, "tenant": None})


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
