"""The admin's staff groups (SPEC §1), `finance` and `ops`, each with every view permission of dpp, billing, runs and
reaper, and its own: finance tops up and adjusts, ops reconciles. On a database migrated before the squash, this
also grants the views of the models added after its groups were made (they lacked runs.view_closedday, for one)."""

from django.db import migrations

from billing.bootstrap import STAFF_GROUPS, ensure_staff_groups


def create_groups(apps, schema_editor):
    ensure_staff_groups(apps, schema_editor.connection.alias)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.using(schema_editor.connection.alias).filter(name__in=STAFF_GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("billing", "0001_squashed_0013_account_checkpoint_fillfactor"),
        ("dpp", "0001_squashed_0004_webhooks"),
        ("runs", "0001_squashed_0007_closed_day"),
        ("reaper", "0001_squashed_0002_audit_flag_kinds"),
    ]
    operations = [migrations.RunPython(create_groups, remove_groups)]
