"""Webhooks with a real Celery worker (its own queue) and a real local receiver: a run's end is delivered after
its commit; a delivery whose task was lost (a crash between the commit and the send) is re-driven by the reaper
with the same webhook-id."""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.conf import settings
from standardwebhooks.webhooks import Webhook

from dpp.models import WebhookDelivery
from dpp.webhooks.outbox import REDRIVE_AFTER
from reaper.services import reconcile_once
from tests.dpp.webhook_receiver import Receiver
from tests.e2e.harness import E2E, purge_queues, redis_stack
from tests.helpers.personas import make_persona
from tests.helpers.states import completed_run
from tests.processes import celery_worker, process_env, procfile_process, wait_until

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


@contextlib.contextmanager
def _subscribed(*, hang_s: float = 0) -> Iterator[tuple[Receiver, Any, dict[str, Any]]]:
    """Purged queues, a local receiver (closed after) and an `unlimited` tenant with an endpoint on it for
    run.completed: (receiver, persona, endpoint)."""
    purge_queues()
    receiver = Receiver(hang_s=hang_s)
    try:
        persona = make_persona(plan="unlimited")
        response = persona.client.post(
            "/v1/webhook-endpoints", {"url": receiver.url(), "events": ["run.completed"]}, format="json"
        )
        assert response.status_code == 201
        yield receiver, persona, response.json()
    finally:
        receiver.close()


def test_a_worker_delivers_a_runs_end_after_its_commit() -> None:
    with _subscribed() as (receiver, persona, endpoint), celery_worker(worker_env(), concurrency=1, name="webhooks"):
        run = completed_run(persona, cost_micros=11_000)
        wait_until(lambda: receiver.received, timeout=20, what="the delivery")
        wait_until(lambda: WebhookDelivery.objects.get().status == "delivered", timeout=10, what="delivered")
    [got] = receiver.received
    payload = Webhook(endpoint["secret"]).verify(got.body, got.headers)
    assert payload["data"]["run_id"] == str(run.pk)
    assert payload["data"]["status"] == "COMPLETED"


def test_a_delivery_lost_between_commit_and_send_is_re_driven_by_the_reaper_with_its_webhook_id() -> None:
    with _subscribed() as (receiver, persona, endpoint):
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
    [got] = receiver.received
    assert got.headers["webhook-id"] == delivery.event_id
    Webhook(endpoint["secret"]).verify(got.body, got.headers)
    assert WebhookDelivery.objects.get().attempts == 1


def test_a_worker_killed_mid_send_leaves_a_delivery_that_arrives_again_with_its_webhook_id() -> None:
    """The sender dies (SIGKILL, its whole process group) while the receiver holds the request unanswered: the
    claimed attempt is never recorded, so once its lease and the re-drive delay have passed the reaper publishes
    the delivery again and another worker sends it — the same webhook-id, signed anew, delivered at last."""
    # The receiver takes the request, then answers nothing while the worker is alive.
    with _subscribed(hang_s=120) as (receiver, persona, endpoint):
        with celery_worker(worker_env(), concurrency=1, name="webhooks-killed") as worker:
            run = completed_run(persona, cost_micros=11_000)
            wait_until(lambda: receiver.received, timeout=20, what="the first attempt reaching the receiver")
            worker.kill()  # mid-send: the POST is out, its answer never comes
            wait_until(lambda: not worker.alive(), timeout=10, what="the killed worker gone")
        killed = WebhookDelivery.objects.get()
        assert (killed.status, killed.attempts, killed.delivered_at) == ("pending", 1, None)  # claimed, not recorded
        receiver.hang_s = 0  # the receiver answers from now on
        with celery_worker(worker_env(), concurrency=1, name="webhooks-after-kill"):
            # Real time: the claim's lease (10 s bound + 5 s) and then the re-drive delay (15 s) must pass.
            wait_until(lambda: reconcile_once().webhooks_redriven == 1, timeout=60, interval=1, what="the re-drive")
            wait_until(lambda: len(receiver.received) == 2, timeout=20, what="the second attempt")
            wait_until(lambda: WebhookDelivery.objects.get().status == "delivered", timeout=10, what="delivered")
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == killed.event_id
    for got in (first, second):
        payload = Webhook(endpoint["secret"]).verify(got.body, got.headers)
        assert payload["data"]["run_id"] == str(run.pk)
    assert WebhookDelivery.objects.get().attempts == 2
    run.refresh_from_db()
    assert (run.status, run.money_state) == ("COMPLETED", "SETTLED")  # the run's end is untouched by the crash


def test_a_receiver_that_hangs_holds_no_run_and_no_api_thread() -> None:
    """The production layout (the Procfile's `worker` for runs, `webhooks` for deliveries, gunicorn) with a receiver
    that takes every request and never answers: with more deliveries hanging on it than the two workers have slots
    together, runs submitted then still complete and the API answers (a delivery sent from a runs slot would leave
    none); each hanging attempt fails at the 10 s bound and is scheduled again."""
    receiver = Receiver(hang_s=120)
    try:
        allowed = {"DPP_URL_ALLOW_HTTP": "1", "DPP_URL_EXTRA_ALLOWED_NETWORKS": "127.0.0.1/32"}
        with redis_stack(**allowed) as stack:
            api = stack.api(stack.tenant())
            created = api.session.post(
                api.url("/v1/webhook-endpoints"), json={"url": receiver.url(), "events": ["run.completed"]}, timeout=10
            )
            assert created.status_code == 201, created.text
            webhooks_slots, runs_slots = 8, 2  # the Procfile's webhooks and worker entries: --concurrency 8 and 2
            with (
                procfile_process("worker", stack.env, ready="ready"),
                procfile_process("webhooks", stack.env, ready="ready"),
            ):
                hanging = [api.diagnostic(cost_usd="0.0010") for _ in range(webhooks_slots + runs_slots + 2)]
                for run_id in hanging:
                    assert api.wait(run_id, timeout=30)["status"] == "COMPLETED"
                wait_until(lambda: len(receiver.received) >= webhooks_slots, timeout=20, what="every slot hanging")
                later = [api.diagnostic(cost_usd="0.0010") for _ in range(4)]  # submitted while every slot hangs
                for run_id in later:
                    assert api.wait(run_id, timeout=30)["status"] == "COMPLETED"
                    assert requests.get(f"{stack.base_url}/readyz", timeout=5).status_code == 200
                # Never more requests in flight than the webhooks worker has slots: none was sent from a runs slot.
                assert receiver.max_in_flight == webhooks_slots
                wait_until(
                    lambda: _failed_attempts(hanging) >= webhooks_slots, timeout=30, what="the attempts' 10 s bound"
                )
    finally:
        receiver.close()
    for delivery in WebhookDelivery.objects.filter(event__payload__run_id__in=hanging, attempts__gte=1):
        assert delivery.status == "pending"  # to be tried again on the schedule of SPEC §10
        assert delivery.next_attempt_at is not None
        assert delivery.last_attempt_at is not None
        assert delivery.next_attempt_at > delivery.last_attempt_at


def _failed_attempts(run_ids: list[str]) -> int:
    """How many of these runs' deliveries have a recorded failed attempt."""
    rows = WebhookDelivery.objects.filter(event__payload__run_id__in=run_ids, attempts__gte=1).exclude(last_error="")
    return rows.count()
