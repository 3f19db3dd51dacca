"""Parsing and validating `POST /v1/runs` (SPEC §4), in the documented order, before any write.

Order: Idempotency-Key format → (the replay check, in runs.services.run_submit) → body shape → money → timebox →
pack known → inputs against the pack's JSON Schema → price floor → plan (pack allowed, max cost within the plan) →
the API key's limits, the tightest along its chain (pack allowed: 403 PACK_NOT_ALLOWED; max cost per run: 422
MAX_COST_OVER_KEY_LIMIT). The key's spend limit is checked later, with the reservation (billing.services).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from billing.models import Plan
from dpp import key_limits
from dpp.http.errors import ApplicationError
from dpp.key_limits import KeyNode
from dpp.money import format_usd, parse_max_cost, parse_usd
from dpp.observability import valid_trace_id
from packs.base import Pack, UrlPolicy
from packs.registry import get_pack

IDEMPOTENCY_KEY_RE = re.compile(r"[A-Za-z0-9_.:-]{8,64}")
TOP_LEVEL = frozenset({"pack_type", "inputs", "reservation", "meta"})
RESERVATION_MEMBERS = frozenset({"max_cost_usd", "timebox_sec"})
META_MEMBERS = frozenset({"trace_id"})  # strict like the rest: a misspelt trace_id must not vanish silently
DEFAULT_TIMEBOX_SEC = 90


@dataclass(frozen=True)
class Submission:
    idempotency_key: str
    request_hash: str
    pack_type: str
    profile_version: str
    inputs: dict[str, Any]
    timebox_sec: int
    max_cost_micros: int
    trace_id: str


def url_policy() -> UrlPolicy:
    return UrlPolicy(
        allow_http=settings.DPP_URL_ALLOW_HTTP,
        extra_allowed_networks=settings.DPP_URL_EXTRA_ALLOWED_NETWORKS,
        ca_file=settings.DPP_URL_CA_FILE,
    )


def idempotency_key_parse(header: str | None) -> str:
    if not header:
        raise ApplicationError("IDEMPOTENCY_KEY_MISSING")
    if not IDEMPOTENCY_KEY_RE.fullmatch(header):
        raise ApplicationError("IDEMPOTENCY_KEY_INVALID")
    return header


def request_hash(body: Any) -> str:
    """SHA-256 of the canonical payload: sorted keys, no whitespace, `meta.trace_id` left out.

    A `meta` left empty by that is dropped too, so `{"meta": {"trace_id": "x"}, …}` and the same body without
    `meta` are one payload (a retry that stops sending its trace id is still a replay).
    """
    payload = body
    if isinstance(body, dict) and isinstance(body.get("meta"), dict) and "trace_id" in body["meta"]:
        meta = {k: v for k, v in body["meta"].items() if k != "trace_id"}
        payload = {k: v for k, v in body.items() if k != "meta"}
        if meta:
            payload["meta"] = meta
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _invalid(field: str, message: str) -> ApplicationError:
    return ApplicationError("VALIDATION_ERROR", f"{field}: {message}", errors=[{"field": field, "message": message}])


def _shape(body: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The body's members with their JSON types checked: (body, reservation, meta)."""
    if not isinstance(body, dict):
        raise _invalid("body", "must be a JSON object")
    unknown = sorted(set(body) - TOP_LEVEL)
    if unknown:
        raise _invalid(unknown[0], "unknown member")
    if not isinstance(body.get("pack_type"), str):
        raise _invalid("pack_type", "is required and must be a string")
    if "inputs" not in body:
        raise _invalid("inputs", "is required")
    reservation = _member_object(body, "reservation", known=RESERVATION_MEMBERS, required="max_cost_usd")
    meta = _member_object(body, "meta", known=META_MEMBERS)
    return body, reservation, meta


def _member_object(
    body: dict[str, Any], name: str, *, known: frozenset[str], required: str | None = None
) -> dict[str, Any]:
    """`body[name]`: an object with only `known` members, `required` among them ({} when absent and optional)."""
    if name not in body:
        if required:  # the member it must carry is what the client has to add
            raise _invalid(f"{name}.{required}", "is required")
        return {}
    value = body[name]
    if not isinstance(value, dict):  # "reservation": "0.05" is not a reservation without max_cost_usd
        raise _invalid(name, "must be an object")
    if required and required not in value:
        raise _invalid(f"{name}.{required}", "is required")
    unknown = sorted(set(value) - known)
    if unknown:
        raise _invalid(f"{name}.{unknown[0]}", "unknown member")
    return value


def _timebox(reservation: dict[str, Any]) -> int:
    timebox = reservation.get("timebox_sec", DEFAULT_TIMEBOX_SEC)
    if isinstance(timebox, bool) or not isinstance(timebox, int) or not 1 <= timebox <= DEFAULT_TIMEBOX_SEC:
        raise _invalid("reservation.timebox_sec", "must be an integer from 1 to 90")
    return timebox


def _trace_id(meta: dict[str, Any], default: str) -> str:
    trace_id = meta.get("trace_id")
    if trace_id is None:
        return default
    if not isinstance(trace_id, str) or not valid_trace_id(trace_id):
        raise _invalid("meta.trace_id", "must be 1-64 characters of [A-Za-z0-9_.:-]")
    return trace_id


def _pack(pack_type: str) -> Pack:
    pack = get_pack(pack_type)
    if pack is None:
        raise ApplicationError(
            "UNKNOWN_PACK_TYPE",
            f"There is no pack {pack_type[:64]!r}; see GET /v1/packs.",
            errors=[{"field": "pack_type", "message": "unknown pack type"}],
        )
    return pack


def _check_inputs(pack: Pack, inputs: Any) -> None:
    if isinstance(inputs, dict):
        for name in pack.money_inputs:
            if name in inputs:
                parse_usd(inputs[name], field=f"inputs.{name}")
    errors = pack.validate(inputs, policy=url_policy())
    if errors:
        raise ApplicationError(
            "INVALID_INPUTS",
            f"{len(errors)} input error(s); see errors.",
            errors=[{"field": error.field, "message": error.message} for error in errors],
        )


def _check_price_and_plan(pack: Pack, inputs: dict[str, Any], max_cost: int, plan: Plan) -> None:
    floor = pack.price_floor_micros(inputs)
    if max_cost < floor:
        raise ApplicationError(
            "MAX_COST_TOO_LOW",
            f"This run costs at least {format_usd(floor)} USD; max_cost_usd is {format_usd(max_cost)}.",
            errors=[{"field": "reservation.max_cost_usd", "message": f"at least {format_usd(floor)}"}],
        )
    if not plan.allows(pack.pack_type):
        raise ApplicationError("PACK_NOT_ALLOWED", f"Plan {plan.code!r} does not include the {pack.pack_type} pack.")
    limit = plan.max_cost_micros(pack.pack_type)
    if max_cost > limit:
        raise ApplicationError(
            "MAX_COST_OVER_PLAN_LIMIT",
            f"Plan {plan.code!r} allows at most {format_usd(limit)} USD per {pack.pack_type} run.",
            errors=[{"field": "reservation.max_cost_usd", "message": f"at most {format_usd(limit)}"}],
        )


def key_limits_check(*, pack_type: str, max_cost_micros: int, key_chain: tuple[KeyNode, ...]) -> None:
    """The submitting key's own limits (SPEC §8), each the tightest along its chain (root first)."""
    packs = key_limits.allowed_packs(key_chain)
    if packs is not None and pack_type not in packs:
        raise ApplicationError(
            "PACK_NOT_ALLOWED",
            f"Your API key may run only {', '.join(sorted(packs)) or 'no pack'}; not the {pack_type} pack.",
        )
    cap = key_limits.max_cost_per_run(key_chain)
    if cap is not None and max_cost_micros > cap:
        raise ApplicationError(
            "MAX_COST_OVER_KEY_LIMIT",
            f"Your API key allows at most {format_usd(cap)} USD per run.",
            errors=[{"field": "reservation.max_cost_usd", "message": f"at most {format_usd(cap)}"}],
        )


def submission_parse(
    *,
    body: Any,
    idempotency_key: str,
    request_hash: str,
    plan: Plan,
    default_trace_id: str,
    key_chain: tuple[KeyNode, ...] = (),
) -> Submission:
    """A valid submission, or the first ApplicationError in the documented order."""
    body, reservation, meta = _shape(body)
    max_cost = parse_max_cost(reservation["max_cost_usd"])
    timebox = _timebox(reservation)
    trace_id = _trace_id(meta, default_trace_id)
    pack = _pack(body["pack_type"])
    _check_inputs(pack, body["inputs"])
    _check_price_and_plan(pack, body["inputs"], max_cost, plan)
    key_limits_check(pack_type=pack.pack_type, max_cost_micros=max_cost, key_chain=key_chain)
    return Submission(
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        pack_type=pack.pack_type,
        profile_version=f"{pack.pack_type}@{pack.version}",
        inputs=body["inputs"],
        timebox_sec=min(timebox, pack.max_timebox_sec),
        max_cost_micros=max_cost,
        trace_id=trace_id,
    )
