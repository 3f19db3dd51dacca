"""The ledger's tables in one migration: 0001–0013 squashed (docs/decisions.md, "Migrations squashed"), then the rows
and rules every installation has: the plans, the platform shard accounts, the ledger's triggers (SPEC §2.1) and
the fill factor of the incremental audit's checkpoint."""

import django.db.models.deletion
import django.db.models.functions.math
import django.db.models.lookups
import django.utils.timezone
from django.db import migrations, models

from billing import bootstrap, sql

CHECKPOINT_FILLFACTOR = 50  # every checkpoint row is updated at most once per audit: room for its next version


def install(apps, schema_editor):
    bootstrap.ensure_platform_rows(apps.get_model("billing", "Plan"), apps.get_model("billing", "Account"))
    sql.ledger_triggers_ensure(schema_editor)
    sql.checkpoint_fillfactor(schema_editor, percent=CHECKPOINT_FILLFACTOR)


def uninstall(apps, schema_editor):
    sql.ledger_triggers_drop(schema_editor)


class Migration(migrations.Migration):
    initial = True

    replaces = [
        ("billing", "0001_initial"),
        ("billing", "0002_plans_and_platform_accounts"),
        ("billing", "0003_ledger_triggers"),
        ("billing", "0004_ledger_permissions"),
        ("billing", "0005_staff_groups"),
        ("billing", "0006_open_reservations"),
        ("billing", "0007_drop_redundant_indexes"),
        ("billing", "0008_manual_once_per_form"),
        ("billing", "0009_append_only_triggers_again"),
        ("billing", "0010_platform_account_shards"),
        ("billing", "0011_ledger_checkpoint"),
        ("billing", "0012_key_spend"),
        ("billing", "0013_account_checkpoint_fillfactor"),
    ]

    dependencies = [
        ("dpp", "0001_squashed_0004_webhooks"),
    ]

    operations = [
        migrations.CreateModel(
            name="Account",
            fields=[
                ("id", models.CharField(max_length=80, primary_key=True, serialize=False)),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("AVAILABLE", "Available"),
                            ("HELD", "Held"),
                            ("REVENUE", "Revenue"),
                            ("FUNDING", "Funding"),
                        ],
                        max_length=16,
                    ),
                ),
                ("balance_micros", models.BigIntegerField(default=0)),
                ("open_reservations", models.PositiveIntegerField(default=0)),
                ("shard", models.PositiveSmallIntegerField(blank=True, null=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "tenant",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="accounts",
                        to="dpp.tenant",
                    ),
                ),
            ],
            options={
                "ordering": ("id",),
            },
        ),
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
        migrations.CreateModel(
            name="KeySpend",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("window_kind", models.CharField(max_length=8)),
                ("window_start", models.DateTimeField()),
                ("window_end", models.DateTimeField()),
                ("spent_micros", models.BigIntegerField(default=0)),
                (
                    "api_key",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="spend_windows",
                        to="dpp.apikey",
                    ),
                ),
            ],
            options={
                "verbose_name": "key spend window",
                "ordering": ("api_key", "-window_start"),
            },
        ),
        migrations.CreateModel(
            name="LedgerTransaction",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("TOPUP", "Topup"),
                            ("RESERVE", "Reserve"),
                            ("SETTLE", "Settle"),
                            ("ADJUSTMENT", "Adjustment"),
                        ],
                        max_length=16,
                    ),
                ),
                ("run_id", models.UUIDField(blank=True, null=True)),
                ("actor", models.CharField(blank=True, max_length=150)),
                ("reason", models.TextField(blank=True)),
                ("trace_id", models.CharField(blank=True, max_length=64)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "tenant",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="ledger_transactions",
                        to="dpp.tenant",
                    ),
                ),
            ],
            options={
                "ordering": ("-id",),
                "permissions": [("topup", "Can top up tenant credit"), ("adjust", "Can make a manual adjustment")],
            },
        ),
        migrations.CreateModel(
            name="LedgerEntry",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("amount_micros", models.BigIntegerField()),
                (
                    "account",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="entries",
                        to="billing.account",
                    ),
                ),
                (
                    "transaction",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="entries",
                        to="billing.ledgertransaction",
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "ledger entries",
                "ordering": ("id",),
            },
        ),
        migrations.CreateModel(
            name="Plan",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("code", models.SlugField(max_length=32, unique=True)),
                ("name", models.CharField(max_length=100)),
                ("pack_max_cost_micros", models.JSONField(default=dict)),
                ("submits_per_min", models.PositiveIntegerField()),
                ("reads_per_min", models.PositiveIntegerField()),
                ("max_concurrent_runs", models.PositiveIntegerField()),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "ordering": ("code",),
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("submits_per_min__gt", 0)), name="billing_plan_submits_positive"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("reads_per_min__gt", 0)), name="billing_plan_reads_positive"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("max_concurrent_runs__gt", 0)), name="billing_plan_concurrency_positive"
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="TenantPlan",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("started_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("ended_at", models.DateTimeField(blank=True, null=True)),
                ("actor", models.CharField(max_length=150)),
                ("reason", models.TextField(blank=True)),
                (
                    "plan",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="tenant_plans", to="billing.plan"
                    ),
                ),
                (
                    "tenant",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="plan_history", to="dpp.tenant"
                    ),
                ),
            ],
            options={
                "ordering": ("-started_at",),
            },
        ),
        migrations.AddConstraint(
            model_name="account",
            constraint=models.UniqueConstraint(
                condition=models.Q(("tenant__isnull", False)),
                fields=("tenant", "kind"),
                name="billing_one_account_per_kind",
            ),
        ),
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
        migrations.AddConstraint(
            model_name="account",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("tenant__isnull", False), ("kind__in", ["AVAILABLE", "HELD"])),
                    models.Q(("tenant__isnull", True), ("kind__in", ["REVENUE", "FUNDING"])),
                    _connector="OR",
                ),
                name="billing_account_kind_owner",
            ),
        ),
        migrations.AddConstraint(
            model_name="account",
            constraint=models.CheckConstraint(
                condition=models.Q(("tenant__isnull", True), ("balance_micros__gte", 0), _connector="OR"),
                name="billing_tenant_balance_nonneg",
            ),
        ),
        migrations.AddConstraint(
            model_name="account",
            constraint=models.CheckConstraint(
                condition=django.db.models.lookups.Exact(django.db.models.functions.math.Mod("balance_micros", 100), 0),
                name="billing_balance_granule",
            ),
        ),
        migrations.AddConstraint(
            model_name="account",
            constraint=models.CheckConstraint(
                condition=models.Q(("kind", "HELD"), ("open_reservations", 0), _connector="OR"),
                name="billing_open_reservations_on_held",
            ),
        ),
        migrations.AddConstraint(
            model_name="keyspend",
            constraint=models.UniqueConstraint(
                fields=("api_key", "window_kind", "window_start"), name="billing_keyspend_window"
            ),
        ),
        migrations.AddConstraint(
            model_name="keyspend",
            constraint=models.CheckConstraint(
                condition=models.Q(("window_end__gt", models.F("window_start"))), name="billing_keyspend_range"
            ),
        ),
        migrations.AddIndex(
            model_name="ledgertransaction",
            index=models.Index(fields=["tenant", "-id"], name="billing_txn_tenant_id"),
        ),
        migrations.AddIndex(
            model_name="ledgertransaction",
            index=models.Index(fields=["created_at"], name="billing_txn_created"),
        ),
        migrations.AddIndex(
            model_name="ledgertransaction",
            index=models.Index(fields=["kind", "created_at"], name="billing_txn_kind_created"),
        ),
        migrations.AddConstraint(
            model_name="ledgertransaction",
            constraint=models.UniqueConstraint(
                condition=models.Q(("kind__in", ["RESERVE", "SETTLE"])),
                fields=("run_id", "kind"),
                name="billing_once_per_run",
            ),
        ),
        migrations.AddConstraint(
            model_name="ledgertransaction",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("kind__in", ["RESERVE", "SETTLE"]), ("run_id__isnull", False)),
                    models.Q(("kind__in", ["TOPUP", "ADJUSTMENT"]), ("run_id__isnull", True)),
                    _connector="OR",
                ),
                name="billing_run_kinds_have_run",
            ),
        ),
        migrations.AddConstraint(
            model_name="ledgertransaction",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("kind__in", ["RESERVE", "SETTLE"]),
                    models.Q(models.Q(("actor", ""), _negated=True), models.Q(("reason", ""), _negated=True)),
                    _connector="OR",
                ),
                name="billing_manual_has_actor_and_reason",
            ),
        ),
        migrations.AddConstraint(
            model_name="ledgertransaction",
            constraint=models.UniqueConstraint(
                condition=models.Q(("kind__in", ["TOPUP", "ADJUSTMENT"]), models.Q(("trace_id", ""), _negated=True)),
                fields=("trace_id",),
                name="billing_manual_once_per_form",
            ),
        ),
        migrations.AddIndex(
            model_name="ledgerentry",
            index=models.Index(fields=["account"], name="billing_entry_account"),
        ),
        migrations.AddConstraint(
            model_name="ledgerentry",
            constraint=models.CheckConstraint(
                condition=models.Q(("amount_micros", 0), _negated=True), name="billing_entry_nonzero"
            ),
        ),
        migrations.AddConstraint(
            model_name="ledgerentry",
            constraint=models.CheckConstraint(
                condition=django.db.models.lookups.Exact(django.db.models.functions.math.Mod("amount_micros", 100), 0),
                name="billing_entry_granule",
            ),
        ),
        migrations.AddConstraint(
            model_name="tenantplan",
            constraint=models.UniqueConstraint(
                condition=models.Q(("ended_at__isnull", True)),
                fields=("tenant",),
                name="billing_one_open_plan_per_tenant",
            ),
        ),
        migrations.AddConstraint(
            model_name="tenantplan",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("ended_at__isnull", True), ("ended_at__gte", models.F("started_at")), _connector="OR"
                ),
                name="billing_plan_period",
            ),
        ),
        migrations.RunPython(install, uninstall),
    ]
