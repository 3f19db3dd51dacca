"""The OpenAPI document alone is enough to integrate (SPEC §4 OpenAPI): the submit body per pack with that pack's
own input schema, summaries, reason codes with an example each, working example bodies, the declared headers,
the result envelope's schema, a server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from jsonschema import Draft202012Validator

from dpp.http.errors import PROBLEMS
from packs.registry import all_packs
from runs.openapi import pack_request_schemas
from tests.helpers.api import submit
from tests.helpers.personas import Persona, make_persona
from tests.helpers.states import execute

pytestmark = pytest.mark.django_db
PROBLEM = "application/problem+json"
REF = "#/components/schemas/"


@pytest.fixture
def document() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(Client().get("/v1/openapi.json").content)
    return schema


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in document["paths"].items() for method, op in item.items()]


def _validator(document: dict[str, Any], component: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": REF + component, "components": document["components"]})


def test_the_submit_body_is_one_schema_per_pack_discriminated_by_pack_type(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/runs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": REF + "RunSubmitInRequest"}
    submit_schema = document["components"]["schemas"]["RunSubmitInRequest"]
    names = {pack.pack_type: pack.pack_type.capitalize() for pack in all_packs()}
    mapping = {pack_type: f"{REF}{name}RunRequest" for pack_type, name in names.items()}
    assert submit_schema["discriminator"] == {"propertyName": "pack_type", "mapping": mapping}
    assert submit_schema["oneOf"] == [{"$ref": ref} for ref in mapping.values()]
    schemas = document["components"]["schemas"]
    for pack in all_packs():
        name = names[pack.pack_type]
        request = schemas[f"{name}RunRequest"]
        assert request["properties"]["pack_type"] == {"type": "string", "const": pack.pack_type}
        assert request["properties"]["inputs"] == {"$ref": f"{REF}{name}Inputs"}
        assert request["additionalProperties"] is False
        inputs = schemas[f"{name}Inputs"]
        # One source: the pack's own JSON Schema, as the registry has it.
        assert {k: v for k, v in inputs.items() if k != "description"} == {
            k: v for k, v in pack.input_schema.items() if k not in ("$schema", "description")
        }
    for strict in ("ReservationInRequest", "MetaInRequest"):
        assert schemas[strict]["additionalProperties"] is False
    assert schemas["ReservationInRequest"]["properties"]["max_cost_usd"]["examples"] == ["0.0500"]
    components, _ = pack_request_schemas()  # reusable as it is (a quote takes the same body)
    assert {name: schemas[name] for name in components} == components


def test_every_operation_has_a_summary_and_the_trace_request_headers(document: dict[str, Any]) -> None:
    parameters = document["components"]["parameters"]
    for method, path, operation in _operations(document):
        assert operation.get("summary"), (method, path)
        refs = {p.get("$ref") for p in operation["parameters"]}
        for name in ("X-Request-ID", "traceparent", "tracestate"):
            assert f"#/components/parameters/{name}" in refs, (method, path, name)
            assert parameters[name]["in"] == "header"
    assert document["servers"]
    assert all(server["url"] for server in document["servers"])


def test_every_problem_status_lists_its_reason_codes_with_an_example_each(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            codes = response["x-reason-codes"]
            examples = response["content"][PROBLEM]["examples"]
            assert codes, (method, path, status)
            assert list(examples) == codes, (method, path, status)
            for code in codes:
                assert PROBLEMS[code].status == int(status), (method, path, code)
                assert examples[code]["value"]["reason_code"] == code
                _validator(document, "Problem").validate(examples[code]["value"])
    for path in ("/v1/runs", "/v1/quotes"):  # a quote answers the problem the submit of its body would get
        codes = {
            code
            for response in document["paths"][path]["post"]["responses"].values()
            for code in response.get("x-reason-codes", [])
        }
        assert {
            "INVALID_INPUTS",
            "MAX_COST_TOO_LOW",
            "INSUFFICIENT_FUNDS",
            "RATE_LIMITED",
            "CONCURRENCY_LIMITED",
            "KEY_SPEND_LIMIT",
            "MAX_COST_OVER_KEY_LIMIT",
        } <= codes, path


def test_every_webhook_operation_lists_the_403_of_a_key_with_a_parent(document: dict[str, Any]) -> None:
    webhooks = [
        (m, p, op) for m, p, op in _operations(document) if p.startswith(("/v1/webhook-endpoints", "/v1/events"))
    ]
    assert len(webhooks) == 8
    for method, path, operation in webhooks:
        assert operation["responses"]["403"]["x-reason-codes"] == ["FORBIDDEN", "TENANT_SUSPENDED"], (method, path)


@pytest.mark.parametrize(
    ("path", "statuses"), [("/v1/runs/{run_id}", {"200", "304"}), ("/v1/runs/{run_id}/result", {"200", "304"})]
)
def test_conditional_gets_document_etag_and_the_conditional_request_headers(
    document: dict[str, Any], path: str, statuses: set[str]
) -> None:
    operation = document["paths"][path]["get"]
    for status in statuses:
        assert "ETag" in operation["responses"][status]["headers"], status
    names = {p.get("name") for p in operation["parameters"]}
    assert {"If-None-Match", "If-Match"} <= names


def test_every_response_header_the_api_sends_is_declared(document: dict[str, Any]) -> None:
    def headers(path: str, method: str, status: str) -> set[str]:
        return set(document["paths"][path][method]["responses"][status]["headers"])

    common = {"RateLimit", "RateLimit-Policy", "X-Request-ID", "X-Trace-Id", "tracestate"}
    assert {"Location", "X-DPP-Cost-Reserved", "X-DPP-Cost-Minimum-Fee", *common} <= headers("/v1/runs", "post", "202")
    assert {"Retry-After", *common} <= headers("/v1/runs", "post", "429")
    assert {"X-DPP-Cost-Reserved", "X-DPP-Cost-Actual", "ETag"} <= headers("/v1/runs/{run_id}", "get", "200")
    assert "Location" in headers("/v1/runs/{run_id}/result", "get", "302")


def test_each_packs_example_body_is_valid_and_accepted(document: dict[str, Any]) -> None:
    """What Swagger's "Try it out" sends: each example, with a key that may use the pack, is a 202."""
    media = document["paths"]["/v1/runs"]["post"]["requestBody"]["content"]["application/json"]
    examples = media["examples"]
    assert list(examples) == [pack.pack_type for pack in all_packs()]
    assert next(iter(examples)) == "decision"  # the one "Try it out" starts with: starter plans allow it
    validator = _validator(document, "RunSubmitInRequest")
    persona = make_persona(plan="unlimited")
    for pack_type, example in examples.items():
        validator.validate(example["value"])
        response = submit(persona.client, example["value"])
        assert response.status_code == 202, (pack_type, response.content)
    starter = make_persona(plan="starter")
    assert submit(starter.client, examples["decision"]["value"]).status_code == 202


def test_a_body_the_api_refuses_for_an_extra_member_is_refused_by_the_schema(document: dict[str, Any]) -> None:
    validator = _validator(document, "RunSubmitInRequest")
    example = document["paths"]["/v1/runs"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    body = example["decision"]["value"]
    for extra in ({**body, "extra": 1}, {**body, "reservation": {**body["reservation"], "x": 1}}):
        assert not validator.is_valid(extra)
    wrong_pack = {**body, "pack_type": "url"}  # the decision inputs are not a url pack's
    assert not validator.is_valid(wrong_pack)


@pytest.mark.django_db(transaction=True)
def test_the_result_envelope_matches_its_schema_and_the_decision_output(
    document: dict[str, Any], unlimited: Persona
) -> None:
    example = document["paths"]["/v1/runs"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    run_id = submit(unlimited.client, example["decision"]["value"]).json()["run_id"]
    assert execute(run_id) == "completed"
    response = unlimited.client.get(f"/v1/runs/{run_id}/result")
    operation = document["paths"]["/v1/runs/{run_id}/result"]["get"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": REF + "ResultEnvelope"}
    envelope = json.loads(response.content)
    _validator(document, "ResultEnvelope").validate(envelope)
    _validator(document, "DecisionOutput").validate(envelope["data"])
    assert not _validator(document, "DecisionOutput").is_valid({"winner": "A"})


def test_the_quote_body_is_one_schema_per_pack_with_the_reservation_optional(
    document: dict[str, Any], owner: Persona
) -> None:
    operation = document["paths"]["/v1/quotes"]["post"]
    media = operation["requestBody"]["content"]["application/json"]
    assert media["schema"] == {"$ref": REF + "RunQuoteInRequest"}
    schemas = document["components"]["schemas"]
    mapping = {pack.pack_type: f"{REF}{pack.pack_type.capitalize()}QuoteRequest" for pack in all_packs()}
    assert schemas["RunQuoteInRequest"]["discriminator"] == {"propertyName": "pack_type", "mapping": mapping}
    for ref in mapping.values():
        request = schemas[ref.removeprefix(REF)]
        assert request["required"] == ["pack_type", "inputs"]
        assert request["properties"]["reservation"] == {"$ref": REF + "QuoteReservationInRequest"}
    assert "max_cost_usd" not in schemas["QuoteReservationInRequest"].get("required", [])
    assert "IDEMPOTENCY_KEY_REUSED" not in json.dumps(operation["responses"])
    example = media["examples"]["decision"]["value"]
    _validator(document, "RunQuoteInRequest").validate(example)
    response = owner.client.post("/v1/quotes", data=json.dumps(example), content_type="application/json")
    assert response.status_code == 200, response.content
    _validator(document, "QuoteOut").validate(response.json())
