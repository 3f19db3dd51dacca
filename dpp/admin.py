"""The admin's view of webhooks (SPEC §10): endpoints, events and their attempts, read-only for everyone (the API
is where a tenant changes its endpoints). An endpoint's secrets are never shown."""

from __future__ import annotations

from django.contrib import admin

from dpp.admin_tools import ReadOnlyModelAdmin, ReadOnlyTabularInline
from dpp.models import WebhookDelivery, WebhookEndpoint, WebhookEvent

DELIVERY_FIELDS = (
    "event",
    "endpoint",
    "status",
    "attempts",
    "max_attempts",
    "last_status_code",
    "last_error",
    "last_attempt_at",
    "next_attempt_at",
    "delivered_at",
    "created_at",
)


class DeliveryInline(ReadOnlyTabularInline):
    model = WebhookDelivery
    fields = DELIVERY_FIELDS
    readonly_fields = DELIVERY_FIELDS


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "tenant", "url", "status", "failing_since", "created_at")
    list_filter = ("status",)
    search_fields = ("=id", "=tenant__id")
    search_help_text = "An endpoint id or a tenant id, exactly."
    fields = ("id", "tenant", "url", "events", "description", "status", "failing_since", "created_at", "updated_at")
    readonly_fields = fields


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "tenant", "type", "created_at")
    list_filter = ("type",)
    search_fields = ("=id", "=tenant__id")
    search_help_text = "An event id (evt_…) or a tenant id, exactly."
    fields = ("id", "tenant", "type", "payload", "created_at")
    readonly_fields = fields
    inlines = (DeliveryInline,)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "event", "endpoint", "status", "attempts", "last_status_code", "next_attempt_at")
    list_filter = ("status",)
    search_fields = ("=event__id", "=endpoint__id")
    search_help_text = "An event id or an endpoint id, exactly."
    fields = ("id", *DELIVERY_FIELDS)
    readonly_fields = fields
    list_select_related = ("event", "endpoint")
