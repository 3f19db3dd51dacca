"""The /v1 API of runs (SPEC §4): thin views that parse, call one service or selector, and present."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime
from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from billing.apis import TenantApiView
from billing.models import Plan
from billing.selectors import balances_get
from dpp.http.conditional import ConditionalGetMixin
from dpp.http.errors import ApplicationError
from dpp.http.openapi import problems
from dpp.http.pagination import PAGE_PARAMETERS, decode_cursor, encode_cursor, parse_limit
from dpp.http.parsers import declared_length
from dpp.models import ApiKey
from dpp.money import format_usd
from dpp.observability import adopt_run, current_trace_id
from packs.registry import all_packs
from runs import presenters, results, selectors, services
from runs.models import Run, RunStatus
from runs.serializers import (
    PackListOut,
    QuoteOut,
    ReceiptOut,
    ResultEnvelopeOut,
    RunOut,
    RunPageOut,
    RunQuoteIn,
    RunSubmitIn,
    UsageOut,
)
from runs.submission import idempotency_key_parse

MAX_USAGE_DAYS = 366
_DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# RFC 3339 §5.6 date-time: seconds required, any fraction (beyond microseconds truncated), Z or ±HH:MM.
_RFC3339_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_INSTANT = "RFC 3339 date-time (YYYY-MM-DDTHH:MM:SS[.fff] with Z or ±HH:MM)"


def _run_id(raw: str) -> uuid.UUID:
    """A path run id; anything that is not a UUID is a 404, like a run that does not exist."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApplicationError("NOT_FOUND") from None


def _no_body(request: Request) -> bool:
    length = declared_length(request.META)
    return length is not None and length <= 0  # not a number: the parser answers for a body it cannot read


def _with_headers(response: Response, headers: dict[str, str]) -> Response:
    for name, value in headers.items():
        response[name] = value
    return response


def _response_header(name: str, description: str, statuses: list[int]) -> OpenApiParameter:
    return OpenApiParameter(name, str, OpenApiParameter.HEADER, description=description, response=statuses)


def _cost_headers(statuses: list[int]) -> list[OpenApiParameter]:
    return [
        _response_header("X-DPP-Cost-Reserved", 'the reservation, 4-decimal USD, e.g. "0.0500"', statuses),
        _response_header("X-DPP-Cost-Minimum-Fee", "the minimum fee, 4-decimal USD", statuses),
        _response_header("X-DPP-Cost-Actual", "what the run was charged, once it ended (4-decimal USD)", statuses),
    ]


# What a submit can be refused with (a quote of the same body too), by reason code: dpp.http.errors gives the status.
SUBMIT_PROBLEMS = (
    "MALFORMED_JSON",
    "IDEMPOTENCY_KEY_MISSING",
    "IDEMPOTENCY_KEY_INVALID",
    "INSUFFICIENT_FUNDS",
    "KEY_SPEND_LIMIT",
    "PACK_NOT_ALLOWED",
    "IDEMPOTENCY_KEY_REUSED",
    "PAYLOAD_TOO_LARGE",
    "UNSUPPORTED_MEDIA_TYPE",
    "VALIDATION_ERROR",
    "INVALID_MONEY",
    "INVALID_MONEY_SCALE",
    "UNKNOWN_PACK_TYPE",
    "INVALID_INPUTS",
    "MAX_COST_OVER_PLAN_LIMIT",
    "MAX_COST_OVER_KEY_LIMIT",
    "MAX_COST_TOO_LOW",
    "CONCURRENCY_LIMITED",
)
# A quote answers what the submit of its body would, but needs no Idempotency-Key (one sent is ignored).
QUOTE_PROBLEMS = tuple(code for code in SUBMIT_PROBLEMS if not code.startswith("IDEMPOTENCY_KEY_"))
_ETAG_HEADER = "the representation's strong ETag: send it as If-None-Match to get a 304 while it is unchanged"


def _conditional_parameters() -> list[OpenApiParameter]:
    """The request and response headers of a conditional GET (dpp.http.conditional)."""
    return [
        OpenApiParameter(
            "If-None-Match", str, OpenApiParameter.HEADER, description="an ETag (or several, or *): 304 if current"
        ),
        OpenApiParameter(
            "If-Match", str, OpenApiParameter.HEADER, description="an ETag (or several, or *): 412 if none is current"
        ),
        _response_header("ETag", _ETAG_HEADER, [200, 304, 412]),
    ]


NOT_MODIFIED = OpenApiResponse(description="Not modified: the ETag you sent (If-None-Match) is current; no body.")


def _pack_types() -> list[str]:
    return [pack.pack_type for pack in all_packs()]


def caller_key(request: Request) -> ApiKey | None:
    """The API key of the request (dpp.http.auth), with its chain: what it may see, spend and run."""
    return request.auth if isinstance(request.auth, ApiKey) else None


def _api_key(request: Request) -> ApiKey:
    """The key that authenticated a run's body (a submit, a quote); an empty body is refused first."""
    if _no_body(request):  # DRF would read it as {}: a 422 "pack_type is required" would mislead
        raise ApplicationError("MALFORMED_JSON", "The request body is empty: send the run as a JSON object.")
    api_key = request.auth
    assert isinstance(api_key, ApiKey)  # noqa: S101 - guaranteed by the authentication of every /v1 view
    return api_key


class RunOwnerMixin:
    def owned_run(self, tenant: Any, raw_id: str, api_key: ApiKey | None) -> Run:
        run = selectors.run_get(tenant=tenant, run_id=_run_id(raw_id), api_key=api_key)
        if run is None:
            raise ApplicationError("NOT_FOUND")
        adopt_run(trace_id=run.trace_id, run_id=str(run.pk))
        return run


class RunsApi(TenantApiView):
    def rate_limit_policy_for(self, request: Request) -> str:
        return "submits" if request.method == "POST" else "reads"

    @extend_schema(
        operation_id="runs_submit",
        summary="Submit a run (reserves its max cost)",
        description=(
            "Submit a run of a pack. The reservation (max_cost_usd) is held from your available balance in "
            "the same transaction that creates the run; the run is charged its actual cost (at most the "
            "reservation) when it ends and the rest is released. Idempotency-Key is required: the same key "
            "and payload return the original receipt (Idempotent-Replayed: true) and never charge twice; a "
            "rejected request stores nothing under its key."
        ),
        request=RunSubmitIn,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                required=True,
                pattern=r"^[A-Za-z0-9_.:-]{8,64}$",
                description="8-64 chars of [A-Za-z0-9_.:-]; the same key and payload replay the receipt",
            ),
            _response_header("Location", "the run to poll: /v1/runs/{run_id}", [202]),
            _response_header("Idempotent-Replayed", '"true" when this is the receipt of an earlier submit', [202]),
            *_cost_headers([202])[:2],
        ],
        responses={202: ReceiptOut, **problems(*SUBMIT_PROBLEMS)},
        tags=["runs"],
    )
    def post(self, request: Request) -> Response:
        tenant, plan = self.tenant(request), self.plan(request)
        key = idempotency_key_parse(request.headers.get("Idempotency-Key"))
        accepted = services.run_submit(
            tenant=tenant,
            plan=plan,
            key=_api_key(request),
            body=request.data,
            idempotency_key=key,
            trace_id=current_trace_id(),
        )
        run = accepted.run
        adopt_run(trace_id=run.trace_id, run_id=str(run.pk))
        headers = {**presenters.cost_headers(run), "Location": presenters.receipt(run)["poll"]["href"]}
        if accepted.replayed:
            headers["Idempotent-Replayed"] = "true"
        return _with_headers(Response(presenters.receipt(run), status=202), headers)

    @extend_schema(
        operation_id="runs_list",
        summary="List your runs",
        description=(
            "Your runs, newest first, with an opaque cursor that stays stable while new runs arrive. Filters:"
            " status (repeatable), pack_type, created_after / created_before (RFC 3339)."
        ),
        parameters=[
            *PAGE_PARAMETERS,
            OpenApiParameter(
                "status",
                str,
                enum=[s.value for s in RunStatus],
                many=True,
                explode=True,
                description="filter by status; repeat it for several (status=COMPLETED&status=FAILED: either)",
            ),
            OpenApiParameter(
                "pack_type", str, enum=_pack_types(), description="filter by pack type (one; unknown → 422)"
            ),
            OpenApiParameter("created_after", datetime, description=f"{_INSTANT}; runs created after it"),
            OpenApiParameter("created_before", datetime, description=f"{_INSTANT}; runs created before it"),
        ],
        responses={200: RunPageOut, **problems("VALIDATION_ERROR")},
        tags=["runs"],
    )
    def get(self, request: Request) -> Response:
        tenant = self.tenant(request)
        limit = parse_limit(request.query_params.get("limit"))
        filters = _filters(request)
        after = _position(decode_cursor(request.query_params.get("cursor")))
        visible = selectors.run_list(tenant=tenant, filters=filters, after=after, api_key=caller_key(request))
        runs = list(visible[: limit + 1])
        next_cursor = None
        if len(runs) > limit:
            last = runs[limit - 1]
            next_cursor = encode_cursor({"t": last.created_at.isoformat(), "id": str(last.pk)})
        data = [
            presenters.run_body(run, available_micros=run.available_micros, request=request)  # type: ignore[attr-defined]
            for run in runs[:limit]
        ]
        return Response({"data": data, "next_cursor": next_cursor})


def _filters(request: Request) -> selectors.RunFilters:
    params = request.query_params
    statuses = tuple(dict.fromkeys(value for value in params.getlist("status") if value))
    if any(status not in RunStatus.values for status in statuses):
        raise _bad_param("status", "must be one of " + ", ".join(RunStatus.values) + " (repeat it for several)")
    pack_types = [value for value in params.getlist("pack_type") if value]
    if len(pack_types) > 1:  # the last one alone would be a silent, wrong answer
        raise _bad_param("pack_type", "give at most one")
    if pack_types and pack_types[0] not in _pack_types():
        raise _bad_param("pack_type", "must be one of " + ", ".join(_pack_types()))
    return selectors.RunFilters(
        statuses=statuses,
        pack_type=pack_types[0] if pack_types else None,
        created_after=_datetime_param(params.get("created_after"), "created_after"),
        created_before=_datetime_param(params.get("created_before"), "created_before"),
    )


def _bad_param(field: str, message: str) -> ApplicationError:
    return ApplicationError("VALIDATION_ERROR", f"{field}: {message}", errors=[{"field": field, "message": message}])


def _utc(value: datetime | None) -> datetime | None:
    """An aware date-time in UTC; None if naive or out of range once in UTC (year 1 at +01:00, 9999 at -01:00).

    Handing PostgreSQL the UTC value also keeps out offsets it refuses (beyond ±15:59), which would be a 500.
    """
    if value is None or value.tzinfo is None or value.utcoffset() is None:
        return None
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _datetime_param(raw: str | None, field: str) -> datetime | None:
    """An RFC 3339 date-time (OpenAPI's `date-time`): not every ISO 8601 form Python reads (20261126T00Z, week
    dates, offsets without a colon), which the client may not mean as we would read them."""
    if not raw:
        return None
    value = None
    if _RFC3339_RE.fullmatch(raw):
        try:
            value = _utc(datetime.fromisoformat(raw.upper()))  # "t" and "z" are RFC 3339 too
        except ValueError:  # month 13, second 60…
            value = None
    if value is None:
        raise _bad_param(field, f"must be an {_INSTANT}, e.g. 2026-11-25T00:00:00Z (send a + offset as %2B)")
    return value


def _position(position: dict[str, Any] | None) -> tuple[datetime, uuid.UUID] | None:
    if position is None:
        return None
    try:
        created_at = _utc(datetime.fromisoformat(position["t"]))
        run_id = uuid.UUID(position["id"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _bad_param("cursor", "invalid cursor") from None
    if created_at is None:
        raise _bad_param("cursor", "invalid cursor")
    return created_at, run_id


class RunDetailApi(ConditionalGetMixin, RunOwnerMixin, TenantApiView):
    @extend_schema(
        operation_id="runs_get",
        summary="Get a run (poll it)",
        description=(
            "One of your runs: status, money state, cost so far and, once COMPLETED, where to fetch the "
            "result. Another tenant's run is a 404, as a run that does not exist."
        ),
        parameters=[*_cost_headers([200, 304]), *_conditional_parameters()],
        responses={200: RunOut, 304: NOT_MODIFIED, **problems("NOT_FOUND", "PRECONDITION_FAILED")},
        tags=["runs"],
    )
    def get(self, request: Request, run_id: str) -> Response:
        tenant = self.tenant(request)
        run = self.owned_run(tenant, run_id, caller_key(request))
        body = presenters.run_body(run, available_micros=run.available_micros, request=request)  # type: ignore[attr-defined]
        return _with_headers(Response(body), presenters.cost_headers(run))


class RunCancelApi(RunOwnerMixin, TenantApiView):
    # A cancel moves no money in: counted as a read, so that an agent out of submits can still stop its runs.
    rate_limit_policy = "reads"

    @extend_schema(
        operation_id="runs_cancel",
        summary="Cancel a run (counts against reads)",
        description=(
            "Cancel a run: QUEUED → CANCELED with a full release (200); PROCESSING → cancel requested (202), "
            "the run ends CANCELED with the minimum fee at the worker's next heartbeat; a run that already "
            "ended → 409 RUN_TERMINAL."
        ),
        request=None,
        parameters=_cost_headers([200, 202]),
        responses={200: RunOut, 202: RunOut, **problems("NOT_FOUND", "RUN_TERMINAL")},
        tags=["runs"],
    )
    def post(self, request: Request, run_id: str) -> Response:
        tenant = self.tenant(request)
        api_key = caller_key(request)
        run = self.owned_run(tenant, run_id, api_key)  # first: a refusal (409 RUN_TERMINAL) carries the trace id too
        outcome = services.run_cancel(tenant=tenant, run_id=run.pk, api_key=api_key)
        available = balances_get(tenant_id=tenant.pk).available_micros
        body = presenters.run_body(outcome.run, available_micros=available, request=request)
        status = 202 if outcome.pending else 200
        return _with_headers(Response(body, status=status), presenters.cost_headers(outcome.run))


class QuotesApi(TenantApiView):
    # A quote moves no money and creates nothing: counted as a read, never against the submits it prepares.
    rate_limit_policy = "reads"

    @extend_schema(
        operation_id="quotes_create",
        summary="Quote a run (moves no money; counts against reads)",
        description=(
            "What a submit of this body would cost and whether it would be accepted, checked exactly as POST "
            "/v1/runs checks it (with the given reservation.max_cost_usd, or else the suggested one: the price "
            "ceiling), without creating a run, holding money or storing an Idempotency-Key (one sent is "
            "ignored). A submit that would be refused gets its very problem here (402, 403, 422, 429)."
        ),
        request=RunQuoteIn,
        responses={200: QuoteOut, **problems(*QUOTE_PROBLEMS)},
        tags=["runs"],
    )
    def post(self, request: Request) -> Response:
        tenant, plan = self.tenant(request), self.plan(request)
        quote = services.run_quote(tenant=tenant, plan=plan, key=_api_key(request), body=request.data)
        return Response(presenters.quote_body(quote))


class RunResultApi(ConditionalGetMixin, RunOwnerMixin, TenantApiView):
    @extend_schema(
        operation_id="runs_result",
        summary="Get a run's result envelope",
        description="The run's result envelope: served (local storage, with its sha256 in ETag and "
        "X-DPP-Result-SHA256) or a 302 to a signed storage URL (S3). 409 RESULT_NOT_READY while a result may "
        "still come (QUEUED, PROCESSING), 409 RUN_TERMINAL for a run that ended without one (FAILED, CANCELED, "
        "EXPIRED), 410 after retention, 503 while the storage cannot be read.",
        parameters=[
            _response_header("Location", "the signed storage URL (S3), valid AWS_QUERYSTRING_EXPIRE s", [302]),
            *_conditional_parameters()[:2],
            _response_header("ETag", "the envelope's sha256, quoted (local storage)", [200, 304, 412]),
            _response_header("X-DPP-Result-SHA256", "the envelope's sha256 (local storage)", [200, 304]),
        ],
        responses={
            200: OpenApiResponse(ResultEnvelopeOut, description="the result envelope (local storage)"),
            302: OpenApiResponse(description="redirect to a signed URL of the envelope (S3)"),
            304: NOT_MODIFIED,
            **problems("NOT_FOUND", "RESULT_NOT_READY", "RUN_TERMINAL", "RESULT_EXPIRED", "PRECONDITION_FAILED"),
        },
        tags=["runs"],
    )
    def get(self, request: Request, run_id: str) -> HttpResponse:
        run = self.owned_run(self.tenant(request), run_id, caller_key(request))
        if run.is_terminal and run.status != RunStatus.COMPLETED:
            # RESULT_NOT_READY would tell the agent to wait for a result that never comes.
            ended = f"The run ended {run.status}" + (f" ({run.reason_code})" if run.reason_code else "")
            raise ApplicationError("RUN_TERMINAL", f"{ended}: this run has no result, and never will.")
        if run.status != RunStatus.COMPLETED or not run.result_key:
            raise ApplicationError("RESULT_NOT_READY", "The run has not completed yet; poll it until it is COMPLETED.")
        expires_at = results.result_expires_at(run)
        if expires_at is not None and expires_at <= datetime.now(tz=expires_at.tzinfo):
            raise ApplicationError("RESULT_EXPIRED", f"The result expired at {expires_at.isoformat()}.")
        response = results.result_response(run)
        if response is None:
            raise ApplicationError("RESULT_EXPIRED", "The result is no longer in storage.")
        return response


class UsageApi(TenantApiView):
    @extend_schema(
        operation_id="usage_get",
        summary="Your usage per day",
        description=(
            "Per UTC day of acceptance (days without runs left out): runs by outcome and the money reserved "
            "and charged, 4-decimal strings that agree exactly with the ledger. At most 366 days."
        ),
        parameters=[
            OpenApiParameter("from", date, required=True, description="first UTC day, YYYY-MM-DD"),
            OpenApiParameter("to", date, required=True, description="last UTC day, YYYY-MM-DD (≤ 366 days)"),
        ],
        responses={200: UsageOut, **problems("VALIDATION_ERROR")},
        tags=["account"],
    )
    def get(self, request: Request) -> Response:
        first, last = _date_param(request, "from"), _date_param(request, "to")
        if first > last:
            raise _bad_param("from", "must not be after to")
        if (last - first).days + 1 > MAX_USAGE_DAYS:
            raise _bad_param("to", f"the range is at most {MAX_USAGE_DAYS} days")
        rows = selectors.usage_by_day(tenant=self.tenant(request), first=first, last=last)
        days = [
            {
                "date": row["day"].isoformat(),
                "runs": row["runs"],
                "completed": row["completed"],
                "failed": row["failed"],
                "canceled": row["canceled"],
                "expired": row["expired"],
                "charged_usd": format_usd(row["charged_micros"]),
                "reserved_usd": format_usd(row["reserved_micros"]),
            }
            for row in rows
        ]
        return Response({"from": first.isoformat(), "to": last.isoformat(), "days": days})


def _date_param(request: Request, name: str) -> date:
    raw = request.query_params.get(name)
    if not raw:
        raise _bad_param(name, "is required, as YYYY-MM-DD")
    day = None
    if _DAY_RE.fullmatch(raw):  # date.fromisoformat alone also reads 20261125 and 2026-W48-1
        try:
            day = date.fromisoformat(raw)
        except ValueError:  # 2026-02-30
            day = None
    if day is None:
        raise _bad_param(name, "must be a calendar day as YYYY-MM-DD, e.g. 2026-11-25")
    return day


def _plan_of(plan: Plan, pack_type: str) -> dict[str, Any]:
    """What the caller's plan says of a pack: one it does not allow answers 403 PACK_NOT_ALLOWED."""
    allowed = plan.allows(pack_type)
    cap = format_usd(plan.max_cost_micros(pack_type)) if allowed else None
    return {"code": plan.code, "allowed": allowed, "max_cost_usd": cap}


class PacksApi(TenantApiView):
    @extend_schema(
        operation_id="packs_list",
        summary="List the packs and their input schemas",
        description="The packs there are: each one's JSON Schema of inputs, pricing, maximum timebox, and what your "
        "plan allows (allowed, max_cost_usd).",
        responses={200: PackListOut, **problems()},
        tags=["packs"],
    )
    def get(self, request: Request) -> Response:
        plan = self.plan(request)
        data = [
            {
                "pack_type": pack.pack_type,
                "description": pack.description,
                "input_schema": pack.input_schema,
                "pricing": pack.pricing(),
                "max_timebox_sec": pack.max_timebox_sec,
                # What the caller's plan says of it: a pack it does not allow answers 403 PACK_NOT_ALLOWED.
                "plan": _plan_of(plan, pack.pack_type),
            }
            for pack in all_packs()
        ]
        return Response({"data": data})
