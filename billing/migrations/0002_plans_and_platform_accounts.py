"""The two plans of SPEC §4.2 and the platform accounts REVENUE and FUNDING."""

from django.db import migrations

from billing.bootstrap import ensure_platform_rows


def create(apps, schema_editor):
    ensure_platform_rows(apps.get_model("billing", "Plan"), apps.get_model("billing", "Account"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
