"""Parsing and validating `POST /v1/runs` and `POST /v1/quotes` (SPEC §4, §9), in the documented order, before
any write.

Order: Idempotency-Key format → body shape → money → timebox → pack known (`submission_read`: the request with its
defaults applied, and its fingerprint) → inputs against the pack's JSON Schema → price floor → plan (pack allowed,
max cost within the plan) (`submission_check`) → the API key's limits, the tightest along its chain
(`key_limits_check`: pack allowed, 403 PACK_NOT_ALLOWED; max cost per run, 422 MAX_COST_OVER_KEY_LIMIT; the
spend limit is checked later, with the reservation). The replay check (runs.services.run_submit) answers any refusal
of a request whose key already has a run, by comparing fingerprints.

The fingerprint (draft-ietf-httpapi-idempotency-key-header) is of the request as it is understood, not as it was
spelt: defaults applied (`timebox_sec` 90, the top-level defaults the pack's input schema declares), money in its
4-decimal form, `meta` left out. It is stored as "v2:" + the unpadded base64url SHA-256 (46 characters, in the
64-character column); a run stored before it carries the legacy hash of the raw body (64 hex digits), and is
compared with the legacy hash of the retried raw body (`fingerprint_matches`; docs/decisions.md).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from billing.models import Plan
from dpp import key_limits
from dpp.http.errors import ApplicationError
from dpp.key_limits import KeyNode
from dpp.money import GRANULE_MICROS, format_usd, parse_max_cost, parse_usd, usd_micros
from dpp.observability import valid_trace_id
from packs.base import Pack, UrlPolicy
from packs.registry import get_pack

IDEMPOTENCY_KEY_RE = re.compile(r"[A-Za-z0-9_.:-]{8,64}")
TOP_LEVEL = frozenset({"pack_type", "inputs", "reservation", "meta"})
RESERVATION_MEMBERS = frozenset({"max_cost_usd", "timebox_sec"})
META_MEMBERS = frozenset({"trace_id"})  # strict like the rest: a misspelt trace_id must not vanish silently
DEFAULT_TIMEBOX_SEC = 90
FINGERPRINT_VERSION = "v2:"


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
    body: Any = field(default=None, repr=False, compare=False)  # as sent: compared with a legacy run's hash


def url_policy() -> UrlPolicy:
    return UrlPolicy(
        allow_http=settings.DPP_URL_ALLOW_HTTP,
        extra_allowed_networks=settings.DPP_URL_EXTRA_ALLOWED_NETWORKS,
        ca_file=settings.DPP_URL_CA_FILE,
    )


@dataclass(frozen=True)
class Draft:
    """A request read (`submission_read`) but not yet checked against its pack's schema, price and plan."""

    pack: Pack
    inputs: Any
    max_cost_micros: int | None  # None: a quote without a reservation
    timebox_sec: int
    trace_id: str
    fingerprint: str
    body: Any = field(repr=False, compare=False)


def idempotency_key_parse(header: str | None) -> str:
    """The key of the header's bare form (`tour-0001`) or its RFC 8941 sf-String form (`"tour-0001"`): one key.

    The key's alphabet has no quote or backslash, so an sf-String with escapes could never hold a valid key."""
    if not header:
        raise ApplicationError("IDEMPOTENCY_KEY_MISSING")
    key = header[1:-1] if len(header) >= 2 and header[0] == header[-1] == '"' else header
    if not IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise ApplicationError("IDEMPOTENCY_KEY_INVALID")
    return key


def legacy_request_hash(body: Any) -> str:
    """The fingerprint of runs stored before v2: SHA-256 hex of the raw payload's canonical JSON (sorted keys, no
    whitespace, `meta.trace_id` left out). Only compared with such runs' `request_hash`, never stored any more.

    A `meta` left empty by that is dropped too, so `{"meta": {"trace_id": "x"}, …}` and the same body without
    `meta` are one payload (a retry that stops sending its trace id is still a replay).
    """
    payload = body
    if isinstance(body, dict) and isinstance(body.get("meta"), dict) and "trace_id" in body["meta"]:
        meta = {k: v for k, v in body["meta"].items() if k != "trace_id"}
        payload = {k: v for k, v in body.items() if k != "meta"}
        if meta:
            payload["meta"] = meta
    return hashlib.sha256(_canonical(payload)).hexdigest()


def _canonical(payload: Any) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _fingerprint(pack: Pack, inputs: Any, max_cost: int | None, timebox: int) -> str:
    """ "v2:" + base64url SHA-256 of the request as understood: defaults applied, money normalised, no `meta`."""
    payload = {
        "pack_type": pack.pack_type,
        "inputs": _inputs_with_defaults(pack, inputs),
        "reservation": {"max_cost_usd": None if max_cost is None else format_usd(max_cost), "timebox_sec": timebox},
    }
    digest = base64.urlsafe_b64encode(hashlib.sha256(_canonical(payload)).digest()).rstrip(b"=").decode("ascii")
    return FINGERPRINT_VERSION + digest


def _inputs_with_defaults(pack: Pack, inputs: Any) -> Any:
    """The inputs with the top-level defaults of the pack's schema filled in and its money inputs as 4-decimal
    strings ("0.03" → "0.0300"); inputs that are no object, and values that are no money, are left as they are
    (their request is refused by `submission_check` anyway)."""
    if not isinstance(inputs, dict):
        return inputs
    filled = {
        name: copy.deepcopy(spec["default"])
        for name, spec in pack.input_schema.get("properties", {}).items()
        if isinstance(spec, dict) and "default" in spec and name not in inputs
    }
    filled.update(inputs)
    for name in pack.money_inputs:
        micros = usd_micros(filled.get(name))
        if micros is not None:
            filled[name] = format_usd(micros)
    return filled


def fingerprint_matches(*, stored: str, fingerprint: str | None, body: Any) -> bool:
    """Whether a retry is the payload of the run stored with `stored`. `fingerprint` is the retry's (None when it
    could not be read: then it is another payload than any valid one stored); a legacy run is compared with the
    legacy hash of the retry's raw body, as it was when that run was accepted."""
    if stored.startswith(FINGERPRINT_VERSION):
        return fingerprint == stored
    return stored == legacy_request_hash(body)


def _invalid(field: str, message: str) -> ApplicationError:
    return ApplicationError("VALIDATION_ERROR", f"{field}: {message}", errors=[{"field": field, "message": message}])


def _shape(body: Any, *, reservation_required: bool) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
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
    required = "max_cost_usd" if reservation_required else None
    reservation = _member_object(body, "reservation", known=RESERVATION_MEMBERS, required=required)
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
    # JSON Schema's integer is any number with a zero fractional part: 30.0 is the integer 30 (a generated client
    # or a validator may send it so); 1.5 and "30" are not integers.
    if isinstance(timebox, float) and timebox.is_integer():
        timebox = int(timebox)
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


def submission_read(*, body: Any, default_trace_id: str, reservation_required: bool = True) -> Draft:
    """The request with its defaults applied and its fingerprint, or the first ApplicationError of its shape, money,
    timebox, trace id and pack type. A quote (SPEC §9) may leave out the reservation or its max cost."""
    body, reservation, meta = _shape(body, reservation_required=reservation_required)
    max_cost = parse_max_cost(reservation["max_cost_usd"]) if "max_cost_usd" in reservation else None
    timebox = _timebox(reservation)
    trace_id = _trace_id(meta, default_trace_id)
    pack = _pack(body["pack_type"])
    return Draft(
        pack=pack,
        inputs=body["inputs"],
        max_cost_micros=max_cost,
        timebox_sec=timebox,
        trace_id=trace_id,
        fingerprint=_fingerprint(pack, body["inputs"], max_cost, timebox),
        body=body,
    )


def suggested_max_cost_micros(pack: Pack, inputs: dict[str, Any]) -> int:
    """What a quote without a reservation checks (SPEC §9: the price ceiling), at least the least reservation
    there is (0.0001): a diagnostic run asking for cost 0 has a ceiling of 0, which no submit may reserve."""
    return max(pack.price_ceiling_micros(inputs), GRANULE_MICROS)


def submission_check(*, draft: Draft, idempotency_key: str, plan: Plan) -> Submission:
    """The valid submission of a read request, or the first ApplicationError of its inputs, price floor and plan.
    Without a max cost (a quote), the suggested one is checked."""
    pack = draft.pack
    _check_inputs(pack, draft.inputs)
    max_cost = draft.max_cost_micros
    if max_cost is None:
        max_cost = suggested_max_cost_micros(pack, draft.inputs)
    _check_price_and_plan(pack, draft.inputs, max_cost, plan)
    return Submission(
        idempotency_key=idempotency_key,
        request_hash=draft.fingerprint,
        pack_type=pack.pack_type,
        profile_version=f"{pack.pack_type}@{pack.version}",
        inputs=draft.inputs,
        timebox_sec=min(draft.timebox_sec, pack.max_timebox_sec),
        max_cost_micros=max_cost,
        trace_id=draft.trace_id,
        body=draft.body,
    )


def submission_parse(*, body: Any, idempotency_key: str, plan: Plan, default_trace_id: str) -> Submission:
    """A valid submission, or the first ApplicationError in the documented order (for callers that need no
    replay check: tests, benchmarks)."""
    draft = submission_read(body=body, default_trace_id=default_trace_id)
    return submission_check(draft=draft, idempotency_key=idempotency_key, plan=plan)
