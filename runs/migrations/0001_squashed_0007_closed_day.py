"""The runs' tables in one migration: 0001–0007 squashed (docs/decisions.md, "Migrations squashed")."""

import uuid

import django.db.models.deletion
import django.db.models.functions.comparison
import django.db.models.functions.math
import django.db.models.lookups
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    replaces = [
        ("runs", "0001_initial"),
        ("runs", "0002_idempotency_key_index"),
        ("runs", "0003_drop_redundant_indexes"),
        ("runs", "0004_redrive_count"),
        ("runs", "0005_run_api_key"),
        ("runs", "0006_money_sort_indexes"),
        ("runs", "0007_closed_day"),
    ]

    dependencies = [
        ("dpp", "0001_squashed_0004_webhooks"),
    ]

    operations = [
        migrations.CreateModel(
            name="ClosedDay",
            fields=[
                ("day", models.DateField(primary_key=True, serialize=False)),
                ("runs", models.BigIntegerField(help_text="Runs accepted that day (by created_at).")),
                (
                    "revenue_micros",
                    models.BigIntegerField(help_text="Charges of the runs that ended that day (by completed_at)."),
                ),
                ("computed_at", models.DateTimeField()),
            ],
        ),
        migrations.CreateModel(
            name="Run",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("key_spend_counted", models.BooleanField(default=False)),
                ("pack_type", models.CharField(max_length=32)),
                ("profile_version", models.CharField(max_length=32)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("QUEUED", "Queued"),
                            ("PROCESSING", "Processing"),
                            ("COMPLETED", "Completed"),
                            ("FAILED", "Failed"),
                            ("CANCELED", "Canceled"),
                            ("EXPIRED", "Expired"),
                        ],
                        default="QUEUED",
                        max_length=16,
                    ),
                ),
                (
                    "money_state",
                    models.CharField(
                        choices=[("RESERVED", "Reserved"), ("SETTLED", "Settled"), ("REFUNDED", "Refunded")],
                        default="RESERVED",
                        max_length=16,
                    ),
                ),
                (
                    "finalize_stage",
                    models.CharField(
                        blank=True,
                        choices=[("CLAIMED", "Claimed"), ("COMMITTED", "Committed")],
                        max_length=16,
                        null=True,
                    ),
                ),
                ("version", models.PositiveIntegerField(default=0)),
                ("idempotency_key", models.CharField(max_length=64)),
                (
                    "request_hash",
                    models.CharField(help_text="SHA-256 of the canonical request payload.", max_length=64),
                ),
                ("inputs", models.JSONField()),
                ("timebox_sec", models.PositiveSmallIntegerField()),
                ("trace_id", models.CharField(max_length=64)),
                ("reserved_micros", models.BigIntegerField()),
                ("minimum_fee_micros", models.BigIntegerField()),
                ("charged_micros", models.BigIntegerField(blank=True, null=True)),
                ("lease_token", models.UUIDField(blank=True, null=True)),
                ("lease_expires_at", models.DateTimeField(blank=True, null=True)),
                ("finalize_token", models.UUIDField(blank=True, null=True)),
                ("cancel_requested_at", models.DateTimeField(blank=True, null=True)),
                (
                    "published_at",
                    models.DateTimeField(blank=True, help_text="Last time its task was published.", null=True),
                ),
                (
                    "redrive_count",
                    models.SmallIntegerField(db_default=0, default=0, help_text="Times the reaper re-published it."),
                ),
                ("reason_code", models.CharField(blank=True, max_length=32)),
                ("error_detail", models.TextField(blank=True)),
                ("result_key", models.CharField(blank=True, max_length=300)),
                ("result_sha256", models.CharField(blank=True, max_length=64)),
                ("result_bytes", models.PositiveIntegerField(blank=True, null=True)),
                ("created_at", models.DateTimeField()),
                ("updated_at", models.DateTimeField()),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("claimed_at", models.DateTimeField(blank=True, null=True)),
                ("completed_at", models.DateTimeField(blank=True, null=True)),
                (
                    "api_key",
                    models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="runs",
                        to="dpp.apikey",
                    ),
                ),
                (
                    "tenant",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="runs",
                        to="dpp.tenant",
                    ),
                ),
            ],
            options={
                "ordering": ("-created_at", "-id"),
                "indexes": [
                    models.Index(fields=["tenant", "-created_at", "-id"], name="runs_tenant_created"),
                    models.Index(fields=["tenant", "status", "-created_at"], name="runs_tenant_status_created"),
                    models.Index(fields=["api_key", "-created_at", "-id"], name="runs_api_key_created"),
                    models.Index(fields=["tenant", "pack_type", "-created_at"], name="runs_tenant_pack_created"),
                    models.Index(
                        fields=["-created_at", "-id"],
                        include=("reserved_micros", "charged_micros"),
                        name="runs_created_money",
                    ),
                    models.Index(fields=["trace_id"], name="runs_trace"),
                    models.Index(fields=["idempotency_key"], name="runs_idempotency_key"),
                    models.Index(condition=models.Q(("status", "QUEUED")), fields=["created_at"], name="runs_queued"),
                    models.Index(
                        condition=models.Q(("finalize_stage__isnull", True), ("status", "PROCESSING")),
                        fields=["lease_expires_at"],
                        name="runs_leased",
                    ),
                    models.Index(
                        condition=models.Q(("finalize_stage", "CLAIMED")), fields=["claimed_at"], name="runs_claimed"
                    ),
                    models.Index(
                        condition=models.Q(("status__in", ["QUEUED", "PROCESSING"])),
                        fields=["tenant"],
                        name="runs_open_by_tenant",
                    ),
                    models.Index(fields=["completed_at"], name="runs_completed"),
                    models.Index(
                        django.db.models.functions.comparison.Coalesce(
                            "charged_micros", models.Value(-1, output_field=models.BigIntegerField())
                        ),
                        models.F("created_at"),
                        models.F("id"),
                        name="runs_charged",
                    ),
                    models.Index(fields=["reserved_micros", "created_at", "id"], name="runs_reserved"),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("tenant", "idempotency_key"), name="runs_one_run_per_idempotency_key"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("reserved_micros__gt", 0)), name="runs_reserved_positive"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("minimum_fee_micros__gte", 0), ("minimum_fee_micros__lte", models.F("reserved_micros"))
                        ),
                        name="runs_min_fee_within_reservation",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("charged_micros__isnull", True),
                            models.Q(("charged_micros__gte", 0), ("charged_micros__lte", models.F("reserved_micros"))),
                            _connector="OR",
                        ),
                        name="runs_charge_within_reservation",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            django.db.models.lookups.Exact(
                                django.db.models.functions.math.Mod("reserved_micros", 100), 0
                            ),
                            django.db.models.lookups.Exact(
                                django.db.models.functions.math.Mod("minimum_fee_micros", 100), 0
                            ),
                        ),
                        name="runs_amounts_granule",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(
                                ("charged_micros__isnull", True),
                                ("money_state", "RESERVED"),
                                ("status__in", ["QUEUED", "PROCESSING"]),
                                models.Q(
                                    ("finalize_stage__isnull", True), ("finalize_stage", "CLAIMED"), _connector="OR"
                                ),
                            ),
                            models.Q(
                                ("finalize_stage", "COMMITTED"),
                                ("status__in", ["COMPLETED", "FAILED", "CANCELED", "EXPIRED"]),
                                models.Q(
                                    models.Q(("charged_micros__gt", 0), ("money_state", "SETTLED")),
                                    models.Q(("charged_micros", 0), ("money_state", "REFUNDED")),
                                    _connector="OR",
                                ),
                            ),
                            _connector="OR",
                        ),
                        name="runs_states_agree",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("status", "QUEUED"), _negated=True),
                            models.Q(("finalize_stage__isnull", True), ("lease_token__isnull", True)),
                            _connector="OR",
                        ),
                        name="runs_queued_not_leased",
                    ),
                ],
            },
        ),
    ]
