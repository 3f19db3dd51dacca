"""Webhooks with a real Celery worker (its own queue) and a real local receiver: a run's end is delivered after
its commit; a delivery whose task was lost (a crash between the commit and the send) is re-driven by the reaper
with the same webhook-id."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import pytest
from django.conf import settings
from standardwebhooks.webhooks import Webhook

from dpp.models import WebhookDelivery
from dpp.webhooks.outbox import REDRIVE_AFTER
from reaper.services import reconcile_once
from tests.dpp.webhook_receiver import Receiver
from tests.e2e.harness import E2E, purge_queues
from tests.helpers.personas import make_persona
from tests.helpers.states import completed_run
from tests.processes import celery_worker, process_env, wait_until

pytestmark = [*E2E]


def worker_env() -> dict[str, str]:
    """A worker of this run's webhooks queue only (its runs queue is another: the test's own helpers make the
    runs' states), allowed to reach the loopback receiver."""
    env = process_env(DPP_URL_ALLOW_HTTP="1", DPP_URL_EXTRA_ALLOWED_NETWORKS="127.0.0.1/32")
    env["DPP_WEBHOOK_QUEUE"] = settings.DPP_WEBHOOK_QUEUE
    env["DPP_TASK_QUEUE"] = f"{settings.DPP_TASK_QUEUE}-elsewhere"
    return env


@pytest.fixture(autouse=True)
def local_receivers(settings: Any) -> None:
    settings.DPP_URL_ALLOW_HTTP = True
    settings.DPP_URL_EXTRA_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.1/32"),)


def _endpoint(persona: Any, receiver: Receiver) -> dict[str, Any]:
    response = persona.client.post(
        "/v1/webhook-endpoints", {"url": receiver.url(), "events": ["run.completed"]}, format="json"
    )
    assert response.status_code == 201
    return response.json()


def test_a_worker_delivers_a_runs_end_after_its_commit() -> None:
    purge_queues()
    receiver = Receiver()
    try:
        persona = make_persona(plan="unlimited")
        endpoint = _endpoint(persona, receiver)
        with celery_worker(worker_env(), concurrency=1, name="webhooks"):
            run = completed_run(persona, cost_micros=11_000)
            wait_until(lambda: receiver.received, timeout=20, what="the delivery")
            wait_until(lambda: WebhookDelivery.objects.get().status == "delivered", timeout=10, what="delivered")
    finally:
        receiver.close()
    [got] = receiver.received
    payload = Webhook(endpoint["secret"]).verify(got.body, got.headers)
    assert payload["data"]["run_id"] == str(run.pk)
    assert payload["data"]["status"] == "COMPLETED"


def test_a_delivery_lost_between_commit_and_send_is_re_driven_by_the_reaper_with_its_webhook_id() -> None:
    purge_queues()
    receiver = Receiver()
    try:
        persona = make_persona(plan="unlimited")
        endpoint = _endpoint(persona, receiver)
        completed_run(persona, cost_micros=11_000)  # committed and published, with no worker up
        purge_queues()  # ...and the task lost: the process that held it died between the commit and the send
        delivery = WebhookDelivery.objects.get()
        assert delivery.attempts == 0
        with celery_worker(worker_env(), concurrency=1, name="webhooks-redrive"):
            assert reconcile_once().webhooks_redriven == 0  # not overdue yet: its task may still be on the way
            time.sleep(REDRIVE_AFTER.total_seconds() + 0.5)  # real time: the worker's clock must agree
            assert reconcile_once().webhooks_redriven == 1
            wait_until(lambda: receiver.received, timeout=20, what="the re-driven delivery")
            wait_until(lambda: WebhookDelivery.objects.get().status == "delivered", timeout=10, what="delivered")
    finally:
        receiver.close()
    [got] = receiver.received
    assert got.headers["webhook-id"] == delivery.event_id
    Webhook(endpoint["secret"]).verify(got.body, got.headers)
    assert WebhookDelivery.objects.get().attempts == 1
