"""Helpers of the API acceptance tests (SPEC §4): request bodies, submits, problem and header assertions.

Everything goes through the real HTTP stack (DRF test client, or requests against a real gunicorn) on the real
PostgreSQL and Redis. Runs are moved forward without a worker by calling the worker's task body
(`runs.executor.run_execute`) or the run services directly.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from celery import current_app
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from billing.models import LedgerTransaction, Plan
from billing.selectors import balances_get
from billing.services import plan_assign
from runs.executor import run_execute
from runs.models import Run
from tests.conftest import USD, Persona, make_persona

PROBLEM_MEMBERS = {"type", "title", "status", "detail", "instance", "reason_code", "trace_id"}
UUID4_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
MONEY_RE = re.compile(r"-?\d+\.\d{4}")

DIAGNOSTIC_OK = {"sleep_ms": 0, "cost_usd": "0.0300", "outcome": "succeed"}
DIAGNOSTIC_FAIL = {"sleep_ms": 0, "cost_usd": "0.0300", "outcome": "fail"}

# 3 options × 2 criteria: price 5_000 + 100 × 6 = 5_600 micros. Weighted sum: C 0.666667, A 0.5, B 0.333333.
DECISION_INPUTS: dict[str, Any] = {
    "question": "Which supplier?",
    "options": ["A", "B", "C"],
    "criteria": [
        {"name": "price", "weight": 2, "direction": "cost"},
        {"name": "quality", "weight": 1, "direction": "benefit"},
    ],
    "scores": {
        "A": {"price": 10, "quality": 7},
        "B": {"price": 12, "quality": 9},
        "C": {"price": 8, "quality": 5},
    },
}
DECISION_PRICE_MICROS = 5_600


def body(
    pack_type: str = "diagnostic",
    inputs: Any = None,
    *,
    max_cost_usd: Any = "0.0500",
    timebox_sec: Any = None,
    trace_id: str | None = None,
) -> dict[str, Any]:
    """A POST /v1/runs body; diagnostic (succeed, 0.0300) unless told otherwise."""
    if inputs is None:
        inputs = DECISION_INPUTS if pack_type == "decision" else DIAGNOSTIC_OK
    reservation: dict[str, Any] = {"max_cost_usd": max_cost_usd}
    if timebox_sec is not None:
        reservation["timebox_sec"] = timebox_sec
    result: dict[str, Any] = {"pack_type": pack_type, "inputs": inputs, "reservation": reservation}
    if trace_id is not None:
        result["meta"] = {"trace_id": trace_id}
    return result


def new_key() -> str:
    return f"key-{uuid.uuid4().hex}"


def submit(
    client: APIClient, payload: Any = None, *, key: str | None = None, raw: str | None = None, **headers: str
) -> Any:
    """POST /v1/runs with an Idempotency-Key (a fresh one unless given; "" sends none) and any other `headers`
    (WSGI names: HTTP_ACCEPT=…)."""
    key = new_key() if key is None else key
    extra: dict[str, Any] = {**headers, "HTTP_IDEMPOTENCY_KEY": key} if key else dict(headers)
    data = raw if raw is not None else json.dumps(body() if payload is None else payload)
    return client.post("/v1/runs", data=data, content_type="application/json", **extra)


def accepted(client: APIClient, payload: Any = None, *, key: str | None = None) -> dict[str, Any]:
    """A submit that must be accepted; its receipt."""
    response = submit(client, payload, key=key)
    assert response.status_code == 202, response.content
    receipt: dict[str, Any] = response.json()
    return receipt


def assert_problem(response: Any, status: int, reason: str) -> dict[str, Any]:
    """An RFC 9457 problem with every member of SPEC §4.1; its body."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    problem: dict[str, Any] = json.loads(response.content)
    assert problem.keys() >= PROBLEM_MEMBERS
    assert problem["status"] == status
    assert problem["reason_code"] == reason
    assert problem["type"] == "/problems/" + reason.lower().replace("_", "-")
    assert problem["trace_id"] == response["X-Trace-Id"]
    assert problem["instance"] == response.wsgi_request.path
    assert isinstance(problem["title"], str)
    assert problem["title"]
    assert isinstance(problem["detail"], str)
    assert problem["detail"]
    return problem


def field_errors(problem: dict[str, Any]) -> list[str]:
    return [error["field"] for error in problem["errors"]]


def without_request_members(problem: dict[str, Any]) -> dict[str, Any]:
    """A problem without the members that name the request (instance, trace_id)."""
    return {name: value for name, value in problem.items() if name not in ("instance", "trace_id")}


def assert_rate_headers(response: Any, policy: str, limit: int) -> tuple[int, int]:
    """RateLimit-Policy and RateLimit (IETF draft) for `policy`; (remaining, reset seconds)."""
    assert response["RateLimit-Policy"] == f'"{policy}";q={limit};w=60'
    match = re.fullmatch(rf'"{policy}";r=(\d+);t=(\d+)', response["RateLimit"])
    assert match is not None, response["RateLimit"]
    remaining, reset = int(match.group(1)), int(match.group(2))
    assert 0 <= remaining <= limit
    assert 0 <= reset <= 60
    return remaining, reset


def balances(persona: Persona) -> tuple[int, int]:
    """(available, held) in micros."""
    found = balances_get(tenant_id=persona.tenant.pk)
    return found.available_micros, found.held_micros


def ledger_kinds(run_id: str | uuid.UUID) -> list[str]:
    return sorted(LedgerTransaction.objects.filter(run_id=run_id).values_list("kind", flat=True))


def make_plan(code: str, **overrides: Any) -> Plan:
    """A plan like starter, every pack allowed, with `overrides` (e.g. submits_per_min=3)."""
    fields: dict[str, Any] = {
        "name": code,
        "pack_max_cost_micros": {"decision": USD, "url": USD, "diagnostic": USD},
        "submits_per_min": 60,
        "reads_per_min": 300,
        "max_concurrent_runs": 10,
        **overrides,
    }
    return Plan.objects.create(code=code, **fields)


def persona_on_plan(plan: Plan, *, credit_micros: int = 10 * USD) -> Persona:
    persona = make_persona(plan="starter", credit_micros=credit_micros)
    plan_assign(tenant=persona.tenant, plan_code=plan.code, actor="test", reason="test plan")
    return persona


def run_row(run_id: str | uuid.UUID) -> Run:
    return Run.objects.get(pk=run_id)


@pytest.fixture
def unlimited() -> Persona:
    """A tenant on plan unlimited (the diagnostic pack) with 10 USD."""
    return make_persona(plan="unlimited", credit_micros=10 * USD)


def close_thread_connection() -> None:
    """End of a worker thread of a test: its own database connection must not outlive it."""
    connection.close()


@pytest.fixture(scope="session", autouse=True)
def _purge_task_queue() -> Any:
    """Transactional tests publish real tasks that no worker consumes here: leave this suite's queue empty."""
    yield
    if settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        with current_app.connection_for_write() as conn:
            for queue in current_app.conf.task_queues:  # the runs' and the reaper's
                conn.default_channel.queue_purge(queue.name)


def execute(run_id: str | uuid.UUID) -> str:
    """What a worker does with one delivery of the run (needs django_db(transaction=True): a heartbeat thread)."""
    return run_execute(run_id=uuid.UUID(str(run_id)))
