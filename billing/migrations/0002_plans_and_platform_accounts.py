"""The two plans of SPEC §4.2 and the platform accounts REVENUE and FUNDING (one each, until 0009 shards them)."""

from django.db import migrations

from billing.bootstrap import PLATFORM_KINDS, ensure_plans


def create(apps, schema_editor):
    ensure_plans(apps.get_model("billing", "Plan"))
    account = apps.get_model("billing", "Account")
    for kind in PLATFORM_KINDS:
        account.objects.get_or_create(id=f"@{kind.lower()}", defaults={"kind": kind, "tenant": None})


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
