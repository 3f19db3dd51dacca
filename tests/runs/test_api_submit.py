"""POST /v1/runs (SPEC §4): the receipt, idempotency, every reason code a submit can answer, and their order."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from rest_framework.test import APIClient

from billing.models import LedgerTransaction
from billing.services import ledger_topup, plan_assign
from dpp.models import Tenant
from dpp.money import format_usd
from dpp.services import tenant_set_status
from runs.models import Run
from tests.helpers.api import UUID4_RE, accepted, assert_rate_headers, body, new_key, submit
from tests.helpers.inputs import DECISION_INPUTS, DIAGNOSTIC_OK
from tests.helpers.money import USD, balances, ledger_kinds
from tests.helpers.personas import Persona, make_persona, make_plan, persona_on_plan
from tests.helpers.problems import assert_problem, field_errors

pytestmark = pytest.mark.django_db

RECEIPT_KEYS = {"run_id", "status", "poll", "reservation", "meta"}


def _counts(persona: Persona) -> tuple[int, int]:
    """(runs, ledger transactions other than TOPUP) of the tenant."""
    runs = Run.objects.filter(tenant=persona.tenant).count()
    moves = LedgerTransaction.objects.filter(tenant=persona.tenant).exclude(kind="TOPUP").count()
    return runs, moves


def assert_nothing_created(persona: Persona, before: tuple[int, int] = (0, 0)) -> None:
    assert _counts(persona) == before


# --- the receipt -------------------------------------------------------------------------------------------


def test_receipt_shape_headers_run_row_and_reservation(unlimited: Persona) -> None:
    response = submit(unlimited.client, body(max_cost_usd="0.0500", timebox_sec=30, trace_id="trace-receipt-1"))
    assert response.status_code == 202, response.content
    receipt = response.json()
    assert receipt.keys() == RECEIPT_KEYS
    run_id = receipt["run_id"]
    assert UUID4_RE.fullmatch(run_id)
    assert receipt["status"] == "QUEUED"
    assert receipt["poll"] == {"href": f"/v1/runs/{run_id}", "recommended_interval_ms": 1500, "max_wait_sec": 30}
    assert response["Location"] == receipt["poll"]["href"]
    assert receipt["reservation"] == {"max_cost_usd": "0.0500", "minimum_fee_usd": "0.0050", "currency": "USD"}
    assert receipt["meta"].keys() == {"created_at", "trace_id", "profile_version"}
    assert receipt["meta"]["trace_id"] == "trace-receipt-1"
    assert receipt["meta"]["profile_version"] == "diagnostic@1.0.0"
    created_at = datetime.fromisoformat(receipt["meta"]["created_at"])
    assert created_at.utcoffset() is not None
    assert response["X-DPP-Cost-Reserved"] == "0.0500"
    assert response["X-DPP-Cost-Minimum-Fee"] == "0.0050"
    assert "X-DPP-Cost-Actual" not in response
    assert "Idempotent-Replayed" not in response
    run = Run.objects.get(pk=run_id)
    assert (run.status, run.money_state, run.reserved_micros, run.minimum_fee_micros) == (
        "QUEUED",
        "RESERVED",
        50_000,
        5_000,
    )
    assert run.created_at == created_at
    assert run.timebox_sec == 30
    assert ledger_kinds(run_id) == ["RESERVE"]
    assert balances(unlimited) == (10 * USD - 50_000, 50_000)


def test_default_timebox_is_90_and_the_trace_id_is_the_requests(unlimited: Persona) -> None:
    response = submit(unlimited.client, body(), key=new_key())
    receipt = response.json()
    assert receipt["poll"]["max_wait_sec"] == 90
    assert receipt["meta"]["trace_id"] == response["X-Trace-Id"]
    header_traced = submit(unlimited.client, HTTP_X_TRACE_ID="from-the-header")
    assert header_traced.json()["meta"]["trace_id"] == "from-the-header"


@pytest.mark.parametrize(
    ("max_cost", "minimum_fee"),
    [
        ("0.0030", "0.0030"),  # never more than reserved
        ("0.0500", "0.0050"),  # floor 0.0050
        ("1.0000", "0.0200"),  # 2 %
        ("1.2345", "0.0247"),  # 2 % rounded up to 0.0001
        ("5.0000", "0.1000"),  # ceiling 0.1000
        ("9.0000", "0.1000"),
    ],
)
def test_minimum_fee_in_receipt_and_headers(unlimited: Persona, max_cost: str, minimum_fee: str) -> None:
    response = submit(unlimited.client, body(max_cost_usd=max_cost))
    assert response.status_code == 202, response.content
    assert response.json()["reservation"]["minimum_fee_usd"] == minimum_fee
    assert response["X-DPP-Cost-Minimum-Fee"] == minimum_fee
    assert response["X-DPP-Cost-Reserved"] == max_cost


def test_largest_reservation_is_accepted() -> None:
    rich = make_persona(plan="unlimited", credit_micros=10_001 * USD)
    receipt = accepted(rich.client, body(max_cost_usd="10000.0000"))
    assert receipt["reservation"]["max_cost_usd"] == "10000.0000"
    assert balances(rich) == (USD, 10_000 * USD)


# --- idempotency -------------------------------------------------------------------------------------------


def test_replay_returns_the_identical_receipt(unlimited: Persona) -> None:
    key = new_key()
    first = submit(unlimited.client, body(), key=key)
    again = submit(unlimited.client, body(), key=key)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    for header in ("Location", "X-DPP-Cost-Reserved", "X-DPP-Cost-Minimum-Fee"):
        assert again[header] == first[header]
    assert _counts(unlimited) == (1, 1)
    assert balances(unlimited) == (10 * USD - 50_000, 50_000)


def test_trace_id_is_left_out_of_the_payload_hash(unlimited: Persona) -> None:
    key = new_key()
    first = accepted(unlimited.client, body(trace_id="trace-one"), key=key)
    response = submit(unlimited.client, body(trace_id="trace-two"), key=key)
    assert response.status_code == 202
    assert response["Idempotent-Replayed"] == "true"
    assert response.json() == first
    assert response.json()["meta"]["trace_id"] == "trace-one"  # the original receipt
    without = submit(unlimited.client, body(), key=key)
    assert without.status_code == 202
    assert without["Idempotent-Replayed"] == "true"
    assert _counts(unlimited) == (1, 1)


def test_the_hash_is_canonical_json_key_order_and_whitespace_do_not_matter(unlimited: Persona) -> None:
    key = new_key()
    compact = (
        '{"pack_type":"diagnostic","inputs":{"sleep_ms":0,"cost_usd":"0.0300","outcome":"succeed"},'
        '"reservation":{"max_cost_usd":"0.0500"}}'
    )
    spaced = (
        '{ "reservation": { "max_cost_usd": "0.0500" },\n  "inputs": {"outcome": "succeed", "cost_usd": "0.0300",'
        ' "sleep_ms": 0}, "pack_type": "diagnostic" }'
    )
    first = submit(unlimited.client, key=key, raw=compact)
    again = submit(unlimited.client, key=key, raw=spaced)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["run_id"] == first.json()["run_id"]


def test_same_key_other_payload_is_422(unlimited: Persona) -> None:
    key = new_key()
    first = accepted(unlimited.client, body(max_cost_usd="0.0500"), key=key)
    problem = assert_problem(
        submit(unlimited.client, body(max_cost_usd="0.0600"), key=key), 422, "IDEMPOTENCY_KEY_REUSED"
    )
    assert first["run_id"] in problem["detail"]
    assert _counts(unlimited) == (1, 1)
    assert balances(unlimited) == (10 * USD - 50_000, 50_000)


def test_keys_are_scoped_to_the_tenant(unlimited: Persona) -> None:
    second = make_persona(plan="unlimited")
    key = new_key()
    mine = accepted(unlimited.client, body(), key=key)
    response = submit(second.client, body(), key=key)
    assert response.status_code == 202
    assert "Idempotent-Replayed" not in response
    assert response.json()["run_id"] != mine["run_id"]
    assert _counts(second) == (1, 1)


def test_a_rejected_submit_stores_nothing_under_its_key() -> None:
    poor = make_persona(plan="unlimited", credit_micros=10_000)
    key = new_key()
    assert_problem(submit(poor.client, body(max_cost_usd="0.0500"), key=key), 402, "INSUFFICIENT_FUNDS")
    assert_nothing_created(poor)
    ledger_topup(tenant=poor.tenant, amount_micros=USD, actor="test", reason="top up")
    response = submit(poor.client, body(max_cost_usd="0.0500"), key=key)
    assert response.status_code == 202
    assert "Idempotent-Replayed" not in response
    assert _counts(poor) == (1, 1)


# --- 400 ---------------------------------------------------------------------------------------------------


def test_malformed_json(unlimited: Persona) -> None:
    assert_problem(submit(unlimited.client, raw='{"pack_type": '), 400, "MALFORMED_JSON")
    assert_nothing_created(unlimited)


@pytest.mark.parametrize(
    ("cost", "reason"),
    [(0.03, "INVALID_MONEY"), (3, "INVALID_MONEY"), ("0.03000", "INVALID_MONEY_SCALE"), ("$1", "INVALID_MONEY")],
)
def test_money_in_a_packs_inputs_follows_the_money_rules(unlimited: Persona, cost: Any, reason: str) -> None:
    inputs = {"sleep_ms": 0, "cost_usd": cost, "outcome": "succeed"}
    problem = assert_problem(submit(unlimited.client, body(inputs=inputs)), 422, reason)
    assert problem["errors"][0]["field"] == "inputs.cost_usd"
    assert_nothing_created(unlimited)


def test_an_unpaired_surrogate_in_the_inputs_is_malformed_not_a_500(unlimited: Persona) -> None:
    raw = json.dumps(body("decision")).replace('"question": "', '"question": "\\ud800', 1)
    assert "\\ud800" in raw
    assert_problem(submit(unlimited.client, raw=raw), 400, "MALFORMED_JSON")
    assert_nothing_created(unlimited)


def test_an_empty_body_is_malformed_json(unlimited: Persona) -> None:
    problem = assert_problem(submit(unlimited.client, raw=""), 400, "MALFORMED_JSON")
    assert "empty" in problem["detail"]
    assert_nothing_created(unlimited)


def test_inputs_nested_too_deeply_are_malformed_not_a_500(unlimited: Persona) -> None:
    # Within the size limit, deep enough to exhaust Python's recursion in json or in the schema validation.
    deep = '{"pack_type": "decision", "inputs": {"question": ' + "[" * 50_000 + "]" * 50_000 + "}}"
    assert_problem(submit(unlimited.client, raw=deep), 400, "MALFORMED_JSON")
    assert_nothing_created(unlimited)


def test_idempotency_key_missing(unlimited: Persona) -> None:
    assert_problem(submit(unlimited.client, body(), key=""), 400, "IDEMPOTENCY_KEY_MISSING")
    assert_nothing_created(unlimited)


@pytest.mark.parametrize(
    "key",
    ["short77", "k" * 65, "has space1", "semi;colon", "slash/key/1", "ünïcödé-key", "key+plus+1", "key=equals"],
)
def test_idempotency_key_invalid(unlimited: Persona, key: str) -> None:
    response = unlimited.client.post(
        "/v1/runs", data=json.dumps(body()), content_type="application/json", HTTP_IDEMPOTENCY_KEY=key
    )
    assert_problem(response, 400, "IDEMPOTENCY_KEY_INVALID")
    assert_nothing_created(unlimited)


@pytest.mark.parametrize("key", ["k" * 8, "K" * 64, "a.b:c_d-e", "01234567"])
def test_idempotency_key_bounds_and_alphabet_accepted(unlimited: Persona, key: str) -> None:
    assert submit(unlimited.client, body(), key=key).status_code == 202


# --- 401 / 402 / 403 ---------------------------------------------------------------------------------------


def test_unauthenticated_submit_and_list(anon_client: APIClient) -> None:
    for response in (submit(anon_client, body()), anon_client.get("/v1/runs")):
        assert_problem(response, 401, "UNAUTHENTICATED")
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert_rate_headers(response, "anonymous", 60)  # counted against the client's address
    bad_key = APIClient()
    bad_key.credentials(HTTP_AUTHORIZATION="Bearer dpp_live_nope_00000000")
    assert_problem(submit(bad_key, body()), 401, "UNAUTHENTICATED")
    assert Run.objects.count() == 0


def test_insufficient_funds_creates_no_run_and_no_ledger_row() -> None:
    poor = make_persona(plan="unlimited", credit_micros=10_000)
    transactions_before = LedgerTransaction.objects.count()
    problem = assert_problem(submit(poor.client, body(max_cost_usd="0.0500")), 402, "INSUFFICIENT_FUNDS")
    assert problem["available_usd"] == "0.0100"
    assert problem["required_usd"] == "0.0500"
    assert_nothing_created(poor)
    assert LedgerTransaction.objects.count() == transactions_before
    assert balances(poor) == (10_000, 0)


def test_insufficient_funds_counts_what_is_already_held() -> None:
    persona = make_persona(plan="unlimited", credit_micros=80_000)
    accepted(persona.client, body(max_cost_usd="0.0500"))
    problem = assert_problem(submit(persona.client, body(max_cost_usd="0.0500")), 402, "INSUFFICIENT_FUNDS")
    assert (problem["available_usd"], problem["required_usd"]) == ("0.0300", "0.0500")
    assert _counts(persona) == (1, 1)


def test_exact_balance_is_enough() -> None:
    persona = make_persona(plan="unlimited", credit_micros=50_000)
    accepted(persona.client, body(max_cost_usd="0.0500"))
    assert balances(persona) == (0, 50_000)


def test_pack_not_allowed_on_starter(owner: Persona) -> None:
    problem = assert_problem(submit(owner.client, body("diagnostic")), 403, "PACK_NOT_ALLOWED")
    assert "starter" in problem["detail"]
    assert_nothing_created(owner)


def test_tenant_suspended(owner: Persona) -> None:
    assert tenant_set_status(tenant=owner.tenant, status=Tenant.Status.SUSPENDED, actor="test")
    refused = submit(owner.client, body("decision", max_cost_usd="0.0100"))
    assert_problem(refused, 403, "TENANT_SUSPENDED")
    assert_rate_headers(refused, "anonymous", 60)  # refused before the plan's limits apply: counted by address
    assert_problem(owner.client.get("/v1/runs"), 403, "TENANT_SUSPENDED")
    assert_nothing_created(owner)


# --- 413 / 415 ---------------------------------------------------------------------------------------------


def test_payload_too_large(unlimited: Persona) -> None:
    payload = body(inputs={**DIAGNOSTIC_OK, "pad": "x" * (256 * 1024)})
    assert_problem(submit(unlimited.client, payload), 413, "PAYLOAD_TOO_LARGE")
    assert_nothing_created(unlimited)


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", "hello"),
        ("application/x-www-form-urlencoded", "pack_type=diagnostic"),
        ("application/xml", "<a/>"),
    ],
)
def test_unsupported_media_type(unlimited: Persona, content_type: str, data: str) -> None:
    response = unlimited.client.post("/v1/runs", data=data, content_type=content_type, HTTP_IDEMPOTENCY_KEY=new_key())
    assert content_type in assert_problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")["detail"]
    assert_nothing_created(unlimited)


@pytest.mark.parametrize("coding", ["gzip", "br", "deflate, gzip"])
def test_a_compressed_body_is_unsupported_media_type(unlimited: Persona, coding: str) -> None:
    """RFC 9110 §8.4.1: a content coding the server does not take is 415, whatever the bytes (here plain JSON)."""
    response = submit(unlimited.client, HTTP_CONTENT_ENCODING=coding)
    problem = assert_problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert f"Content-Encoding {coding!r} is not accepted" in problem["detail"]
    assert_nothing_created(unlimited)


def test_identity_content_encoding_is_plain(unlimited: Persona) -> None:
    response = submit(unlimited.client, HTTP_CONTENT_ENCODING="identity")
    assert response.status_code == 202


# --- 422: body shape ---------------------------------------------------------------------------------------


_WITH_META = '{{"pack_type": "diagnostic", "inputs": {{}}, "reservation": {{"max_cost_usd": "1.0000"}}, "meta": {}}}'


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("[]", "body"),
        ('"a string"', "body"),
        ("null", "body"),
        ("42", "body"),
        ('{"pack_type": "diagnostic", "inputs": {}, "reservation": {"max_cost_usd": "1.0000"}, "extra": 1}', "extra"),
        ('{"inputs": {}, "reservation": {"max_cost_usd": "1.0000"}}', "pack_type"),
        ('{"pack_type": 7, "inputs": {}, "reservation": {"max_cost_usd": "1.0000"}}', "pack_type"),
        ('{"pack_type": null, "inputs": {}, "reservation": {"max_cost_usd": "1.0000"}}', "pack_type"),
        ('{"pack_type": "diagnostic", "reservation": {"max_cost_usd": "1.0000"}}', "inputs"),
        ('{"pack_type": "diagnostic", "inputs": {}}', "reservation.max_cost_usd"),
        # Not an object: said so, not "reservation.max_cost_usd: is required" (a reservation without it).
        ('{"pack_type": "diagnostic", "inputs": {}, "reservation": "1.0000"}', "reservation"),
        ('{"pack_type": "diagnostic", "inputs": {}, "reservation": null}', "reservation"),
        ('{"pack_type": "diagnostic", "inputs": {}, "reservation": ["1.0000"]}', "reservation"),
        ('{"pack_type": "diagnostic", "inputs": {}, "reservation": {}}', "reservation.max_cost_usd"),
        (
            '{"pack_type": "diagnostic", "inputs": {}, "reservation": {"max_cost_usd": "1.0000", "cap": 1}}',
            "reservation.cap",
        ),
        ('{"pack_type": "diagnostic", "inputs": {}, "reservation": {"max_cost_usd": "1.0000"}, "meta": []}', "meta"),
        (_WITH_META.format('"trace-1"'), "meta"),
        (_WITH_META.format("null"), "meta"),
        # Strict like the top level and reservation (docs/decisions.md): a misspelt trace_id must not vanish.
        (_WITH_META.format('{"traceId": "trace-1"}'), "meta.traceId"),
        (_WITH_META.format('{"trace_id": "trace-1", "client": "x"}'), "meta.client"),
        (_WITH_META.format('{"trace_id": "has space"}'), "meta.trace_id"),
        (_WITH_META.format('{"trace_id": "' + "t" * 65 + '"}'), "meta.trace_id"),
        (_WITH_META.format('{"trace_id": 12}'), "meta.trace_id"),
    ],
)
def test_bad_body_shapes(unlimited: Persona, raw: str, field: str) -> None:
    problem = assert_problem(submit(unlimited.client, raw=raw), 422, "VALIDATION_ERROR")
    assert field_errors(problem) == [field]
    assert problem["errors"][0]["message"]
    assert_nothing_created(unlimited)


@pytest.mark.parametrize("raw", ['"0.05"', "null", "[]", "7"])
def test_reservation_not_an_object_says_so(unlimited: Persona, raw: str) -> None:
    payload = f'{{"pack_type": "diagnostic", "inputs": {{}}, "reservation": {raw}}}'
    problem = assert_problem(submit(unlimited.client, raw=payload), 422, "VALIDATION_ERROR")
    assert problem["errors"] == [{"field": "reservation", "message": "must be an object"}]
    assert problem["detail"] == "reservation: must be an object"
    assert_nothing_created(unlimited)


@pytest.mark.parametrize("inputs", ["0.05", None, 7])
def test_inputs_not_an_object_is_refused_by_the_packs_schema(unlimited: Persona, inputs: Any) -> None:
    payload = body()
    payload["inputs"] = inputs  # body(inputs=None) would mean the default inputs
    problem = assert_problem(submit(unlimited.client, payload), 422, "INVALID_INPUTS")
    assert problem["errors"] == [{"field": "inputs", "message": "must be of type object"}]
    assert_nothing_created(unlimited)


def test_meta_with_only_a_trace_id_is_accepted(unlimited: Persona) -> None:
    receipt = accepted(unlimited.client, body(trace_id="trace-meta"))
    assert receipt["meta"]["trace_id"] == "trace-meta"
    payload = body()
    payload["meta"] = {}
    assert accepted(unlimited.client, payload)["meta"]["trace_id"]


@pytest.mark.parametrize("timebox", [0, 91, -1, "10", 1.5, 91.0, 0.0, True, None])
def test_bad_timebox(unlimited: Persona, timebox: Any) -> None:
    payload = body()
    payload["reservation"]["timebox_sec"] = timebox
    problem = assert_problem(submit(unlimited.client, payload), 422, "VALIDATION_ERROR")
    assert field_errors(problem) == ["reservation.timebox_sec"]
    assert_nothing_created(unlimited)


@pytest.mark.parametrize("timebox", [1, 90, 30.0])
def test_timebox_bounds_accepted(unlimited: Persona, timebox: int | float) -> None:
    receipt = accepted(unlimited.client, body(timebox_sec=timebox))
    assert receipt["poll"]["max_wait_sec"] == timebox
    assert isinstance(receipt["poll"]["max_wait_sec"], int)  # 30.0 is JSON Schema's integer 30, stored as 30


# --- 422: money --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount",
    [0.05, 1, None, True, "abc", "0", "0.0000", "0.0", "10000.0001", "10001", "-1.0000", "-0.0500", "", " 1.0000",
     "1.0000 ", "1e3", "1,0000", ".5000", "1.", "0x10", "١.٠٠٠٠"],
)  # fmt: skip
def test_invalid_money(unlimited: Persona, amount: Any) -> None:
    problem = assert_problem(submit(unlimited.client, body(max_cost_usd=amount)), 422, "INVALID_MONEY")
    assert field_errors(problem) == ["reservation.max_cost_usd"]
    assert_nothing_created(unlimited)


@pytest.mark.parametrize("amount", ["0.00001", "1.12345", "0.05000"])
def test_invalid_money_scale(unlimited: Persona, amount: str) -> None:
    problem = assert_problem(submit(unlimited.client, body(max_cost_usd=amount)), 422, "INVALID_MONEY_SCALE")
    assert field_errors(problem) == ["reservation.max_cost_usd"]
    assert_nothing_created(unlimited)


@pytest.mark.parametrize(("amount", "micros"), [("0.0001", 100), ("1", USD), ("0.5", 500_000), ("2.25", 2_250_000)])
def test_money_with_fewer_decimals_is_accepted(unlimited: Persona, amount: str, micros: int) -> None:
    receipt = accepted(unlimited.client, body(max_cost_usd=amount))
    assert Run.objects.get(pk=receipt["run_id"]).reserved_micros == micros


# --- 422: pack, inputs, price floor, plan ------------------------------------------------------------------


@pytest.mark.parametrize("pack_type", ["nope", "", "DECISION", "decision "])
def test_unknown_pack_type(unlimited: Persona, pack_type: str) -> None:
    problem = assert_problem(submit(unlimited.client, body(pack_type, inputs={})), 422, "UNKNOWN_PACK_TYPE")
    assert field_errors(problem) == ["pack_type"]
    assert_nothing_created(unlimited)


@pytest.mark.parametrize(
    ("pack_type", "inputs", "fields"),
    [
        ("decision", {k: v for k, v in DECISION_INPUTS.items() if k != "scores"}, ["inputs.scores"]),
        ("decision", {**DECISION_INPUTS, "options": ["A"]}, ["inputs.options"]),
        (
            "decision",
            {**DECISION_INPUTS, "criteria": [{"name": "price", "weight": 0, "direction": "cost"}]},
            ["inputs.criteria[0].weight"],
        ),
        ("decision", {**DECISION_INPUTS, "method": "vibes"}, ["inputs.method"]),
        ("decision", [], ["inputs"]),
        ("diagnostic", {"outcome": "maybe"}, ["inputs.outcome"]),
        ("diagnostic", {"sleep_ms": -1, "outcome": "maybe"}, ["inputs.outcome", "inputs.sleep_ms"]),
        ("diagnostic", {"surprise": 1}, ["inputs"]),
        ("url", {"url": "ftp://example.com/"}, ["inputs.url"]),
        ("url", {"url": "https://127.0.0.1/"}, ["inputs.url"]),
        ("url", {}, ["inputs.url"]),
    ],
)
def test_invalid_inputs_name_their_fields(unlimited: Persona, pack_type: str, inputs: Any, fields: list[str]) -> None:
    problem = assert_problem(submit(unlimited.client, body(pack_type, inputs)), 422, "INVALID_INPUTS")
    assert field_errors(problem) == fields
    assert all(error["message"] for error in problem["errors"])
    assert_nothing_created(unlimited)


def _with_nul(where: str) -> dict[str, Any]:
    inputs = json.loads(json.dumps(DECISION_INPUTS))
    if where == "question":
        inputs["question"] = "Which\x00 supplier?"
    elif where == "option":
        inputs["options"][0] = "A\x00"
        inputs["scores"]["A\x00"] = inputs["scores"].pop("A")
    else:  # a member name only
        inputs["scores"]["A"]["pri\x00ce"] = 1
    return inputs


@pytest.mark.parametrize(
    ("where", "fields"),
    [
        ("question", ["inputs.question"]),
        ("option", ["inputs.options[0]", "inputs.scores.A\\u0000"]),
        ("member", ["inputs.scores.A.pri\\u0000ce"]),
    ],
)
def test_a_nul_character_in_inputs_is_refused_not_a_500(unlimited: Persona, where: str, fields: list[str]) -> None:
    """JSON allows \\u0000 in a string; PostgreSQL's jsonb cannot store it: refused at submit, naming the field."""
    payload = body("decision", _with_nul(where))
    problem = assert_problem(submit(unlimited.client, payload), 422, "INVALID_INPUTS")
    assert fields == [error["field"] for error in problem["errors"] if "U+0000" in error["message"]]
    assert_nothing_created(unlimited)


def test_max_cost_over_plan_limit(owner: Persona) -> None:
    problem = assert_problem(
        submit(owner.client, body("decision", max_cost_usd="1.0001")), 422, "MAX_COST_OVER_PLAN_LIMIT"
    )
    assert field_errors(problem) == ["reservation.max_cost_usd"]
    assert "1.0000" in problem["detail"]
    assert_nothing_created(owner)
    accepted(owner.client, body("decision", max_cost_usd="1.0000"))


def _decision(options: int, criteria: int) -> dict[str, Any]:
    names = [f"o{i}" for i in range(options)]
    crits = [{"name": f"c{j}", "weight": 1, "direction": "benefit"} for j in range(criteria)]
    scores = {name: {c["name"]: i + j for j, c in enumerate(crits)} for i, name in enumerate(names)}
    return {"question": "q", "options": names, "criteria": crits, "scores": scores}


@pytest.mark.parametrize(
    ("options", "criteria", "floor"),
    [(2, 1, "0.0052"), (3, 2, "0.0056"), (10, 5, "0.0100"), (50, 20, "0.1050")],
)
def test_decision_price_floor(owner: Persona, options: int, criteria: int, floor: str) -> None:
    floor_micros = 5_000 + 100 * options * criteria
    below = format_usd(floor_micros - 100)
    inputs = _decision(options, criteria)
    problem = assert_problem(
        submit(owner.client, body("decision", inputs, max_cost_usd=below)), 422, "MAX_COST_TOO_LOW"
    )
    assert field_errors(problem) == ["reservation.max_cost_usd"]
    assert floor in problem["detail"]
    assert_nothing_created(owner)
    receipt = accepted(owner.client, body("decision", inputs, max_cost_usd=floor))
    assert receipt["reservation"]["max_cost_usd"] == floor


def test_url_price_floor(owner: Persona) -> None:
    inputs = {"url": "https://example.com/"}
    problem = assert_problem(submit(owner.client, body("url", inputs, max_cost_usd="0.0020")), 422, "MAX_COST_TOO_LOW")
    assert "0.0021" in problem["detail"]
    assert_nothing_created(owner)
    accepted(owner.client, body("url", inputs, max_cost_usd="0.0021"))


def test_diagnostic_has_no_price_floor(unlimited: Persona) -> None:
    accepted(unlimited.client, body(max_cost_usd="0.0001"))


# --- 429 CONCURRENCY_LIMITED -------------------------------------------------------------------------------


def test_concurrency_limited() -> None:
    persona = persona_on_plan(make_plan("two-at-once", max_concurrent_runs=2))
    first = accepted(persona.client, body())
    accepted(persona.client, body())
    held = balances(persona)
    response = submit(persona.client, body())
    problem = assert_problem(response, 429, "CONCURRENCY_LIMITED")
    assert "2" in problem["detail"]
    assert int(response["Retry-After"]) >= 1
    assert _counts(persona) == (2, 2)
    assert balances(persona) == held
    assert persona.client.post(f"/v1/runs/{first['run_id']}/cancel").status_code == 200
    accepted(persona.client, body())


# --- validation order (SPEC §4, runs.submission) -----------------------------------------------------------


def test_order_auth_before_everything(anon_client: APIClient) -> None:
    assert_problem(submit(anon_client, key="", raw="{"), 401, "UNAUTHENTICATED")


def test_order_idempotency_key_before_body(unlimited: Persona) -> None:
    assert_problem(submit(unlimited.client, key="", raw="{"), 400, "IDEMPOTENCY_KEY_MISSING")
    assert_problem(submit(unlimited.client, key="bad key", raw="{"), 400, "IDEMPOTENCY_KEY_INVALID")
    response = unlimited.client.post("/v1/runs", data="x=1", content_type="text/plain", HTTP_IDEMPOTENCY_KEY="bad")
    assert_problem(response, 400, "IDEMPOTENCY_KEY_INVALID")
    assert_problem(submit(unlimited.client, key="short", raw="[]"), 400, "IDEMPOTENCY_KEY_INVALID")


def test_order_replay_before_money_and_pack_checks() -> None:
    """A replay answers the original receipt even when the same request would now be refused."""
    persona = make_persona(plan="unlimited", credit_micros=50_000)
    key = new_key()
    receipt = accepted(persona.client, body(max_cost_usd="0.0500"), key=key)
    assert balances(persona) == (0, 50_000)
    replay = submit(persona.client, body(max_cost_usd="0.0500"), key=key)
    assert replay.status_code == 202
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == receipt
    # Now on starter: the diagnostic pack is not allowed any more; the replay still answers.
    plan_assign(tenant=persona.tenant, plan_code="starter", actor="test", reason="downgrade")
    replay = submit(persona.client, body(max_cost_usd="0.0500"), key=key)
    assert replay.status_code == 202
    assert replay.json() == receipt
    assert _counts(persona) == (1, 1)


def test_order_shape_before_money(unlimited: Persona) -> None:
    payload = {**body(max_cost_usd=0.05), "extra": True}
    assert_problem(submit(unlimited.client, payload), 422, "VALIDATION_ERROR")


def test_order_money_before_timebox_and_pack(unlimited: Persona) -> None:
    payload = body("nope", {}, max_cost_usd=0.05, timebox_sec=0)
    assert_problem(submit(unlimited.client, payload), 422, "INVALID_MONEY")
    payload = body("nope", {}, max_cost_usd="0.00001", timebox_sec=0)
    assert_problem(submit(unlimited.client, payload), 422, "INVALID_MONEY_SCALE")


def test_order_timebox_before_pack(unlimited: Persona) -> None:
    assert_problem(submit(unlimited.client, body("nope", {}, timebox_sec=0)), 422, "VALIDATION_ERROR")


def test_order_pack_before_inputs(unlimited: Persona) -> None:
    assert_problem(submit(unlimited.client, body("nope", {"bad": []})), 422, "UNKNOWN_PACK_TYPE")


def test_order_inputs_before_price_floor(owner: Persona) -> None:
    payload = body("decision", {**DECISION_INPUTS, "options": ["A"]}, max_cost_usd="0.0001")
    assert_problem(submit(owner.client, payload), 422, "INVALID_INPUTS")


def test_order_price_floor_before_plan(owner: Persona) -> None:
    # starter does not include diagnostic, but decision's floor is checked before the plan looks at anything.
    assert_problem(submit(owner.client, body("decision", max_cost_usd="0.0055")), 422, "MAX_COST_TOO_LOW")
    only_diagnostic = persona_on_plan(make_plan("diag-only", pack_max_cost_micros={"diagnostic": USD}))
    payload = body("url", {"url": "https://example.com/"}, max_cost_usd="0.0020")
    assert_problem(submit(only_diagnostic.client, payload), 422, "MAX_COST_TOO_LOW")
    payload = body("url", {"url": "https://example.com/"}, max_cost_usd="0.0021")
    assert_problem(submit(only_diagnostic.client, payload), 403, "PACK_NOT_ALLOWED")
    cheap_decisions = persona_on_plan(make_plan("cheap-decisions", pack_max_cost_micros={"decision": 1_000}))
    assert_problem(submit(cheap_decisions.client, body("decision", max_cost_usd="0.0050")), 422, "MAX_COST_TOO_LOW")
    assert_problem(
        submit(cheap_decisions.client, body("decision", max_cost_usd="0.0056")), 422, "MAX_COST_OVER_PLAN_LIMIT"
    )


def test_order_plan_before_funds() -> None:
    poor = make_persona(plan="starter", credit_micros=0)
    assert_problem(submit(poor.client, body("diagnostic")), 403, "PACK_NOT_ALLOWED")
    assert_problem(submit(poor.client, body("decision", max_cost_usd="1.5000")), 422, "MAX_COST_OVER_PLAN_LIMIT")
    assert_problem(submit(poor.client, body("decision", max_cost_usd="0.0100")), 402, "INSUFFICIENT_FUNDS")
