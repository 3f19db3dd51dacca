"""Revenue and funding in 16 shard accounts each (SPEC §12): no account row that every run must lock.

1. the `shard` column, and one platform account per (kind, shard) instead of one per kind;
2. the shard accounts `@revenue/00` … `@funding/15`, at zero;
3. the one account of each kind from before (`@revenue`, `@funding`): deleted if nothing was ever posted to it
   (a new installation); otherwise kept as it is — its entries are history, append-only, and its balance still
   equals them — and never written again: the platform's revenue is the sum of all its kind's accounts, so no
   invariant of §2.1 is false at any moment, during or after the migration (docs/decisions.md).
"""

from django.db import migrations, models

from billing.bootstrap import PLATFORM_KINDS, ensure_platform_shards


def create_shards(apps, schema_editor):
    account = apps.get_model("billing", "Account")
    entry = apps.get_model("billing", "LedgerEntry")
    ensure_platform_shards(account)
    for kind in PLATFORM_KINDS:
        legacy = f"@{kind.lower()}"
        if not entry.objects.filter(account_id=legacy).exists():
            account.objects.filter(pk=legacy, balance_micros=0).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0009_append_only_triggers_again")]

    operations = [
        migrations.AddField(
            model_name="account",
            name="shard",
            field=models.PositiveSmallIntegerField(blank=True, null=True),
        ),
        migrations.RemoveConstraint(model_name="account", name="billing_one_platform_account_per_kind"),
        migrations.AddConstraint(
            model_name="account",
            constraint=models.UniqueConstraint(
                condition=models.Q(("tenant__isnull", True)),
                fields=("kind", "shard"),
                name="billing_one_platform_account_per_shard",
            ),
        ),
        migrations.AddConstraint(
            model_name="account",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("shard__isnull", True), models.Q(("tenant__isnull", True), ("shard__lt", 16)), _connector="OR"
                ),
                name="billing_shard_of_platform",
            ),
        ),
        migrations.RunPython(create_shards, migrations.RunPython.noop),
    ]
