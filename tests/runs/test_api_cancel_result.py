"""POST /v1/runs/{id}/cancel and GET /v1/runs/{id}/result (SPEC §4): states, money, and the envelope."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from freezegun import freeze_time

from billing.models import LedgerEntry
from runs import results, services
from runs.models import Run
from tests.helpers.api import accepted, body
from tests.helpers.inputs import DIAGNOSTIC_FAIL
from tests.helpers.money import USD, balances, ledger_kinds
from tests.helpers.personas import Persona
from tests.helpers.problems import assert_problem
from tests.helpers.states import claim, execute, expire_queued, fail, lease, run_row
from tests.helpers.threads import close_thread_connection

pytestmark = pytest.mark.django_db

ENVELOPE_KEYS = {
    "run_id",
    "finalize_token",
    "pack_type",
    "profile_version",
    "actual_cost_usd_micros",
    "created_at",
    "started_at",
    "finished_at",
    "trace_id",
    "data",
}


def _cancel(persona: Persona, run_id: str) -> Any:
    return persona.client.post(f"/v1/runs/{run_id}/cancel")


# --- cancel ------------------------------------------------------------------------------------------------


def test_cancel_queued_is_200_canceled_with_a_full_release(unlimited: Persona) -> None:
    run_id = accepted(unlimited.client, body(max_cost_usd="0.0500"))["run_id"]
    assert balances(unlimited) == (10 * USD - 50_000, 50_000)
    response = _cancel(unlimited, run_id)
    assert response.status_code == 200, response.content
    run = response.json()
    assert (run["run_id"], run["status"], run["money_state"]) == (run_id, "CANCELED", "REFUNDED")
    assert run["cost"] == {
        "reserved_usd": "0.0500",
        "used_usd": "0.0000",
        "minimum_fee_usd": "0.0050",
        "budget_remaining_usd": "10.0000",
    }
    assert run["error"]["reason_code"] == "CANCELED_BY_CLIENT"
    assert run["meta"]["completed_at"] is not None
    assert run["meta"]["cancel_requested_at"] is None  # canceled at once: no request was left pending
    assert response["X-DPP-Cost-Reserved"] == "0.0500"
    assert response["X-DPP-Cost-Actual"] == "0.0000"
    assert balances(unlimited) == (10 * USD, 0)
    assert ledger_kinds(run_id) == ["RESERVE", "SETTLE"]
    settle_legs = LedgerEntry.objects.filter(transaction__run_id=run_id, transaction__kind="SETTLE")
    assert sorted(settle_legs.values_list("amount_micros", flat=True)) == [-50_000, 50_000]  # nothing to revenue


def test_cancel_processing_is_202_then_the_worker_ends_it_canceled_with_the_minimum_fee(unlimited: Persona) -> None:
    run_id = accepted(unlimited.client, body(max_cost_usd="0.5000"))["run_id"]
    leased = lease(run_row(run_id))
    response = _cancel(unlimited, run_id)
    assert response.status_code == 202, response.content
    run = response.json()
    assert (run["status"], run["money_state"], run["cost"]["used_usd"]) == ("PROCESSING", "RESERVED", None)
    assert "X-DPP-Cost-Actual" not in response
    requested_at = run_row(run_id).cancel_requested_at
    assert requested_at is not None
    # The 202 body and every poll say that a cancel was requested, and when (ISO 8601, UTC).
    stamp = requested_at.isoformat().replace("+00:00", "Z")
    assert run["meta"]["cancel_requested_at"] == stamp
    assert unlimited.client.get(f"/v1/runs/{run_id}").json()["meta"]["cancel_requested_at"] == stamp
    assert balances(unlimited) == (10 * USD - 500_000, 500_000)
    again = _cancel(unlimited, run_id)  # asking twice is harmless
    assert again.status_code == 202
    assert run_row(run_id).cancel_requested_at == requested_at
    assert services.run_heartbeat(run_id=uuid.UUID(run_id), lease_token=leased.token) == "CANCEL_REQUESTED"

    assert services.run_cancel_started(run=run_row(run_id), lease_token=leased.token)
    polled = unlimited.client.get(f"/v1/runs/{run_id}")
    assert polled.json()["status"] == "CANCELED"
    assert polled.json()["money_state"] == "SETTLED"
    assert polled.json()["cost"]["used_usd"] == polled.json()["cost"]["minimum_fee_usd"] == "0.0100"
    assert polled.json()["error"]["reason_code"] == "CANCELED_BY_CLIENT"
    assert polled["X-DPP-Cost-Actual"] == "0.0100"
    assert balances(unlimited) == (10 * USD - 10_000, 0)
    assert_problem(_cancel(unlimited, run_id), 409, "RUN_TERMINAL")


def test_cancel_of_a_claimed_run_is_409_at_once_and_changes_nothing(unlimited: Persona) -> None:
    """Its outcome is being committed (a claim refuses a run whose cancel was requested, so the claim won): it can
    no longer be canceled, whatever the retries. It was 503 UNAVAILABLE for as long as the claim lasted."""
    run_id = accepted(unlimited.client, body(max_cost_usd="0.5000"))["run_id"]
    claim(lease(run_row(run_id)))
    before, money = run_row(run_id), balances(unlimited)
    problem = assert_problem(_cancel(unlimited, run_id), 409, "RUN_TERMINAL")
    assert "is finishing" in problem["detail"]
    after = run_row(run_id)
    assert (after.status, after.version, after.cancel_requested_at) == ("PROCESSING", before.version, None)
    assert balances(unlimited) == money


@pytest.mark.django_db(transaction=True)
@override_settings(DPP_LEASE_S=3)  # the heartbeat beats every second
def test_cancel_while_a_worker_runs_it_the_heartbeat_stops_it(unlimited: Persona) -> None:
    inputs = {"sleep_ms": 30_000, "cost_usd": "0.0300", "outcome": "succeed"}
    run_id = accepted(unlimited.client, body(inputs=inputs, max_cost_usd="0.0500"))["run_id"]
    outcome: list[str] = []

    def worker() -> None:
        try:
            outcome.append(execute(run_id))
        finally:
            close_thread_connection()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while run_row(run_id).status != "PROCESSING":
            assert time.monotonic() < deadline, "the worker did not lease the run"
            time.sleep(0.02)
        asked = time.monotonic()
        assert _cancel(unlimited, run_id).status_code == 202
    finally:
        thread.join(timeout=20)
    assert not thread.is_alive()
    assert outcome == ["canceled"]
    assert time.monotonic() - asked < 5  # the next heartbeat, not the 30 s sleep
    run = unlimited.client.get(f"/v1/runs/{run_id}").json()
    assert (run["status"], run["money_state"], run["cost"]["used_usd"]) == ("CANCELED", "SETTLED", "0.0050")
    assert balances(unlimited) == (10 * USD - 5_000, 0)


@pytest.mark.parametrize("ending", ["canceled", "failed", "expired"])
def test_cancel_terminal_is_409_run_terminal_and_changes_nothing(unlimited: Persona, ending: str) -> None:
    run_id = accepted(unlimited.client, body())["run_id"]
    if ending == "canceled":
        assert _cancel(unlimited, run_id).status_code == 200
    elif ending == "failed":
        fail(lease(run_row(run_id)), detail="x")
    else:
        expire_queued(run_row(run_id))
    before, money = run_row(run_id), balances(unlimited)
    problem = assert_problem(_cancel(unlimited, run_id), 409, "RUN_TERMINAL")
    assert before.status in problem["detail"]
    after = run_row(run_id)
    assert (after.status, after.version, after.charged_micros) == (before.status, before.version, before.charged_micros)
    assert balances(unlimited) == money
    assert ledger_kinds(run_id) == ["RESERVE", "SETTLE"]


@pytest.mark.django_db(transaction=True)
def test_cancel_completed_is_409(unlimited: Persona) -> None:
    run_id = accepted(unlimited.client, body())["run_id"]
    assert execute(run_id) == "completed"
    assert_problem(_cancel(unlimited, run_id), 409, "RUN_TERMINAL")
    assert run_row(run_id).status == "COMPLETED"


# --- result ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["queued", "processing"])
def test_result_not_ready_while_a_result_may_still_come(unlimited: Persona, state: str) -> None:
    run_id = accepted(unlimited.client, body())["run_id"]
    if state == "processing":
        lease(run_row(run_id))
    problem = assert_problem(unlimited.client.get(f"/v1/runs/{run_id}/result"), 409, "RESULT_NOT_READY")
    assert problem["detail"] == "The run has not completed yet; poll it until it is COMPLETED."
    assert unlimited.client.get(f"/v1/runs/{run_id}").json()["meta"]["cancel_requested_at"] is None


@pytest.mark.parametrize("state", ["failed", "canceled", "expired"])
def test_result_of_a_run_that_ended_without_one_is_run_terminal(unlimited: Persona, state: str) -> None:
    """RESULT_NOT_READY would tell an agent to wait for a result that will never come."""
    run_id = accepted(unlimited.client, body())["run_id"]
    if state == "failed":
        fail(lease(run_row(run_id)), detail="x")
    elif state == "canceled":
        assert _cancel(unlimited, run_id).status_code == 200
    elif state == "expired":
        expire_queued(run_row(run_id))
    problem = assert_problem(unlimited.client.get(f"/v1/runs/{run_id}/result"), 409, "RUN_TERMINAL")
    ended = {"failed": "FAILED", "canceled": "CANCELED", "expired": "EXPIRED"}[state]
    assert problem["detail"].startswith(f"The run ended {ended} (")
    assert problem["detail"].endswith("): this run has no result, and never will.")


@pytest.mark.django_db(transaction=True)
def test_result_envelope_hashes_to_the_runs_sha256_and_holds_the_decision(owner: Persona) -> None:
    receipt = accepted(owner.client, body("decision", max_cost_usd="0.0100", trace_id="trace-decision"))
    run_id = receipt["run_id"]
    assert execute(run_id) == "completed"
    run = owner.client.get(f"/v1/runs/{run_id}").json()
    assert (run["status"], run["cost"]["used_usd"]) == ("COMPLETED", "0.0056")  # 5_000 + 100 × 3 × 2
    response = owner.client.get(f"/v1/runs/{run_id}/result")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    content = response.content
    assert hashlib.sha256(content).hexdigest() == run["result"]["sha256"]
    assert len(content) == run["result"]["bytes"]
    assert response["ETag"] == f'"{run["result"]["sha256"]}"'
    assert response["X-DPP-Result-SHA256"] == run["result"]["sha256"]
    assert run["result"]["url"].endswith(f"/v1/runs/{run_id}/result")
    envelope = json.loads(content)
    assert envelope.keys() == ENVELOPE_KEYS
    row = run_row(run_id)
    assert envelope["run_id"] == run_id
    assert envelope["finalize_token"] == str(row.finalize_token)
    assert (envelope["pack_type"], envelope["profile_version"]) == ("decision", "decision@1.0.0")
    assert envelope["actual_cost_usd_micros"] == 5_600
    assert envelope["trace_id"] == "trace-decision"
    data = envelope["data"]
    assert data.keys() == {"winner", "method", "ranking", "weights", "sensitivity"}
    assert (data["winner"], data["method"]) == ("C", "weighted_sum")
    assert data["ranking"] == [
        {"option": "C", "score": 0.666667, "rank": 1},
        {"option": "A", "score": 0.5, "rank": 2},
        {"option": "B", "score": 0.333333, "rank": 3},
    ]
    assert data["weights"] == pytest.approx({"price": 2 / 3, "quality": 1 / 3})
    assert abs(sum(data["weights"].values()) - 1) < 1e-12
    # price 2/3 → C wins until price < 0.5 (A then wins the tie by input order); quality mirrors it.
    assert data["sensitivity"] == [
        {"criterion": "price", "weight_change_to_flip": -0.166667},
        {"criterion": "quality", "weight_change_to_flip": 0.166667},
    ]


@pytest.mark.django_db(transaction=True)
def test_result_expires_after_30_days(unlimited: Persona) -> None:
    run_id = accepted(unlimited.client, body())["run_id"]
    assert execute(run_id) == "completed"
    completed_at = run_row(run_id).completed_at
    assert completed_at is not None
    with freeze_time(completed_at + timedelta(days=30) - timedelta(seconds=1)):
        assert unlimited.client.get(f"/v1/runs/{run_id}/result").status_code == 200
    with freeze_time(completed_at + timedelta(days=30)):
        problem = assert_problem(unlimited.client.get(f"/v1/runs/{run_id}/result"), 410, "RESULT_EXPIRED")
        run = unlimited.client.get(f"/v1/runs/{run_id}").json()
    assert "expired" in problem["detail"]
    assert run["status"] == "COMPLETED"
    assert run["result"]["url"] is None  # the pointer stays, with its hash, but nothing to download
    assert run["result"]["sha256"] == run_row(run_id).result_sha256


@pytest.mark.django_db(transaction=True)
def test_result_gone_from_storage_is_410(unlimited: Persona) -> None:
    run_id = accepted(unlimited.client, body())["run_id"]
    assert execute(run_id) == "completed"
    results.results_storage().delete(run_row(run_id).result_key)
    assert_problem(unlimited.client.get(f"/v1/runs/{run_id}/result"), 410, "RESULT_EXPIRED")


@pytest.mark.django_db(transaction=True)
def test_failed_run_result_is_run_terminal_and_charged_the_minimum_fee(unlimited: Persona) -> None:
    run_id = accepted(unlimited.client, body(inputs=DIAGNOSTIC_FAIL, max_cost_usd="0.0500"))["run_id"]
    assert execute(run_id) == "failed:PACK_FAILED"
    problem = assert_problem(unlimited.client.get(f"/v1/runs/{run_id}/result"), 409, "RUN_TERMINAL")
    assert problem["detail"] == "The run ended FAILED (PACK_FAILED): this run has no result, and never will."
    assert Run.objects.get(pk=run_id).charged_micros == 5_000
    assert balances(unlimited) == (10 * USD - 5_000, 0)
