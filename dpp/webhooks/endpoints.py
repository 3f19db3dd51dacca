"""A tenant's webhook endpoints (SPEC §10): registration with the URL checked, changes, secrets, redelivery."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from dpp.http.errors import ApplicationError
from dpp.http.outbound import OutboundError, destinations_check
from dpp.http.outbound.target import InvalidUrlError, parse_target
from dpp.models import ApiKey, Tenant, WebhookDelivery, WebhookEndpoint, WebhookEvent
from dpp.webhooks.outbox import EVENT_TYPES, publish_on_commit, subscribed_endpoint_ids
from dpp.webhooks.policy import Deadline, outbound_policy

MAX_ENDPOINTS = 10
SECRET_BYTES = 32
ROTATION_OVERLAP = timedelta(hours=24)
MAX_URL_CHARS = 2048
MAX_DESCRIPTION_CHARS = 500


@dataclass(frozen=True)
class IssuedEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once: in the answer to the create or the rotation


def webhook_manager_require(api_key: ApiKey) -> None:
    """403 FORBIDDEN unless the key has no parent: webhook endpoints belong to the tenant, and only a key without
    a parent manages them (SPEC §8) — every endpoint operation and the redelivery, whatever the id named."""
    if api_key.parent_id is not None:
        raise ApplicationError(
            "FORBIDDEN",
            "Webhook endpoints belong to the tenant: only an API key without a parent (such as the tenant's first "
            "key) may list, register, change, rotate, delete them or redeliver their events; this key has a parent.",
        )


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def webhook_endpoint_create(*, tenant: Tenant, url: Any, events: Any, description: Any = "") -> IssuedEndpoint:
    """A new enabled endpoint with a new secret; at most 10 per tenant (counted under the tenant's row lock)."""
    fields = _checked_fields({"url": url, "events": events, "description": description or ""})
    now = timezone.now()
    with transaction.atomic():
        Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
        if WebhookEndpoint.objects.filter(tenant=tenant).count() >= MAX_ENDPOINTS:
            raise _invalid("url", f"at most {MAX_ENDPOINTS} webhook endpoints per tenant; delete one first")
        endpoint = WebhookEndpoint.objects.create(
            id=f"ep_{secrets.token_hex(12)}",
            tenant=tenant,
            secret=new_secret(),
            created_at=now,
            updated_at=now,
            **fields,
        )
    return IssuedEndpoint(endpoint, endpoint.secret)


def webhook_endpoint_update(*, tenant: Tenant, endpoint_id: str, changes: dict[str, Any]) -> WebhookEndpoint:
    """PATCH: `url`, `events`, `description`, `status` (a re-enabled endpoint starts counting failures anew)."""
    unknown = sorted(set(changes) - {"url", "events", "description", "status"})
    if unknown:
        raise _invalid(unknown[0], "cannot be changed")
    if "status" in changes and changes["status"] not in WebhookEndpoint.Status.values:
        raise _invalid("status", "must be enabled or disabled")
    fields = _checked_fields({name: value for name, value in changes.items() if name != "status"})
    endpoint = webhook_endpoint_get(tenant=tenant, endpoint_id=endpoint_id)
    if "status" in changes:
        fields |= {"status": changes["status"], "failing_since": None}
    for name, value in fields.items():
        setattr(endpoint, name, value)
    endpoint.updated_at = timezone.now()
    endpoint.save(update_fields=[*fields, "updated_at"])
    return endpoint


def webhook_endpoint_delete(*, tenant: Tenant, endpoint_id: str) -> None:
    webhook_endpoint_get(tenant=tenant, endpoint_id=endpoint_id).delete()


def webhook_endpoint_rotate_secret(*, tenant: Tenant, endpoint_id: str) -> IssuedEndpoint:
    """A new secret; the one it replaces keeps signing too for 24 h, so receivers can switch without a gap."""
    now = timezone.now()
    with transaction.atomic():
        endpoint = webhook_endpoint_get(tenant=tenant, endpoint_id=endpoint_id, for_update=True)
        endpoint.previous_secret, endpoint.secret = endpoint.secret, new_secret()
        endpoint.previous_secret_expires_at = now + ROTATION_OVERLAP
        endpoint.updated_at = now
        endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at", "updated_at"])
    return IssuedEndpoint(endpoint, endpoint.secret)


def webhook_endpoint_get(*, tenant: Tenant, endpoint_id: str, for_update: bool = False) -> WebhookEndpoint:
    """The tenant's endpoint; another tenant's is a 404, the same as one that does not exist."""
    rows = WebhookEndpoint.objects.select_for_update() if for_update else WebhookEndpoint.objects
    endpoint = rows.filter(tenant=tenant, pk=endpoint_id).first()
    if endpoint is None:
        raise ApplicationError("NOT_FOUND", "There is no such webhook endpoint.")
    return endpoint


def webhook_event_redeliver(*, tenant: Tenant, event_id: str) -> int:
    """One more attempt, now, to every endpoint subscribed to the event (a delivery is made for one subscribed
    since); the number of deliveries queued."""
    event = WebhookEvent.objects.filter(tenant=tenant, pk=event_id).first()
    if event is None:
        raise ApplicationError("NOT_FOUND", "There is no such event.")
    now = timezone.now()
    with transaction.atomic():
        for endpoint_id in subscribed_endpoint_ids(tenant_id=tenant.pk, event_type=event.type):
            WebhookDelivery.objects.get_or_create(
                event=event, endpoint_id=endpoint_id, defaults={"next_attempt_at": now, "created_at": now}
            )
        deliveries = list(WebhookDelivery.objects.select_for_update().filter(event=event))
        for delivery in deliveries:
            delivery.status, delivery.next_attempt_at = WebhookDelivery.Status.PENDING, now
            delivery.max_attempts = max(delivery.max_attempts, delivery.attempts + 1)
            delivery.save(update_fields=["status", "next_attempt_at", "max_attempts"])
        publish_on_commit([delivery.pk for delivery in deliveries])
    return len(deliveries)


def _checked_fields(fields: dict[str, Any]) -> dict[str, Any]:
    if "events" in fields:
        events = fields["events"]
        if not isinstance(events, list) or not events or any(e not in EVENT_TYPES for e in events):
            raise _invalid("events", f"a non-empty list of: {', '.join(EVENT_TYPES)}")
        fields["events"] = list(dict.fromkeys(events))
    description = fields.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS or "\x00" in description:
        raise _invalid("description", f"a string of at most {MAX_DESCRIPTION_CHARS} characters")
    if "url" in fields:
        webhook_url_check(fields["url"])
    return fields


def webhook_url_check(url: Any) -> None:
    """SPEC §10 at registration: https (http only when allowed), and EVERY address of the host allowed, else
    422 WEBHOOK_URL_BLOCKED; a URL that is no URL or whose host does not resolve is a VALIDATION_ERROR."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise _invalid("url", f"an https URL of at most {MAX_URL_CHARS} characters")
    policy = outbound_policy()
    try:
        parse_target(url, allow_http=policy.allow_http)
        destinations_check(url, policy=policy, budget=Deadline())
    except InvalidUrlError as exc:
        code = "WEBHOOK_URL_BLOCKED" if "https only" in str(exc) else "VALIDATION_ERROR"
        raise _invalid("url", str(exc), code=code) from None
    except OutboundError as exc:
        code = "WEBHOOK_URL_BLOCKED" if exc.reason_code == "URL_BLOCKED" else "VALIDATION_ERROR"
        raise _invalid("url", exc.detail, code=code) from None


def _invalid(field: str, message: str, *, code: str = "VALIDATION_ERROR") -> ApplicationError:
    return ApplicationError(code, f"{field}: {message}", errors=[{"field": field, "message": message}])
