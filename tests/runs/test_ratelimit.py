"""Rate limits (SPEC §4.2): RateLimit headers on every /v1 answer (a tenant's plan, else the client's address),
429 with Retry-After, and failing open (with a metric) when Redis is down — against the real Redis."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
from django.conf import settings
from django.http import HttpResponse
from django.test import Client, RequestFactory, override_settings

from dpp.http.ratelimit import anonymous_limited
from runs.models import Run
from tests.helpers.api import accepted, assert_rate_headers, body, submit
from tests.helpers.personas import Persona, make_persona, make_plan, persona_on_plan
from tests.helpers.problems import assert_problem

pytestmark = pytest.mark.django_db

STARTER_SUBMITS, STARTER_READS = 60, 300


def _fail_open_total() -> float:
    text = Client().get("/metrics").content.decode()
    match = re.search(r"^dpp_rate_limit_fail_open_total ([0-9.e+]+)$", text, re.MULTILINE)
    assert match is not None, "the fail-open counter is not exported"
    return float(match.group(1))


def _requests(owner: Persona, run_id: str) -> list[tuple[str, Any, int]]:
    """(policy, response, expected status) for every /v1 endpoint, successes and errors alike."""
    c = owner.client
    missing = uuid.uuid4()
    return [
        ("reads", c.get("/v1/account"), 200),
        ("reads", c.get("/v1/ledger"), 200),
        ("reads", c.get("/v1/usage", {"from": "2026-01-01", "to": "2026-01-02"}), 200),
        ("reads", c.get("/v1/usage"), 422),
        ("reads", c.get("/v1/packs"), 200),
        ("reads", c.get("/v1/runs"), 200),
        ("reads", c.get("/v1/runs", {"limit": "0"}), 422),
        ("reads", c.get(f"/v1/runs/{run_id}"), 200),
        ("reads", c.get(f"/v1/runs/{missing}"), 404),
        ("reads", c.get(f"/v1/runs/{run_id}/result"), 409),
        ("reads", c.delete("/v1/account"), 405),
        ("submits", submit(c, body("decision", max_cost_usd="0.0100")), 202),
        ("submits", submit(c, body("nope", {})), 422),
        ("submits", submit(c, body(), key=""), 400),
        ("reads", c.post(f"/v1/runs/{missing}/cancel"), 404),
        ("reads", c.post(f"/v1/runs/{run_id}/cancel"), 200),
        ("reads", c.post(f"/v1/runs/{run_id}/cancel"), 409),
    ]


def test_every_authenticated_v1_answer_carries_ratelimit_headers(owner: Persona) -> None:
    run_id = accepted(owner.client, body("decision", max_cost_usd="0.0100"))["run_id"]
    for policy, response, status in _requests(owner, run_id):
        assert response.status_code == status, (response.wsgi_request.path, response.content)
        assert_rate_headers(response, policy, STARTER_SUBMITS if policy == "submits" else STARTER_READS)


def test_remaining_counts_down_per_policy(owner: Persona) -> None:
    first, _ = assert_rate_headers(owner.client.get("/v1/account"), "reads", STARTER_READS)
    second, _ = assert_rate_headers(owner.client.get("/v1/account"), "reads", STARTER_READS)
    assert first == STARTER_READS - 1
    assert second in (first - 1, first)  # one more request, unless the bucket refilled in between
    submitted, _ = assert_rate_headers(
        submit(owner.client, body("decision", max_cost_usd="0.0100")), "submits", STARTER_SUBMITS
    )
    assert submitted == STARTER_SUBMITS - 1  # a separate bucket


def test_submit_rate_limited_with_retry_after() -> None:
    persona = persona_on_plan(make_plan("three-a-minute", submits_per_min=3))
    remaining = [assert_rate_headers(submit(persona.client, body()), "submits", 3)[0] for _ in range(3)]
    assert remaining == [2, 1, 0]
    response = submit(persona.client, body())
    problem = assert_problem(response, 429, "RATE_LIMITED")
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 20  # one request's worth of the window: 60 s / 3
    assert str(retry_after) in problem["detail"]
    assert assert_rate_headers(response, "submits", 3)[0] == 0
    assert Run.objects.filter(tenant=persona.tenant).count() == 3
    # Refused before validation: even a bad body is 429 now.
    assert_problem(submit(persona.client, raw="{"), 429, "RATE_LIMITED")
    # Reads have their own bucket; other tenants their own.
    assert persona.client.get("/v1/runs").status_code == 200
    assert submit(make_persona(plan="unlimited").client, body()).status_code == 202


def test_read_rate_limited() -> None:
    persona = persona_on_plan(make_plan("two-reads", reads_per_min=2))
    assert persona.client.get("/v1/account").status_code == 200
    assert persona.client.get("/v1/packs").status_code == 200
    response = persona.client.get("/v1/runs")
    assert_problem(response, 429, "RATE_LIMITED")
    assert int(response["Retry-After"]) >= 1
    assert_rate_headers(response, "reads", 2)


def test_a_cancel_counts_against_reads_so_a_throttled_agent_can_stop_its_runs() -> None:
    persona = persona_on_plan(make_plan("one-write", submits_per_min=1, reads_per_min=5))
    run_id = accepted(persona.client, body())["run_id"]
    assert_problem(submit(persona.client, body()), 429, "RATE_LIMITED")  # the submits are spent …
    response = persona.client.post(f"/v1/runs/{run_id}/cancel")
    assert response.status_code == 200, response.content  # … and the cancel still goes through
    assert assert_rate_headers(response, "reads", 5)[0] == 4
    assert Run.objects.get(pk=run_id).status == "CANCELED"


def _exhaust_submits(persona: Persona, limit: int) -> Any:
    """Submits (each refused cheaply, a body that is not JSON: every submit counts) until one is a 429."""
    for _ in range(limit * 3):
        response = submit(persona.client, raw="{")
        if response.status_code == 429:
            return response
        assert response.status_code == 400, response.content
    raise AssertionError(f"no 429 after {limit * 3} submits")


def test_a_429s_retry_after_is_its_policys_t_and_waiting_it_out_is_enough() -> None:
    limit = 30  # one request every 2 s: the test waits at most that
    persona = persona_on_plan(make_plan("thirty-a-minute", submits_per_min=limit))
    refused = _exhaust_submits(persona, limit)
    assert_problem(refused, 429, "RATE_LIMITED")
    retry_after = int(refused["Retry-After"])
    assert refused["RateLimit"] == f'"submits";r=0;t={retry_after}'
    assert 1 <= retry_after <= 2  # the seconds until the next request, not until the bucket is full (60)
    time.sleep(retry_after)
    admitted = submit(persona.client, raw="{")
    assert admitted.status_code == 400, admitted.content  # past the rate limit: the body's own answer


def test_redis_down_fails_open_and_counts_it(owner: Persona) -> None:
    before = _fail_open_total()
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        read = owner.client.get("/v1/account")
        submitted = submit(owner.client, body("decision", max_cost_usd="0.0100"))
        listed = owner.client.get("/v1/runs")
    assert (read.status_code, submitted.status_code, listed.status_code) == (200, 202, 200)
    assert assert_rate_headers(read, "reads", STARTER_READS)[0] == STARTER_READS
    assert assert_rate_headers(submitted, "submits", STARTER_SUBMITS)[0] == STARTER_SUBMITS
    assert _fail_open_total() == before + 3
    # Money is unaffected: the run holds its reservation as usual.
    assert Run.objects.get(pk=submitted.json()["run_id"]).money_state == "RESERVED"
    # Redis back: limits apply again.
    assert assert_rate_headers(owner.client.get("/v1/account"), "reads", STARTER_READS)[0] < STARTER_READS
    assert _fail_open_total() == before + 3


def test_without_redis_url_limits_are_off_and_no_header_promises_a_quota(owner: Persona) -> None:
    """The embedded mode: no RateLimit header on a tenant's or an anonymous answer; /readyz still warns."""
    with override_settings(REDIS_URL=""):
        answers = [
            owner.client.get("/v1/account"),
            submit(owner.client, body("decision", max_cost_usd="0.0100")),
            Client().get("/v1/account"),  # no key: the anonymous policy
            Client().get("/v1/openapi.json"),
        ]
        ready = Client().get("/readyz")
    assert [answer.status_code for answer in answers] == [200, 202, 401, 200]
    for answer in answers:
        assert "RateLimit" not in answer
        assert "RateLimit-Policy" not in answer
    assert ready.json()["services"]["redis"] == "disabled"
    assert "rate limiting is off: REDIS_URL is not set" in ready.json()["warnings"]


# --- answers no tenant is counted for: the client's address, policy "anonymous" ------------------------------

ANONYMOUS = 60


def test_every_anonymous_v1_answer_carries_ratelimit_headers(anon_client: Any) -> None:
    bad_key = Client(HTTP_AUTHORIZATION="Bearer dpp_live_nope_00000000")
    answers = [
        (anon_client.get("/v1/runs"), 401),
        (submit(anon_client, body()), 401),
        (bad_key.get("/v1/account"), 401),
        (anon_client.get("/v1/no-such-endpoint"), 404),
        (anon_client.get("/v1/openapi.json"), 200),
        (anon_client.post("/v1/runs", data="x" * (256 * 1024 + 1), content_type="application/json"), 413),
    ]
    remaining = []
    for response, status in answers:
        assert response.status_code == status, (response.wsgi_request.path, response.content)
        remaining.append(assert_rate_headers(response, "anonymous", ANONYMOUS)[0])
    assert remaining == sorted(remaining, reverse=True)  # one bucket, counting down
    assert remaining[0] == ANONYMOUS - 1


@override_settings(DPP_ANONYMOUS_RATE_LIMIT=3)
def test_key_guessing_is_rate_limited_per_address(owner: Persona) -> None:
    guesser = Client(HTTP_AUTHORIZATION="Bearer dpp_live_nope_00000000")
    assert [guesser.get("/v1/account").status_code for _ in range(3)] == [401, 401, 401]
    response = guesser.get("/v1/account")
    problem = assert_problem(response, 429, "RATE_LIMITED")
    assert 1 <= int(response["Retry-After"]) <= 20  # one request's worth of the window: 60 s / 3
    assert str(int(response["Retry-After"])) in problem["detail"]
    assert assert_rate_headers(response, "anonymous", 3)[0] == 0
    assert_problem(Client().get("/v1/nope"), 429, "RATE_LIMITED")  # the address, whatever the path
    # A tenant at the same address is counted against its own plan, not the address.
    answer = owner.client.get("/v1/account")
    assert answer.status_code == 200
    assert_rate_headers(answer, "reads", STARTER_READS)


@override_settings(DPP_ANONYMOUS_RATE_LIMIT=2)
def test_forwarded_for_is_ignored_unless_proxies_are_declared() -> None:
    def guess(forwarded_for: str) -> int:
        return Client(HTTP_X_FORWARDED_FOR=forwarded_for).get("/v1/account").status_code

    def address() -> str:  # fresh on every run: buckets outlive a test
        return f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"

    # Direct clients (DPP_NUM_PROXIES=0): a forged X-Forwarded-For does not buy a fresh bucket.
    assert [guess(address()) for _ in range(3)] == [401, 401, 429]
    # Behind one proxy that appends the client's address, that address is the bucket.
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}):
        client, other = address(), address()
        assert [guess(client) for _ in range(3)] == [401, 401, 429]
        assert guess(f"{client}, {other}") == 401  # the proxy's hop, not the client's claim
        assert guess(other) == 401
        assert guess(other) == 429


@override_settings(DPP_ANONYMOUS_RATE_LIMIT=1, CORS_ALLOWED_ORIGINS=["https://agent.example"])
def test_a_cors_preflight_is_counted_but_never_refused(owner: Persona) -> None:
    browser = Client(HTTP_ORIGIN="https://agent.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    answers = [browser.options("/v1/runs") for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert [assert_rate_headers(answer, "anonymous", 1)[0] for answer in answers] == [0, 0, 0]
    assert answers[0]["Access-Control-Allow-Origin"] == "https://agent.example"
    refused = Client(HTTP_ORIGIN="https://agent.example").get("/v1/runs")
    assert_problem(refused, 429, "RATE_LIMITED")  # the address's bucket is spent …
    assert refused["Access-Control-Allow-Origin"] == "https://agent.example"  # … and the browser may read why
    assert owner.client.get("/v1/runs").status_code == 200  # the request the preflight was for: the plan's


@override_settings(DPP_ANONYMOUS_RATE_LIMIT=1)
def test_an_outage_is_never_hidden_behind_a_429() -> None:
    request = RequestFactory().get("/v1/runs")
    assert anonymous_limited(request, HttpResponse(status=401)).status_code == 401
    over = anonymous_limited(request, HttpResponse(status=503))
    assert over.status_code == 503
    assert assert_rate_headers(over, "anonymous", 1)[0] == 0
    assert anonymous_limited(request, HttpResponse(status=401)).status_code == 429
