"""Tenants and their API keys (SPEC §4 "Auth").

Invariants:
- a tenant id is a slug of 3-64 chars of [a-z0-9_-] (CHECK constraint);
- an API key is never stored: only its HMAC-SHA256 under DPP_API_KEY_PEPPER (unique) and its first 16
  characters in clear, to recognise it in the admin and to revoke it;
- a revoked key stays revoked (revocation is a timestamp; nothing clears it), and revoking a key revokes every
  key below it in the same transaction (dpp.services.api_key_revoke_tree);
- keys form a tree per tenant (SPEC §8): `parent` is the key that created it, `depth` 0 for a key without a parent,
  at most MAX_KEY_DEPTH; `path` lists the ids from the root to the key itself ("12/40/41/"), so that "this key and
  every key below it" is one prefix match. Both are written once, when the key is created;
- a key's limits are each optional; a child's may not exceed its parent's (dpp.services checks it when they are
  set). Spend limits are counted in billing (KeySpend), never here.
Webhooks (SPEC §10): endpoints, events and deliveries are the outbox of events, written in the transaction of
the state change they announce (dpp.webhooks).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class Tenant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "ACTIVE"
        SUSPENDED = "SUSPENDED"

    id = models.CharField(primary_key=True, max_length=64)
    name = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    # balance.low (SPEC §10): sent once when available falls below the threshold (0: off); `low_balance_notified`
    # is the crossing's memory, set by the CAS that records the event and cleared when available is back above.
    low_balance_threshold_micros = models.BigIntegerField(default=0)
    low_balance_notified = models.BooleanField(default=False)

    class Meta:
        ordering = ("id",)
        constraints = [
            models.CheckConstraint(condition=Q(id__regex=r"^[a-z0-9_-]{3,64}$"), name="dpp_tenant_id_slug"),
            models.CheckConstraint(condition=Q(status__in=["ACTIVE", "SUSPENDED"]), name="dpp_tenant_status"),
        ]

    def __str__(self) -> str:
        return self.id

    # DRF puts the tenant in request.user; permission and throttle code asks this of a user.
    is_authenticated = True

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


MAX_KEY_DEPTH = 3  # levels below the tenant's first key (SPEC §8)


class SpendWindow(models.TextChoices):
    DAY = "day"
    MONTH = "month"
    TOTAL = "total"


class ApiKey(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="api_keys")
    parent = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="children")
    depth = models.PositiveSmallIntegerField(default=0)
    path = models.CharField(max_length=100, blank=True, db_index=True, help_text="Ids from the root key to this one.")
    can_manage_keys = models.BooleanField(default=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    spend_limit_micros = models.BigIntegerField(null=True, blank=True)
    spend_window = models.CharField(max_length=8, choices=SpendWindow.choices, blank=True)
    max_cost_per_run_micros = models.BigIntegerField(null=True, blank=True)
    allowed_packs = models.JSONField(null=True, blank=True, help_text="Pack types the key may run; null: the plan's.")
    prefix = models.CharField(max_length=16, db_index=True, help_text="First 16 characters, kept in clear.")
    key_hash = models.CharField(max_length=64, unique=True, help_text="HMAC-SHA256 of the key (hex).")
    label = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(condition=Q(depth__lte=MAX_KEY_DEPTH), name="dpp_apikey_depth"),
            models.CheckConstraint(
                condition=Q(spend_limit_micros__isnull=True, spend_window="")
                | Q(spend_limit_micros__gte=0, spend_window__in=SpendWindow.values),
                name="dpp_apikey_spend_limit_has_window",
            ),
            models.CheckConstraint(
                condition=Q(max_cost_per_run_micros__isnull=True) | Q(max_cost_per_run_micros__gt=0),
                name="dpp_apikey_max_cost_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.tenant_id})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class AdminLoginFailure(models.Model):
    """One failed admin login (dpp.admin_login): the user name as typed and the client's address.

    The rows are the memory of the throttle, kept a day; the log says the same for longer. `cleared_at` is set by
    `unlock_login`: a cleared failure no longer counts, and the row stays as a record of it.
    """

    username = models.CharField(max_length=150)
    address = models.CharField(max_length=45)  # an IPv6 address in text is at most 45 characters
    failed_at = models.DateTimeField()
    cleared_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        default_permissions = ()  # not in the admin: read by dpp.admin_login and cleared by unlock_login only
        indexes = [
            models.Index(fields=["username", "failed_at"], name="dpp_loginfail_user_at"),
            models.Index(fields=["address", "failed_at"], name="dpp_loginfail_addr_at"),
            models.Index(fields=["failed_at"], name="dpp_loginfail_at"),
        ]

    def __str__(self) -> str:
        return f"{self.username} from {self.address} at {self.failed_at:%Y-%m-%d %H:%M:%S}"


class WebhookEndpoint(models.Model):
    """A tenant's receiver of events. The signing secrets are HMAC keys: they must be recoverable to sign, so they
    are stored as issued (`whsec_…`), like the pepper they are secrets of the database; never shown after issue.
    After a rotation the previous secret signs too until `previous_secret_expires_at` (24 h)."""

    class Status(models.TextChoices):
        ENABLED = "enabled"
        DISABLED = "disabled"

    id = models.CharField(primary_key=True, max_length=40)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="webhook_endpoints")
    url = models.CharField(max_length=2048)
    events = models.JSONField(default=list)
    description = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ENABLED)
    secret = models.CharField(max_length=100)
    previous_secret = models.CharField(max_length=100, blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    # Since when every attempt has failed (None: the last attempt succeeded); 5 days of it disables the endpoint.
    failing_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["tenant", "created_at"], name="dpp_whendpoint_tenant")]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["enabled", "disabled"]), name="dpp_whendpoint_status"),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.tenant_id}) {self.url}"


class WebhookEvent(models.Model):
    """One event (`evt_…`, the `webhook-id` of every attempt): its type and the `data` it carries, as it was in the
    transaction that wrote it."""

    id = models.CharField(primary_key=True, max_length=40)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="webhook_events")
    type = models.CharField(max_length=32)
    payload = models.JSONField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["tenant", "created_at"], name="dpp_whevent_tenant")]

    def __str__(self) -> str:
        return f"{self.id} {self.type} ({self.tenant_id})"


class WebhookDelivery(models.Model):
    """One event to one endpoint. `attempts` counts attempts started (each claimed by a CAS on it); while pending,
    `next_attempt_at` is when the next may start (during an attempt: when it is overdue, i.e. its sender died)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=8)  # a redelivery allows one more
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ("-id",)
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["endpoint", "-id"], name="dpp_whdelivery_endpoint"),
            # The reaper's work list: only pending rows, so a pass costs what it acts on, not history.
            models.Index(fields=["next_attempt_at"], name="dpp_whdelivery_due", condition=Q(status="pending")),
        ]
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="dpp_whdelivery_once"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "delivered", "failed"]), name="dpp_whdelivery_status"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} -> {self.endpoint_id} ({self.status})"
