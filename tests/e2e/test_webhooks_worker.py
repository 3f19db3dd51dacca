"""Webhooks with a real Celery worker (its own queue) and a real local receiver: a run's end is delivered after
its commit; a delivery whose task was lost (a crash between the commit and the send) or whose sender was killed
while its request was in flight is re-driven by the reaper with the same webhook-id; a receiver that hangs holds
neither a run nor an API thread (gunicorn, and the runs and the webhooks on workers of their own as in the
Procfile)."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import pytest
import requests
from django.conf import settings
from standardwebhooks.webhooks import Webhook

from dpp.models import WebhookDelivery
from dpp.webhooks.outbox import REDRIVE_AFTER
from reaper.services import reconcile_once
from runs.audit import full_audit
from runs.models import Run
from tests.dpp.webhook_receiver import Receiver
from tests.e2e.harness import E2E, assert_money_balanced, purge_queues, redis_stack, usd_micros
from tests.helpers.personas import make_persona
from tests.helpers.states import completed_run
from tests.helpers.threads import at_once
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


def test_a_worker_killed_mid_send_leaves_the_delivery_to_be_re_driven_with_its_webhook_id() -> None:
    """The receiver has the request and stalls; the worker is SIGKILLed before any answer. The claimed attempt is
    not taken for a delivery (no answer came), and once its lease is overdue the reaper re-drives it: a new worker
    sends it again, the same webhook-id, signed anew."""
    purge_queues()
    receiver = Receiver(hold_first=1)
    try:
        persona = make_persona(plan="unlimited")
        endpoint = _endpoint(persona, receiver)
        with celery_worker(worker_env(), concurrency=1, name="webhooks-killed") as worker:
            run = completed_run(persona, cost_micros=11_000)
            wait_until(lambda: receiver.received, timeout=20, what="the first attempt at the receiver")
            in_flight = WebhookDelivery.objects.get()
            worker.kill()  # SIGKILL, the pool child included, while its request waits for an answer
            worker.proc.wait(10)
        assert (in_flight.status, in_flight.attempts, in_flight.delivered_at) == ("pending", 1, None)
        receiver.release()  # the held request finds its sender gone: nobody reads an answer
        with celery_worker(worker_env(), concurrency=1, name="webhooks-after-kill"):
            wait_until(lambda: reconcile_once().webhooks_redriven, timeout=60, interval=0.5, what="re-driven")
            wait_until(lambda: WebhookDelivery.objects.get().status == "delivered", timeout=20, what="delivered")
    finally:
        receiver.close()
    first, *again = receiver.received
    assert again, "the killed attempt was never sent again"
    assert {got.headers["webhook-id"] for got in receiver.received} == {in_flight.event_id}
    for got in again:
        payload = Webhook(endpoint["secret"]).verify(got.body, got.headers)
        assert payload["data"]["run_id"] == str(run.pk)
    assert first.body == again[-1].body  # the same event, only its timestamp and signature are of the new attempt
    delivered = WebhookDelivery.objects.get()
    assert delivered.attempts == len(receiver.received) == 2
    assert (delivered.last_status_code, delivered.last_error) == (200, "")
    settled = Run.objects.get(pk=run.pk)  # webhooks never touch money: the run is as its commit left it
    assert (settled.status, settled.money_state, settled.charged_micros) == ("COMPLETED", "SETTLED", 11_000)
    assert full_audit().ok


HANG_S = 600.0  # far longer than an attempt's 10 s bound, and than the test: only the bound ends an attempt
HUNG_RUNS = 6


def _all_answer_200(urls: list[str], api_key: str) -> list[BaseException]:
    """Every URL fetched at once (more requests than gunicorn has threads), each asserted to answer 200."""

    def get(url: str) -> None:
        response = requests.get(url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])

    return at_once([lambda url=url: get(url) for url in urls])


def test_a_hanging_receiver_holds_no_run_and_no_api_thread() -> None:
    """One webhooks pool process, a receiver that never answers: the runs (their own worker) all complete while
    the first attempt still hangs, the API answers a burst of reads, and the hung attempt ends at its 10 s bound
    and is retried (same webhook-id) on the 5 s step of the schedule."""
    receiver = Receiver(hang_s=HANG_S)
    allowed = {"DPP_URL_ALLOW_HTTP": "1", "DPP_URL_EXTRA_ALLOWED_NETWORKS": "127.0.0.1/32"}
    try:
        with redis_stack(**allowed) as stack:
            tenant = stack.tenant()
            api = stack.api(tenant)
            hook = {"url": receiver.url(), "events": ["run.completed"]}
            assert api.session.post(api.url("/v1/webhook-endpoints"), json=hook, timeout=10).status_code == 201
            runs_only, webhooks_only = (stack.env["DPP_TASK_QUEUE"],), (settings.DPP_WEBHOOK_QUEUE,)
            with (
                celery_worker(stack.env, concurrency=2, name="runs-only", queues=runs_only),
                celery_worker(stack.env, concurrency=1, name="webhooks-only", queues=webhooks_only),
            ):
                run_ids = [api.diagnostic(cost_usd="0.0010") for _ in range(HUNG_RUNS)]
                for run_id in run_ids:
                    assert api.wait(run_id, timeout=60)["status"] == "COMPLETED"
                wait_until(lambda: receiver.received, timeout=20, what="the first attempt at the receiver")
                # Sent from the runs' workers, each run would wait for its hung send: 6 runs on 2 processes end
                # only after ≥ 4 attempts had ended at their bound. From the webhooks' queue: ≤ 2 even if the runs
                # took 30 s on a loaded machine (one webhooks process, one attempt per 10 s).
                assert WebhookDelivery.objects.exclude(last_error="").count() <= 2
                assert receiver.answered == 0  # ...and all of this while the receiver hung
                urls = [api.url(f"/v1/runs/{run_id}") for run_id in run_ids] * 3 + [api.url("/readyz")] * 6
                assert _all_answer_200(urls, tenant.api_key) == []
                first = receiver.received[0]
                hook_id = first.headers["webhook-id"]
                wait_until(
                    lambda: sum(got.headers["webhook-id"] == hook_id for got in receiver.received) >= 2,
                    timeout=150,  # queued behind the other five deliveries' hung attempts (10 s each)
                    what="the retry of the hung attempt",
                )
                retried = WebhookDelivery.objects.get(event_id=hook_id)
            charged = sum(usd_micros(api.run(run_id)["cost"]["used_usd"]) for run_id in run_ids)
            assert charged == HUNG_RUNS * 1_000
            assert_money_balanced(stack, tenant, charged)
    finally:
        receiver.close()
    again = next(got for got in receiver.received[1:] if got.headers["webhook-id"] == hook_id)
    assert again.at - first.at >= 10 + 5 * 0.9 - 0.5  # the 10 s bound, then the first step (5 s, -10 %)
    assert retried.attempts >= 2
    assert retried.status == "pending"
    assert retried.last_error == "FETCH_FAILED: no answer within 10 s"
    assert WebhookDelivery.objects.filter(status="delivered").count() == 0
