"""The runs API's part of the OpenAPI document that serializers cannot say: the submit body as one schema per pack.

Each pack's request schema embeds that pack's own JSON Schema of inputs (packs.registry: one source), and the
body of `POST /v1/runs` is a `oneOf` of them discriminated by `pack_type`, so that a client generated from the
document has typed inputs per pack and a fuzzer draws bodies the API can accept. `document_pack_requests` is the
drf-spectacular postprocessing hook that puts them in; `pack_request_schemas` builds them, for the submit and, with
`quote=True`, for `POST /v1/quotes` (the same body, its reservation optional).
"""

from __future__ import annotations

import copy
from typing import Any

from packs.registry import all_packs

SCHEMAS = "#/components/schemas/"
# The components drf-spectacular makes of runs.serializers' request classes (COMPONENT_SPLIT_REQUEST names them
# "…Request"); the body's own is replaced by the oneOf.
SUBMIT_COMPONENT = "RunSubmitInRequest"
QUOTE_COMPONENT = "RunQuoteInRequest"
RESERVATION_COMPONENT = "ReservationInRequest"
QUOTE_RESERVATION_COMPONENT = "QuoteReservationInRequest"
META_COMPONENT = "MetaInRequest"

# A working body per pack, each accepted by a key whose plan allows the pack (the decision one is the README's):
# Swagger's "Try it out" starts from the first, and fuzzers start from all of them.
PACK_EXAMPLE_INPUTS: dict[str, dict[str, Any]] = {
    "decision": {
        "question": "Which laptop?",
        "options": ["A", "B"],
        "criteria": [
            {"name": "price", "weight": 2, "direction": "cost"},
            {"name": "speed", "weight": 1, "direction": "benefit"},
        ],
        "scores": {"A": {"price": 900, "speed": 7}, "B": {"price": 1200, "speed": 9}},
    },
    "url": {"url": "https://example.com/"},
    "diagnostic": {"sleep_ms": 0, "cost_usd": "0.0300", "outcome": "succeed"},
}
EXAMPLE_RESERVATION = {"max_cost_usd": "0.0500", "timebox_sec": 30}


def _pascal(pack_type: str) -> str:
    return "".join(part.capitalize() for part in pack_type.replace("-", "_").split("_"))


def pack_example_body(pack_type: str, *, quote: bool = False) -> dict[str, Any]:
    """A working body of the pack; a quote's leaves out the reservation (the suggested max cost is checked)."""
    body = {"pack_type": pack_type, "inputs": PACK_EXAMPLE_INPUTS[pack_type]}
    return body if quote else {**body, "reservation": EXAMPLE_RESERVATION}


def pack_request_schemas(*, quote: bool = False) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(components, body): per pack `<Pack>Inputs` (its JSON Schema) and `<Pack>RunRequest` (the body with it;
    `<Pack>QuoteRequest` for a quote, whose reservation is optional), and the body schema, a `oneOf` of the
    latter discriminated by `pack_type`."""
    kind = "Quote" if quote else "Run"
    reservation_ref = SCHEMAS + (QUOTE_RESERVATION_COMPONENT if quote else RESERVATION_COMPONENT)
    components: dict[str, dict[str, Any]] = {}
    mapping: dict[str, str] = {}
    for pack in all_packs():
        name = _pascal(pack.pack_type)
        inputs = {key: value for key, value in copy.deepcopy(pack.input_schema).items() if key != "$schema"}
        inputs.setdefault("description", pack.description)
        components[f"{name}Inputs"] = inputs
        request: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,  # the API refuses unknown members (422 VALIDATION_ERROR)
            "required": ["pack_type", "inputs"] if quote else ["pack_type", "inputs", "reservation"],
            "properties": {
                "pack_type": {"type": "string", "const": pack.pack_type},
                "inputs": {"$ref": f"{SCHEMAS}{name}Inputs"},
                "reservation": {"$ref": reservation_ref},
                "meta": {"$ref": SCHEMAS + META_COMPONENT},
            },
        }
        if pack.pack_type in PACK_EXAMPLE_INPUTS:
            request["examples"] = [pack_example_body(pack.pack_type, quote=quote)]
        components[f"{name}{kind}Request"] = request
        mapping[pack.pack_type] = f"{SCHEMAS}{name}{kind}Request"
    body = {
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "pack_type", "mapping": mapping},
        "description": f"A {'quote of a ' if quote else ''}run of one pack: pack_type says which, inputs follow "
        "that pack's schema.",
    }
    return components, body


def _strict(schema: dict[str, Any] | None, examples: dict[str, Any]) -> None:
    """A request component the API checks member by member: no other member, and working example values."""
    if schema is None:
        return
    schema["additionalProperties"] = False
    for name, value in examples.items():
        schema["properties"][name]["examples"] = [value]


def document_pack_requests(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the submit and quote bodies as one schema per pack, with an example
    per pack."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    if SUBMIT_COMPONENT not in schemas:
        return result
    _strict(schemas.get(RESERVATION_COMPONENT), EXAMPLE_RESERVATION)
    _strict(schemas.get(QUOTE_RESERVATION_COMPONENT), EXAMPLE_RESERVATION)
    _strict(schemas.get(META_COMPONENT), {"trace_id": "checkout-2026-11-25"})
    bodies = {SUBMIT_COMPONENT: False, QUOTE_COMPONENT: True}
    for component, quote in bodies.items():
        if component in schemas:
            components, body = pack_request_schemas(quote=quote)
            schemas.update(components)
            schemas[component] = body
    envelope = schemas.get("ResultEnvelope")
    if envelope is not None:  # `data` is the pack's output: a decision's is typed, another pack's an object
        envelope["properties"]["data"] = {
            "anyOf": [{"$ref": SCHEMAS + "DecisionOutput"}, {"type": "object", "additionalProperties": True}],
            "description": "The pack's output: DecisionOutput for a decision run, else that pack's object.",
        }
    for item in result.get("paths", {}).values():
        for operation in item.values():
            media = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            for component, quote in bodies.items():
                if media.get("schema") == {"$ref": SCHEMAS + component}:
                    media["examples"] = _body_examples(quote=quote)
    return result


def _body_examples(*, quote: bool) -> dict[str, Any]:
    return {
        pack.pack_type: {
            "summary": f"a {'quote of a ' if quote else ''}{pack.pack_type} run",
            "value": pack_example_body(pack.pack_type, quote=quote),
        }
        for pack in all_packs()
        if pack.pack_type in PACK_EXAMPLE_INPUTS
    }
