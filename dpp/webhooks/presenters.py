"""How endpoints and deliveries look on the wire (SPEC §10). An endpoint's secret only when just issued."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dpp.models import WebhookDelivery, WebhookEndpoint

_PENDING = WebhookDelivery.Status.PENDING


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def endpoint_object(endpoint: WebhookEndpoint, *, secret: str | None = None) -> dict[str, Any]:
    body = {
        "id": endpoint.pk,
        "url": endpoint.url,
        "events": endpoint.events,
        "description": endpoint.description,
        "status": endpoint.status,
        "created_at": _iso(endpoint.created_at),
    }
    return body | {"secret": secret} if secret is not None else body


def delivery_object(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "event_id": delivery.event_id,
        "event_type": delivery.event.type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error or None,
        "next_attempt_at": _iso(delivery.next_attempt_at)
        if delivery.status == WebhookDelivery.Status.PENDING
        else None,
        "delivered_at": _iso(delivery.delivered_at),
    }
