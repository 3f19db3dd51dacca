"""The platform's tables in one migration: 0001–0004 squashed (docs/decisions.md, "Migrations squashed")."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    replaces = [
        ("dpp", "0001_initial"),
        ("dpp", "0002_admin_login_failure"),
        ("dpp", "0003_api_key_limits"),
        ("dpp", "0004_webhooks"),
    ]

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="AdminLoginFailure",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("username", models.CharField(max_length=150)),
                ("address", models.CharField(max_length=45)),
                ("failed_at", models.DateTimeField()),
                ("cleared_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "default_permissions": (),
                "indexes": [
                    models.Index(fields=["username", "failed_at"], name="dpp_loginfail_user_at"),
                    models.Index(fields=["address", "failed_at"], name="dpp_loginfail_addr_at"),
                    models.Index(fields=["failed_at"], name="dpp_loginfail_at"),
                ],
            },
        ),
        migrations.CreateModel(
            name="Tenant",
            fields=[
                ("id", models.CharField(max_length=64, primary_key=True, serialize=False)),
                ("name", models.CharField(blank=True, max_length=200)),
                (
                    "status",
                    models.CharField(
                        choices=[("ACTIVE", "Active"), ("SUSPENDED", "Suspended")], default="ACTIVE", max_length=16
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("low_balance_threshold_micros", models.BigIntegerField(default=0)),
                ("low_balance_notified", models.BooleanField(default=False)),
            ],
            options={
                "ordering": ("id",),
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("id__regex", "^[a-z0-9_-]{3,64}$")), name="dpp_tenant_id_slug"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("status__in", ["ACTIVE", "SUSPENDED"])), name="dpp_tenant_status"
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="WebhookEndpoint",
            fields=[
                ("id", models.CharField(max_length=40, primary_key=True, serialize=False)),
                ("url", models.CharField(max_length=2048)),
                ("events", models.JSONField(default=list)),
                ("description", models.CharField(blank=True, max_length=500)),
                (
                    "status",
                    models.CharField(
                        choices=[("enabled", "Enabled"), ("disabled", "Disabled")], default="enabled", max_length=16
                    ),
                ),
                ("secret", models.CharField(max_length=100)),
                ("previous_secret", models.CharField(blank=True, max_length=100)),
                ("previous_secret_expires_at", models.DateTimeField(blank=True, null=True)),
                ("failing_since", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField()),
                ("updated_at", models.DateTimeField()),
                (
                    "tenant",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="webhook_endpoints", to="dpp.tenant"
                    ),
                ),
            ],
            options={
                "ordering": ("-created_at",),
            },
        ),
        migrations.CreateModel(
            name="WebhookEvent",
            fields=[
                ("id", models.CharField(max_length=40, primary_key=True, serialize=False)),
                ("type", models.CharField(max_length=32)),
                ("payload", models.JSONField()),
                ("created_at", models.DateTimeField()),
                (
                    "tenant",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="webhook_events", to="dpp.tenant"
                    ),
                ),
            ],
            options={
                "ordering": ("-created_at",),
            },
        ),
        migrations.CreateModel(
            name="WebhookDelivery",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "status",
                    models.CharField(
                        choices=[("pending", "Pending"), ("delivered", "Delivered"), ("failed", "Failed")],
                        default="pending",
                        max_length=16,
                    ),
                ),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("max_attempts", models.PositiveIntegerField(default=8)),
                ("next_attempt_at", models.DateTimeField(blank=True, null=True)),
                ("last_status_code", models.PositiveIntegerField(blank=True, null=True)),
                ("last_error", models.CharField(blank=True, max_length=500)),
                ("last_attempt_at", models.DateTimeField(blank=True, null=True)),
                ("delivered_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField()),
                (
                    "endpoint",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="deliveries", to="dpp.webhookendpoint"
                    ),
                ),
                (
                    "event",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="deliveries", to="dpp.webhookevent"
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "webhook deliveries",
                "ordering": ("-id",),
            },
        ),
        migrations.CreateModel(
            name="ApiKey",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("depth", models.PositiveSmallIntegerField(default=0)),
                (
                    "path",
                    models.CharField(
                        blank=True, db_index=True, help_text="Ids from the root key to this one.", max_length=100
                    ),
                ),
                ("can_manage_keys", models.BooleanField(default=False)),
                ("expires_at", models.DateTimeField(blank=True, null=True)),
                ("spend_limit_micros", models.BigIntegerField(blank=True, null=True)),
                (
                    "spend_window",
                    models.CharField(
                        blank=True, choices=[("day", "Day"), ("month", "Month"), ("total", "Total")], max_length=8
                    ),
                ),
                ("max_cost_per_run_micros", models.BigIntegerField(blank=True, null=True)),
                (
                    "allowed_packs",
                    models.JSONField(blank=True, help_text="Pack types the key may run; null: the plan's.", null=True),
                ),
                (
                    "prefix",
                    models.CharField(db_index=True, help_text="First 16 characters, kept in clear.", max_length=16),
                ),
                ("key_hash", models.CharField(help_text="HMAC-SHA256 of the key (hex).", max_length=64, unique=True)),
                ("label", models.CharField(blank=True, max_length=100)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("last_used_at", models.DateTimeField(blank=True, null=True)),
                ("revoked_at", models.DateTimeField(blank=True, null=True)),
                (
                    "parent",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="children",
                        to="dpp.apikey",
                    ),
                ),
                (
                    "tenant",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="api_keys", to="dpp.tenant"
                    ),
                ),
            ],
            options={
                "verbose_name": "API key",
                "ordering": ("-created_at",),
                "constraints": [
                    models.CheckConstraint(condition=models.Q(("depth__lte", 3)), name="dpp_apikey_depth"),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("spend_limit_micros__isnull", True), ("spend_window", "")),
                            models.Q(("spend_limit_micros__gte", 0), ("spend_window__in", ["day", "month", "total"])),
                            _connector="OR",
                        ),
                        name="dpp_apikey_spend_limit_has_window",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("max_cost_per_run_micros__isnull", True),
                            ("max_cost_per_run_micros__gt", 0),
                            _connector="OR",
                        ),
                        name="dpp_apikey_max_cost_positive",
                    ),
                ],
            },
        ),
        migrations.AddIndex(
            model_name="webhookendpoint",
            index=models.Index(fields=["tenant", "created_at"], name="dpp_whendpoint_tenant"),
        ),
        migrations.AddConstraint(
            model_name="webhookendpoint",
            constraint=models.CheckConstraint(
                condition=models.Q(("status__in", ["enabled", "disabled"])), name="dpp_whendpoint_status"
            ),
        ),
        migrations.AddIndex(
            model_name="webhookevent",
            index=models.Index(fields=["tenant", "created_at"], name="dpp_whevent_tenant"),
        ),
        migrations.AddIndex(
            model_name="webhookdelivery",
            index=models.Index(fields=["endpoint", "-id"], name="dpp_whdelivery_endpoint"),
        ),
        migrations.AddIndex(
            model_name="webhookdelivery",
            index=models.Index(
                condition=models.Q(("status", "pending")), fields=["next_attempt_at"], name="dpp_whdelivery_due"
            ),
        ),
        migrations.AddConstraint(
            model_name="webhookdelivery",
            constraint=models.UniqueConstraint(fields=("event", "endpoint"), name="dpp_whdelivery_once"),
        ),
        migrations.AddConstraint(
            model_name="webhookdelivery",
            constraint=models.CheckConstraint(
                condition=models.Q(("status__in", ["pending", "delivered", "failed"])), name="dpp_whdelivery_status"
            ),
        ),
    ]
