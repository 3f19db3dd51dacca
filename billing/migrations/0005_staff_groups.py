"""The two staff groups of the admin (SPEC §1): `finance` and `ops`.

- finance: view everything of dpp, billing, runs and reaper; top up (`billing.topup`); adjust (`billing.adjust`).
- ops: view everything; run a reconcile pass and resolve audit flags (`reaper.reconcile`).
Nobody gets add, change or delete on the ledger: the admin refuses them anyway, superusers included.

Permissions are created by a post_migrate signal, i.e. after every migration has run; this migration needs them
now, so it creates them itself (Django's own `create_permissions`, idempotent) before filling the groups.
Rerunning it only adds what is missing: permissions granted by hand since are kept.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

APPS = ("dpp", "billing", "runs", "reaper")
GROUPS = {
    "finance": [("billing", "topup"), ("billing", "adjust")],
    "ops": [("reaper", "reconcile")],
}


def create_groups(apps, schema_editor):
    alias = schema_editor.connection.alias
    for label in APPS:
        app_config = apps.get_app_config(label)
        # create_permissions skips an app config without a models module, which a migration's stub never has.
        models_module = getattr(app_config, "models_module", None)
        app_config.models_module = models_module or True
        try:
            create_permissions(app_config, apps=apps, verbosity=0, using=alias)
        finally:
            app_config.models_module = models_module

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view_all = list(
        Permission.objects.using(alias).filter(content_type__app_label__in=APPS, codename__startswith="view_")
    )
    for name, extra in GROUPS.items():
        group, _ = Group.objects.using(alias).get_or_create(name=name)
        specific = [
            Permission.objects.using(alias).get(content_type__app_label=app_label, codename=codename)
            for app_label, codename in extra
        ]
        group.permissions.add(*view_all, *specific)


def remove_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.using(schema_editor.connection.alias).filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("dpp", "0001_initial"),
        ("billing", "0004_ledger_permissions"),
        ("runs", "0001_initial"),
        ("reaper", "0001_audit_flags"),
    ]
    operations = [migrations.RunPython(create_groups, remove_groups)]
