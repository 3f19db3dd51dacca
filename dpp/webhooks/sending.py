"""One attempt of one delivery (SPEC §10): claimed, signed, POSTed, recorded.

The attempt is claimed by a CAS on the delivery's attempt count (two senders of one delivery never both start the
same attempt: the loser does nothing); the claim also pushes ``next_attempt_at`` past the attempt's own deadline,
so a sender that dies mid-send leaves a delivery that becomes overdue and is re-driven (at-least-once, the same
``webhook-id``). The outcome is recorded by a CAS on the attempt it claimed. No transaction is held while sending.
"""

from __future__ import annotations

import json
import logging
import random
from datetime import datetime, timedelta
from typing import Any

from django.db.models import F
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from dpp.http.outbound import OutboundError, Outgoing, request
from dpp.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from dpp.webhooks.outbox import publish_delivery
from dpp.webhooks.policy import ATTEMPT_TIMEOUT_S, RESPONSE_CAP_BYTES, Deadline, outbound_policy

logger = logging.getLogger("dpp.webhooks")

# Seconds to wait after the n-th failed attempt (SPEC §10): 8 attempts in all, then the delivery is failed.
RETRY_SCHEDULE_S = (5, 300, 1_800, 7_200, 18_000, 36_000, 36_000)
JITTER = 0.10
# Retries this close are published with a countdown; later ones are sent when the reaper finds them due (a
# broker holds a delayed message 15 min at most on SQS, and a worker would hold an ETA task in memory for hours).
COUNTDOWN_MAX_S = 900
# How long a claimed attempt may take before its delivery counts as overdue (its sender died).
ATTEMPT_LEASE = timedelta(seconds=ATTEMPT_TIMEOUT_S + 5)
DISABLE_AFTER = timedelta(days=5)
_PENDING = WebhookDelivery.Status.PENDING


def webhook_delivery_attempt(*, delivery_id: int) -> str:
    """Make the delivery's next attempt if it is due; what happened, for the log."""
    delivery = WebhookDelivery.objects.select_related("event", "endpoint").filter(pk=delivery_id).first()
    now = timezone.now()
    if delivery is None or delivery.status != _PENDING:
        return "not pending"
    if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
        return "not due"
    if delivery.attempts >= delivery.max_attempts or delivery.endpoint.status != WebhookEndpoint.Status.ENABLED:
        why = "its last attempt never reported" if delivery.attempts else "the endpoint is disabled"
        _record(delivery, now, status_code=None, error=why, final=True)
        return "failed"
    if not _claim(delivery, now):
        return "taken"
    status_code, error = _send(delivery.event, delivery.endpoint)
    return _outcome(delivery, status_code, error)


def _claim(delivery: WebhookDelivery, now: datetime) -> bool:
    claimed = WebhookDelivery.objects.filter(
        pk=delivery.pk, status=_PENDING, attempts=delivery.attempts, next_attempt_at__lte=now
    ).update(attempts=F("attempts") + 1, next_attempt_at=now + ATTEMPT_LEASE, last_attempt_at=now)
    delivery.attempts += claimed
    return claimed == 1


def _outcome(delivery: WebhookDelivery, status_code: int | None, error: str) -> str:
    now = timezone.now()
    if error:
        final = delivery.attempts >= delivery.max_attempts
        delay = None if final else retry_delay_s(delivery.attempts)
        if _record(delivery, now, status_code=status_code, error=error, final=final, delay_s=delay):
            _endpoint_failed(delivery.endpoint_id, now)
            if delay is not None and delay <= COUNTDOWN_MAX_S:
                publish_delivery(delivery.pk, countdown=delay)
        logger.info(
            "webhook %s to %s: attempt %s failed: %s", delivery.event_id, delivery.endpoint_id, delivery.attempts, error
        )
        return "failed" if final else "retry"
    recovered = delivery.endpoint.failing_since is not None  # as loaded with the delivery: no query when not failing
    if _record(delivery, now, status_code=status_code, error="", final=True) and recovered:
        WebhookEndpoint.objects.filter(pk=delivery.endpoint_id, failing_since__isnull=False).update(failing_since=None)
    return "delivered"


def retry_delay_s(attempts: int) -> float:
    """The wait after the ``attempts``-th failure, with ±10 % jitter (so retries of one outage spread out)."""
    base = RETRY_SCHEDULE_S[min(attempts, len(RETRY_SCHEDULE_S)) - 1]
    return base * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 - jitter, not a secret


def _record(
    delivery: WebhookDelivery,
    now: datetime,
    *,
    status_code: int | None,
    error: str,
    final: bool,
    delay_s: float | None = None,
) -> bool:
    """CAS the attempt's outcome onto the delivery, only if it is still at the attempt this sender claimed."""
    changes: dict[str, Any] = {"last_status_code": status_code, "last_error": error[:500]}
    if not error:
        changes |= {"status": WebhookDelivery.Status.DELIVERED, "delivered_at": now, "next_attempt_at": None}
    elif final:
        changes |= {"status": WebhookDelivery.Status.FAILED, "next_attempt_at": None}
    else:
        changes["next_attempt_at"] = now + timedelta(seconds=delay_s or 0)
    rows = WebhookDelivery.objects.filter(pk=delivery.pk, status=_PENDING, attempts=delivery.attempts)
    return rows.update(**changes) == 1


def _endpoint_failed(endpoint_id: str, now: datetime) -> None:
    """Remember since when the endpoint fails; after 5 days of nothing but failures, disable it."""
    WebhookEndpoint.objects.filter(pk=endpoint_id, failing_since__isnull=True).update(failing_since=now)
    disabled = WebhookEndpoint.objects.filter(
        pk=endpoint_id, status=WebhookEndpoint.Status.ENABLED, failing_since__lte=now - DISABLE_AFTER
    ).update(status=WebhookEndpoint.Status.DISABLED, updated_at=now)
    if disabled:
        logger.warning("webhook endpoint %s disabled: every delivery failed for 5 days", endpoint_id)


def event_body(event: WebhookEvent) -> bytes:
    """The body of every attempt of the event: `{"type", "timestamp", "data"}`, compact JSON."""
    body = {"type": event.type, "timestamp": _rfc3339(event.created_at), "data": event.payload}
    return json.dumps(body, separators=(",", ":")).encode()


def signed_headers(event: WebhookEvent, endpoint: WebhookEndpoint, body: bytes, now: datetime) -> dict[str, str]:
    """Standard Webhooks headers: one `v1,<sig>` per active secret (the previous one too, 24 h after a rotation)."""
    keys = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > now:
        keys.append(endpoint.previous_secret)
    return {
        "webhook-id": event.pk,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(Webhook(key).sign(event.pk, now, body) for key in keys),
        "content-type": "application/json",
        "user-agent": "DPP-webhooks/1.0",
        "connection": "close",
    }


def _send(event: WebhookEvent, endpoint: WebhookEndpoint) -> tuple[int | None, str]:
    """POST the event to the endpoint, its URL checked again (DNS can change): (status, error or "")."""
    body = event_body(event)
    headers = signed_headers(event, endpoint, body, timezone.now())
    outgoing = Outgoing(method="POST", headers=headers, body=body, cap=RESPONSE_CAP_BYTES)
    try:
        response = request(endpoint.url, outgoing, policy=outbound_policy(), budget=Deadline())
    except OutboundError as exc:
        return None, f"{exc.reason_code}: {exc.detail}"
    if 200 <= response.status < 300:
        return response.status, ""
    return response.status, f"HTTP {response.status}"


def _rfc3339(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
