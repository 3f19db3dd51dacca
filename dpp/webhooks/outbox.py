"""The outbox of events: rows written in the caller's transaction, sent after it commits."""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dpp.models import WebhookDelivery, WebhookEndpoint, WebhookEvent

logger = logging.getLogger("dpp.webhooks")

EVENT_TYPES = ("run.completed", "run.failed", "run.canceled", "run.expired", "balance.low")
DELIVER_TASK = "dpp.webhooks.deliver"
# A delivery due longer than this without an attempt lost its task (a crash between commit and send, a broker
# that did not take it): the reaper re-drives it.
REDRIVE_AFTER = timedelta(seconds=15)


def subscribed_endpoint_ids(*, tenant_id: str, event_type: str) -> list[str]:
    """The tenant's enabled endpoints that want ``event_type`` (at most 10: filtered here, on every database)."""
    rows = WebhookEndpoint.objects.filter(tenant_id=tenant_id, status=WebhookEndpoint.Status.ENABLED)
    return [pk for pk, events in rows.values_list("id", "events") if event_type in events]


def webhook_event_record(
    *, tenant_id: str, event_type: str, data: Mapping[str, Any] | Callable[[], Mapping[str, Any]]
) -> WebhookEvent | None:
    """Write the event and one pending delivery per subscribed endpoint in the caller's transaction, and publish
    their sending once it commits. None (nothing written) when no endpoint wants it. ``data`` may be a callable,
    so that a tenant without endpoints pays one query, not the building of the data."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    endpoint_ids = subscribed_endpoint_ids(tenant_id=tenant_id, event_type=event_type)
    if not endpoint_ids:
        return None
    now = timezone.now()
    payload = dict(data() if callable(data) else data)
    event = WebhookEvent.objects.create(
        id=new_event_id(), tenant_id=tenant_id, type=event_type, payload=payload, created_at=now
    )
    deliveries = WebhookDelivery.objects.bulk_create(
        [WebhookDelivery(event=event, endpoint_id=pk, next_attempt_at=now, created_at=now) for pk in endpoint_ids]
    )
    publish_on_commit([delivery.pk for delivery in deliveries])
    return event


def new_event_id() -> str:
    return f"evt_{secrets.token_urlsafe(18)}"


def publish_on_commit(delivery_ids: list[int]) -> None:
    transaction.on_commit(functools.partial(_publish_all, delivery_ids))


def _publish_all(delivery_ids: list[int]) -> None:
    for delivery_id in delivery_ids:
        publish_delivery(delivery_id)


def publish_delivery(delivery_id: int, *, countdown: float | None = None) -> bool:
    """Send the deliver task to the webhooks' queue; True if the broker took it. Never raises: a lost task is
    re-driven by the reaper once the delivery is overdue."""
    try:
        current_app.send_task(
            DELIVER_TASK,
            args=[delivery_id],
            queue=settings.DPP_WEBHOOK_QUEUE,
            countdown=countdown,
            ignore_result=True,
            declare=[],
            add_to_parent=False,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        )
    except Exception:
        logger.exception("could not publish webhook delivery %s; the reaper will re-drive it", delivery_id)
        return False
    return True


def deliveries_redrive(*, limit: int = 200) -> int:
    """Publish again every pending delivery overdue by REDRIVE_AFTER (its task was lost, or its sender died),
    at most ``limit`` per call. Each is pushed forward by a CAS first, so two reapers publish it once; the
    sender's own CAS keeps a duplicate from sending twice."""
    now = timezone.now()
    due = WebhookDelivery.objects.filter(
        status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now - REDRIVE_AFTER
    ).order_by("next_attempt_at")
    redriven = 0
    for pk, next_at in due.values_list("id", "next_attempt_at")[:limit]:
        pushed = WebhookDelivery.objects.filter(pk=pk, status=WebhookDelivery.Status.PENDING, next_attempt_at=next_at)
        if pushed.update(next_attempt_at=now) == 1:
            publish_delivery(pk)
            redriven += 1
    return redriven
