"""The runs API's part of the OpenAPI document that serializers cannot say: the submit body as one schema per pack.

Each pack's request schema embeds that pack's own JSON Schema of inputs (packs.registry: one source), and the
body of `POST /v1/runs` is a `oneOf` of them discriminated by `pack_type`, so that a client generated from the
document has typed inputs per pack and a fuzzer draws bodies the API can accept. `document_pack_requests` is the
drf-spectacular postprocessing hook that puts them in; `pack_request_schemas` builds them (for any operation
that takes a run's body: a quote takes the same).
"""

from __future__ import annotations

import copy
from typing import Any

from packs.registry import all_packs

SCHEMAS = "#/components/schemas/"
# The components drf-spectacular makes of runs.serializers' request classes (COMPONENT_SPLIT_REQUEST names them
# "…Request"); the body's own is replaced by the oneOf.
SUBMIT_COMPONENT = "RunSubmitInRequest"
RESERVATION_COMPONENT = "ReservationInRequest"
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


def pack_example_body(pack_type: str) -> dict[str, Any]:
    return {"pack_type": pack_type, "inputs": PACK_EXAMPLE_INPUTS[pack_type], "reservation": EXAMPLE_RESERVATION}


def pack_request_schemas(
    *, reservation_ref: str = SCHEMAS + RESERVATION_COMPONENT, meta_ref: str = SCHEMAS + META_COMPONENT
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(components, body): per pack `<Pack>Inputs` (its JSON Schema) and `<Pack>RunRequest` (the body with it),
    and the body schema, a `oneOf` of the latter discriminated by `pack_type`."""
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
            "required": ["pack_type", "inputs", "reservation"],
            "properties": {
                "pack_type": {"type": "string", "const": pack.pack_type},
                "inputs": {"$ref": f"{SCHEMAS}{name}Inputs"},
                "reservation": {"$ref": reservation_ref},
                "meta": {"$ref": meta_ref},
            },
        }
        if pack.pack_type in PACK_EXAMPLE_INPUTS:
            request["examples"] = [pack_example_body(pack.pack_type)]
        components[f"{name}RunRequest"] = request
        mapping[pack.pack_type] = f"{SCHEMAS}{name}RunRequest"
    body = {
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "pack_type", "mapping": mapping},
        "description": "A run of one pack: pack_type says which, inputs follow that pack's schema.",
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
    """drf-spectacular postprocessing hook: the submit body as one schema per pack, with an example per pack."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    if SUBMIT_COMPONENT not in schemas:
        return result
    _strict(schemas.get(RESERVATION_COMPONENT), {"max_cost_usd": "0.0500", "timebox_sec": 30})
    _strict(schemas.get(META_COMPONENT), {"trace_id": "checkout-2026-11-25"})
    components, body = pack_request_schemas()
    schemas.update(components)
    schemas[SUBMIT_COMPONENT] = body
    envelope = schemas.get("ResultEnvelope")
    if envelope is not None:  # `data` is the pack's output: a decision's is typed, another pack's an object
        envelope["properties"]["data"] = {
            "anyOf": [{"$ref": SCHEMAS + "DecisionOutput"}, {"type": "object", "additionalProperties": True}],
            "description": "The pack's output: DecisionOutput for a decision run, else that pack's object.",
        }
    examples = {
        pack.pack_type: {"summary": f"a {pack.pack_type} run", "value": pack_example_body(pack.pack_type)}
        for pack in all_packs()
        if pack.pack_type in PACK_EXAMPLE_INPUTS
    }
    for item in result.get("paths", {}).values():
        for operation in item.values():
            media = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            if media.get("schema") == {"$ref": SCHEMAS + SUBMIT_COMPONENT}:
                media["examples"] = examples
    return result
