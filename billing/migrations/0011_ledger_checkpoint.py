"""The checkpoint of the incremental ledger audit (billing.audit_incremental): its watermarks, and per account the
sums of its entries and open reservations up to the newest one. Both tables start empty: the first incremental
audit reads the whole ledger and writes the first checkpoint."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0010_platform_account_shards"),
    ]

    operations = [
        migrations.CreateModel(
            name="AccountCheckpoint",
            fields=[
                (
                    "account",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="checkpoint",
                        serialize=False,
                        to="billing.account",
                    ),
                ),
                ("entries_micros", models.BigIntegerField(default=0)),
                ("open_reservations", models.BigIntegerField(default=0)),
                ("open_micros", models.BigIntegerField(default=0)),
            ],
        ),
        migrations.CreateModel(
            name="AuditCheckpoint",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("watermark", models.BigIntegerField()),
                ("entry_watermark", models.BigIntegerField()),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("transactions_checked", models.BigIntegerField(default=0)),
            ],
            options={
                "ordering": ("-id",),
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("entry_watermark__gte", 0), ("watermark__gte", 0)),
                        name="billing_checkpoint_watermark",
                    )
                ],
            },
        ),
    ]
