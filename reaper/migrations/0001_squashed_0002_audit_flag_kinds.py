"""The reaper's table in one migration: 0001–0002 squashed (docs/decisions.md, "Migrations squashed")."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    replaces = [
        ("reaper", "0001_audit_flags"),
        ("reaper", "0002_audit_flag_kinds"),
    ]

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="AuditFlag",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("TERMINAL_WITHOUT_SETTLE", "terminal run without SETTLE"),
                            ("SETTLE_WITHOUT_TERMINAL", "SETTLE without a terminal run"),
                            ("HELD_MISMATCH", "held balance ≠ open reservations"),
                            ("RESERVE_MISMATCH", "run without its RESERVE, or a different amount"),
                            ("ACTION_FAILED", "a reaper action on the run failed"),
                            ("LEDGER_AUDIT", "the scheduled ledger audit found violations"),
                        ],
                        max_length=32,
                    ),
                ),
                (
                    "subject",
                    models.CharField(help_text="The run id or tenant id the finding is about.", max_length=100),
                ),
                ("tenant_id", models.CharField(blank=True, max_length=64)),
                ("run_id", models.UUIDField(blank=True, null=True)),
                ("detail", models.TextField()),
                ("trace_id", models.CharField(blank=True, max_length=64)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("resolved_at", models.DateTimeField(blank=True, null=True)),
                ("resolved_by", models.CharField(blank=True, max_length=150)),
                ("resolution_note", models.TextField(blank=True)),
            ],
            options={
                "ordering": ("-created_at",),
                "permissions": [("reconcile", "Can run a reconcile pass")],
                "indexes": [
                    models.Index(
                        condition=models.Q(("resolved_at__isnull", True)), fields=["created_at"], name="reaper_open"
                    )
                ],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("resolved_at__isnull", True)),
                        fields=("kind", "subject"),
                        name="reaper_one_open_flag",
                    )
                ],
            },
        ),
    ]
