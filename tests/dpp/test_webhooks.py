"""Webhooks (SPEC §10) against a real local receiver: signatures, data, retries, rotation, SSRF, isolation."""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from dpp.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from dpp.webhooks import policy
from dpp.webhooks.outbox import webhook_event_record
from dpp.webhooks.sending import webhook_delivery_attempt
from runs import webhooks as run_webhooks
from runs.services import run_commit
from tests.dpp.webhook_receiver import Receiver
from tests.helpers.money import USD
from tests.helpers.personas import Persona, make_persona
from tests.helpers.problems import assert_problem
from tests.helpers.states import claimed_run, completed_run, later, run_row, store_envelope
from tests.packs.url.servers import FakeResolver
from tests.packs.url.test_blocked import LITERALS, NAMES
from tests.runs.keys_support import child_key, root_key

pytestmark = pytest.mark.django_db
LOOPBACK_ONE = (ipaddress.ip_network("127.0.0.1/32"),)


@pytest.fixture(autouse=True)
def local_receivers(settings: Any) -> None:
    settings.DPP_URL_ALLOW_HTTP = True
    settings.DPP_URL_EXTRA_ALLOWED_NETWORKS = LOOPBACK_ONE


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def register(persona: Persona, url: str, events: list[str] | None = None) -> dict[str, Any]:
    response = persona.client.post(
        "/v1/webhook-endpoints", {"url": url, "events": events or ["run.completed"]}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def send_pending() -> list[str]:
    """What the webhooks worker does: one attempt of every due delivery."""
    due = WebhookDelivery.objects.filter(status="pending").order_by("id").values_list("id", flat=True)
    return [webhook_delivery_attempt(delivery_id=pk) for pk in due]


def test_a_completed_runs_delivery_verifies_and_carries_the_run(
    receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    persona = make_persona(plan="unlimited")
    endpoint = register(persona, receiver.url())
    assert endpoint["secret"].startswith("whsec_")
    assert len(endpoint["secret"]) >= 6 + 32
    with django_capture_on_commit_callbacks(execute=False):
        run = completed_run(persona, cost_micros=11_000)

    assert send_pending() == ["delivered"]

    [got] = receiver.received
    payload = Webhook(endpoint["secret"]).verify(got.body, got.headers)
    assert got.headers["webhook-id"].startswith("evt_")
    assert got.headers["content-type"] == "application/json"
    assert payload["type"] == "run.completed"
    shown = persona.client.get(f"/v1/runs/{run.pk}").json()
    shown["result"]["url"] = f"/v1/runs/{run.pk}/result"
    assert payload["data"] == shown
    assert payload["data"]["cost"]["budget_remaining_usd"] == "9.9890"
    [delivery] = persona.client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries").json()["data"]
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 1
    assert delivery["last_status_code"] == 200


def test_a_500_then_200_gets_two_attempts_with_one_webhook_id_about_5_s_apart(
    django_capture_on_commit_callbacks: Any,
) -> None:
    receiver = Receiver(statuses=(500, 200))
    try:
        persona = make_persona(plan="unlimited")
        register(persona, receiver.url())
        with django_capture_on_commit_callbacks(execute=False):
            completed_run(persona, cost_micros=11_000)
        with django_capture_on_commit_callbacks(execute=False):
            assert send_pending() == ["retry"]
        delivery = WebhookDelivery.objects.get()
        assert delivery.attempts == 1
        assert delivery.last_status_code == 500
        assert delivery.next_attempt_at is not None
        assert delivery.last_attempt_at is not None
        wait = (delivery.next_attempt_at - delivery.last_attempt_at).total_seconds()
        assert 4.5 <= wait <= 5.5
        assert send_pending() == ["not due"]
        time.sleep(wait + 0.1)
        assert send_pending() == ["delivered"]
    finally:
        receiver.close()
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert 4.4 <= second.at - first.at <= 6
    assert WebhookDelivery.objects.get().attempts == 2


def test_a_success_clears_the_endpoints_failing_since_and_5_days_of_failures_disable_it(
    django_capture_on_commit_callbacks: Any,
) -> None:
    receiver = Receiver(statuses=(500, 200, 500))
    try:
        persona = make_persona(plan="unlimited")
        endpoint = WebhookEndpoint.objects.get(pk=register(persona, receiver.url())["id"])
        with django_capture_on_commit_callbacks(execute=False):
            completed_run(persona, cost_micros=11_000)
            assert send_pending() == ["retry"]
            endpoint.refresh_from_db()
            assert endpoint.failing_since is not None
            with later(6):
                assert send_pending() == ["delivered"]  # the same delivery, 5 s on: the endpoint works again
            endpoint.refresh_from_db()
            assert endpoint.failing_since is None
            completed_run(persona, cost_micros=11_000)
            assert send_pending() == ["retry"]  # failing again from now
            with later(5 * 86_400 + 60):
                completed_run(persona, cost_micros=11_000)
                # 5 days of nothing but failures: the endpoint is disabled, and the next delivery fails unsent
                assert send_pending() == ["retry", "failed"]
    finally:
        receiver.close()
    endpoint.refresh_from_db()
    assert endpoint.status == "disabled"


def test_after_a_rotation_both_secrets_sign(receiver: Receiver, django_capture_on_commit_callbacks: Any) -> None:
    persona = make_persona(plan="unlimited")
    endpoint = register(persona, receiver.url())
    rotated = persona.client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret").json()
    assert rotated["secret"] != endpoint["secret"]
    assert "secret" not in persona.client.get(f"/v1/webhook-endpoints/{endpoint['id']}").json()
    with django_capture_on_commit_callbacks(execute=False):
        completed_run(persona, cost_micros=11_000)
    send_pending()

    [got] = receiver.received
    signatures = got.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    for secret in (endpoint["secret"], rotated["secret"]):
        Webhook(secret).verify(got.body, got.headers)


BLOCKED = [pytest.param(host, None, id=label) for label, host in LITERALS] + [
    pytest.param(host, answer, id=label) for label, host, answer in NAMES
]


def test_the_blocked_table_is_large_enough() -> None:
    assert len(BLOCKED) >= 30


@pytest.mark.parametrize(("host", "answer"), BLOCKED)
def test_every_blocked_address_form_is_refused_at_registration(
    host: str, answer: list[str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(policy, "RESOLVER", FakeResolver({host: answer} if answer else {}))
    persona = make_persona(plan="unlimited")
    response = persona.client.post(
        "/v1/webhook-endpoints", {"url": f"https://{host}:8443/hook", "events": ["run.completed"]}, format="json"
    )
    assert response.status_code == 422
    assert response.json()["reason_code"] == "WEBHOOK_URL_BLOCKED"


def test_http_is_refused_unless_allowed(settings: Any) -> None:
    settings.DPP_URL_ALLOW_HTTP = False
    response = make_persona().client.post(
        "/v1/webhook-endpoints", {"url": "http://example.com/hook", "events": ["run.failed"]}, format="json"
    )
    assert response.status_code == 422
    assert response.json()["reason_code"] == "WEBHOOK_URL_BLOCKED"


def test_dns_that_turns_to_a_blocked_address_fails_the_attempt_without_connecting(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    port = receiver.server.server_address[1]
    resolver = FakeResolver({"hooks.test": [["127.0.0.1"], ["10.0.0.1"]]})
    monkeypatch.setattr(policy, "RESOLVER", resolver)
    persona = make_persona(plan="unlimited")
    register(persona, f"http://hooks.test:{port}/hook")  # resolves to the allowed receiver now
    monkeypatch.setattr(policy, "RESOLVER", FakeResolver({"hooks.test": ["127.0.0.2"]}))
    with django_capture_on_commit_callbacks(execute=False):
        completed_run(persona, cost_micros=11_000)
        assert send_pending() == ["retry"]

    assert receiver.received == []
    delivery = WebhookDelivery.objects.get()
    assert delivery.last_error.startswith("URL_BLOCKED")
    assert delivery.last_status_code is None


def test_other_tenants_see_404(receiver: Receiver, django_capture_on_commit_callbacks: Any) -> None:
    owner, other = make_persona(plan="unlimited"), make_persona()
    endpoint = register(owner, receiver.url())
    with django_capture_on_commit_callbacks(execute=False):
        completed_run(owner, cost_micros=11_000)
    event = WebhookEvent.objects.get()
    base = f"/v1/webhook-endpoints/{endpoint['id']}"
    for response in (
        other.client.get(base),
        other.client.patch(base, {"description": "mine"}, format="json"),
        other.client.delete(base),
        other.client.post(f"{base}/rotate-secret"),
        other.client.get(f"{base}/deliveries"),
        other.client.post(f"/v1/events/{event.pk}/redeliver"),
    ):
        assert response.status_code == 404, response.content
    assert other.client.get("/v1/webhook-endpoints").json()["data"] == []
    assert owner.client.get(base).json()["description"] == ""


def test_only_a_key_without_a_parent_manages_webhooks(
    receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    owner = make_persona(plan="unlimited")  # its key has no parent and may not manage keys: it manages webhooks
    endpoint = register(owner, receiver.url())
    with django_capture_on_commit_callbacks(execute=False):
        completed_run(owner, cost_micros=11_000)
    event = WebhookEvent.objects.get()
    manager = child_key(root_key(owner), can_manage_keys=True)  # may manage keys, yet has a parent
    agent = child_key(manager)
    base = f"/v1/webhook-endpoints/{endpoint['id']}"
    deliveries = list(WebhookDelivery.objects.values_list("pk", "status", "attempts", "next_attempt_at"))
    for key in (manager, agent):
        with django_capture_on_commit_callbacks(execute=False) as published:
            for name, response in (
                ("list", key.client.get("/v1/webhook-endpoints")),
                ("create", key.client.post("/v1/webhook-endpoints", {"url": receiver.url()}, format="json")),
                ("get", key.client.get(base)),
                ("patch", key.client.patch(base, {"description": "mine"}, format="json")),
                ("rotate", key.client.post(f"{base}/rotate-secret")),
                ("deliveries", key.client.get(f"{base}/deliveries")),
                ("redeliver", key.client.post(f"/v1/events/{event.pk}/redeliver")),
                ("delete", key.client.delete(base)),
                ("unknown id", key.client.get("/v1/webhook-endpoints/ep_nope")),  # no lookup: the same 403
            ):
                problem = assert_problem(response, 403, "FORBIDDEN")
                assert "without a parent" in problem["detail"], name
        assert published == []  # no redelivery queued
    shown = owner.client.get(base).json()
    assert (shown["description"], shown["status"]) == ("", "enabled")
    assert WebhookEndpoint.objects.get().secret == endpoint["secret"]  # not rotated
    assert list(WebhookDelivery.objects.values_list("pk", "status", "attempts", "next_attempt_at")) == deliveries
    assert len(owner.client.get("/v1/webhook-endpoints").json()["data"]) == 1
    assert owner.client.post(f"{base}/rotate-secret").status_code == 200


def test_an_eleventh_endpoint_is_refused(receiver: Receiver) -> None:
    persona = make_persona(plan="unlimited")
    for _ in range(10):
        register(persona, receiver.url())
    response = persona.client.post(
        "/v1/webhook-endpoints", {"url": receiver.url(), "events": ["run.failed"]}, format="json"
    )
    assert response.status_code == 422
    assert response.json()["reason_code"] == "VALIDATION_ERROR"


def test_no_event_exists_for_a_state_that_was_rolled_back(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    persona = make_persona(plan="unlimited")
    register(persona, receiver.url())
    claimed, _ = claimed_run(persona)
    stored = store_envelope(claimed, cost_micros=11_000)
    written = []

    def record_then_fail(**kwargs: Any) -> None:
        webhook_event_record(**kwargs)
        written.append(WebhookEvent.objects.count())  # written in the commit's own transaction...
        raise RuntimeError("the commit fails after its rows were written")

    monkeypatch.setattr(run_webhooks, "webhook_event_record", record_then_fail)
    with pytest.raises(RuntimeError):
        run_commit(run=claimed, stored=stored)
    assert written == [1]
    assert WebhookEvent.objects.count() == 0  # ...and gone with it
    assert WebhookDelivery.objects.count() == 0
    assert run_row(claimed.pk).status == "PROCESSING"


def test_redeliver_sends_again_with_the_same_webhook_id(
    receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    persona = make_persona(plan="unlimited")
    register(persona, receiver.url())
    with django_capture_on_commit_callbacks(execute=False):
        completed_run(persona, cost_micros=11_000)
    send_pending()
    event = WebhookEvent.objects.get()
    with django_capture_on_commit_callbacks(execute=False) as published:
        assert persona.client.post(f"/v1/events/{event.pk}/redeliver").status_code == 202
    assert len(published) == 1
    assert send_pending() == ["delivered"]
    assert [got.headers["webhook-id"] for got in receiver.received] == [event.pk, event.pk]


def test_balance_low_once_per_crossing(receiver: Receiver, django_capture_on_commit_callbacks: Any) -> None:
    from django.core.management import call_command

    from billing.services import ledger_topup

    persona = make_persona(plan="unlimited", credit_micros=USD // 10)  # 0.1000
    register(persona, receiver.url(), events=["balance.low"])
    call_command("set_low_balance", persona.tenant.pk, "0.0950")
    with django_capture_on_commit_callbacks(execute=False):
        completed_run(persona, cost_micros=11_000)
        completed_run(persona, cost_micros=11_000)
    assert WebhookEvent.objects.filter(type="balance.low").count() == 1
    assert send_pending() == ["delivered"]
    data = json.loads(receiver.received[0].body)["data"]
    # GET /v1/account's object as it was right after the reservation that crossed the threshold
    assert data == {
        "tenant_id": persona.tenant.pk,
        "plan": "unlimited",
        "available_usd": "0.0500",
        "held_usd": "0.0500",
        "currency": "USD",
    }
    ledger_topup(tenant=persona.tenant, amount_micros=USD // 50, actor="test", reason="more")  # 0.0980: re-armed
    with django_capture_on_commit_callbacks(execute=False):
        completed_run(persona, cost_micros=11_000)  # reserves 0.0500: below the threshold again
    assert WebhookEvent.objects.filter(type="balance.low").count() == 2


def test_a_hanging_receiver_fails_the_attempt_at_10_s(django_capture_on_commit_callbacks: Any) -> None:
    receiver = Receiver(hang_s=13)
    try:
        persona = make_persona(plan="unlimited")
        register(persona, receiver.url())
        with django_capture_on_commit_callbacks(execute=False):
            run = completed_run(persona, cost_micros=11_000)  # the run ended, whatever the receiver does
            started = time.monotonic()
            assert send_pending() == ["retry"]
        took = time.monotonic() - started
    finally:
        receiver.close()
    assert 9.5 <= took <= 11.5
    assert WebhookDelivery.objects.get().last_error == "FETCH_FAILED: no answer within 10 s"
    assert run_row(run.pk).status == "COMPLETED"
