"""The Idempotency-Key per draft-ietf-httpapi-idempotency-key-header (SPEC §4 "Idempotency"): the fingerprint is
of the request with its defaults applied and without `meta`, the sf-String form of the header is the same key,
another payload is 422, and runs stored with the legacy hash of the raw body still replay."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import pytest

from billing.selectors import plan_get
from runs.models import Run
from runs.services import run_accept
from runs.submission import legacy_request_hash, submission_parse
from tests.helpers.api import accepted, body, new_key, submit
from tests.helpers.inputs import DECISION_INPUTS
from tests.helpers.money import USD, balances
from tests.helpers.personas import Persona
from tests.helpers.problems import assert_problem

pytestmark = pytest.mark.django_db


def _runs(persona: Persona) -> int:
    return Run.objects.filter(tenant=persona.tenant).count()


def test_a_generated_client_and_a_hand_written_one_send_one_payload(unlimited: Persona) -> None:
    """The generated client sends every schema default (timebox 90, the pack's input defaults); a hand-written
    retry omits them and spells the money shorter: the same payload."""
    key = new_key()
    hand = {"pack_type": "decision", "inputs": DECISION_INPUTS, "reservation": {"max_cost_usd": "0.01"}}
    generated = {
        "pack_type": "decision",
        "inputs": {**DECISION_INPUTS, "method": "weighted_sum"},
        "reservation": {"max_cost_usd": "0.0100", "timebox_sec": 90},
        "meta": {"trace_id": "generated-client"},
    }
    first = accepted(unlimited.client, generated, key=key)
    again = submit(unlimited.client, hand, key=key)
    assert again.status_code == 202, again.content
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first
    assert _runs(unlimited) == 1
    assert balances(unlimited) == (10 * USD - 10_000, 10_000)


def test_money_inputs_are_compared_in_their_4_decimal_form(unlimited: Persona) -> None:
    key = new_key()
    accepted(unlimited.client, body(inputs={"cost_usd": "0.03"}), key=key)
    again = submit(unlimited.client, body(inputs={"cost_usd": "0.0300", "sleep_ms": 0, "outcome": "succeed"}), key=key)
    assert again.status_code == 202
    assert again["Idempotent-Replayed"] == "true"
    assert _runs(unlimited) == 1


def test_another_timebox_than_the_default_is_another_payload(unlimited: Persona) -> None:
    key = new_key()
    accepted(unlimited.client, body(), key=key)
    assert_problem(submit(unlimited.client, body(timebox_sec=89), key=key), 422, "IDEMPOTENCY_KEY_REUSED")
    assert _runs(unlimited) == 1


def test_an_integral_number_timebox_is_the_same_payload_as_the_integer(unlimited: Persona) -> None:
    """JSON Schema's integer 30 may arrive as 30.0 (a generated client, a JSON library): one payload."""
    key = new_key()
    accepted(unlimited.client, body(timebox_sec=30.0), key=key)
    again = submit(unlimited.client, body(timebox_sec=30), key=key)
    assert again.status_code == 202, again.content
    assert again["Idempotent-Replayed"] == "true"
    assert _runs(unlimited) == 1


def test_the_stored_fingerprint_is_versioned(unlimited: Persona) -> None:
    accepted(unlimited.client, body())
    stored = Run.objects.get(tenant=unlimited.tenant).request_hash
    assert stored.startswith("v2:")
    assert len(stored) == 46  # fits the 64-character column beside the legacy 64 hex digits


@pytest.mark.parametrize(("first", "second"), [("bare", "sf"), ("sf", "bare")])
def test_the_sf_string_form_of_the_header_is_the_same_key(unlimited: Persona, first: str, second: str) -> None:
    key = new_key()
    forms = {"bare": key, "sf": f'"{key}"'}
    receipt = accepted(unlimited.client, body(), key=forms[first])
    again = submit(unlimited.client, body(), key=forms[second])
    assert again.status_code == 202, again.content
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == receipt
    assert Run.objects.get(tenant=unlimited.tenant).idempotency_key == key  # stored without its quotes


@pytest.mark.parametrize("header", ['"short"', '""', '"', '"has space1"', '"key-\\"quoted\\"-1"', '"unclosed-key'])
def test_an_sf_string_whose_content_is_no_key_is_invalid(unlimited: Persona, header: str) -> None:
    response = unlimited.client.post(
        "/v1/runs", data=json.dumps(body()), content_type="application/json", HTTP_IDEMPOTENCY_KEY=header
    )
    assert_problem(response, 400, "IDEMPOTENCY_KEY_INVALID")
    assert _runs(unlimited) == 0


@pytest.mark.parametrize(
    "invalid",
    [
        {"pack_type": "diagnostic", "inputs": {}, "reservation": {"max_cost_usd": 0.05}},  # money as a number
        {"pack_type": "nope", "inputs": {}, "reservation": {"max_cost_usd": "0.0500"}},
        {"pack_type": "diagnostic", "inputs": {"outcome": "explode"}, "reservation": {"max_cost_usd": "0.0500"}},
    ],
)
def test_an_invalid_body_under_a_used_key_is_another_payload(unlimited: Persona, invalid: dict[str, Any]) -> None:
    """Not the validation error: under a key whose run exists, the stored payload was valid and this is not it."""
    key = new_key()
    first = accepted(unlimited.client, body(), key=key)
    problem = assert_problem(submit(unlimited.client, invalid, key=key), 422, "IDEMPOTENCY_KEY_REUSED")
    assert first["run_id"] in problem["detail"]
    assert _runs(unlimited) == 1


def _legacy_run(persona: Persona, payload: dict[str, Any], key: str) -> Run:
    """A run as the code before fingerprint v2 accepted it: the legacy hash of its raw body stored."""
    plan = plan_get(tenant_id=persona.tenant.pk)
    submission = submission_parse(body=payload, idempotency_key=key, plan=plan, default_trace_id=uuid.uuid4().hex)
    legacy = dataclasses.replace(submission, request_hash=legacy_request_hash(payload))
    run = run_accept(tenant=persona.tenant, plan=plan, submission=legacy).run
    assert len(run.request_hash) == 64
    assert ":" not in run.request_hash
    return run


def test_a_run_stored_with_the_legacy_hash_still_replays(unlimited: Persona) -> None:
    key = new_key()
    run = _legacy_run(unlimited, body(trace_id="legacy-trace"), key)
    again = submit(unlimited.client, body(), key=key)  # meta.trace_id was left out of the legacy hash too
    assert again.status_code == 202, again.content
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["run_id"] == str(run.pk)
    assert _runs(unlimited) == 1


def test_a_run_stored_with_the_legacy_hash_refuses_another_payload(unlimited: Persona) -> None:
    key = new_key()
    _legacy_run(unlimited, body(), key)
    assert_problem(submit(unlimited.client, body(max_cost_usd="0.0600"), key=key), 422, "IDEMPOTENCY_KEY_REUSED")
    assert_problem(submit(unlimited.client, {"pack_type": 1}, key=key), 422, "IDEMPOTENCY_KEY_REUSED")
    assert _runs(unlimited) == 1
