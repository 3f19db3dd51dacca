"""Celery tasks of the dpp app: thin, by id, with a stable explicit name, on the webhooks' own queue."""

from __future__ import annotations

from celery import shared_task

from dpp.webhooks.outbox import DELIVER_TASK
from dpp.webhooks.sending import webhook_delivery_attempt


@shared_task(name=DELIVER_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def deliver_webhook(delivery_id: int) -> str:
    """One attempt of one delivery. Safe to deliver twice: the attempt is claimed by a compare-and-set."""
    return webhook_delivery_attempt(delivery_id=delivery_id)
