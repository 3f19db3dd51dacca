"""OpenAPI pieces shared by every API: the bearer security scheme, the RFC 9457 problem schema, and the headers
every /v1 response carries."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, inline_serializer
from drf_spectacular.views import SpectacularJSONAPIView
from rest_framework import serializers

from dpp.http.errors import PROBLEMS, ProblemType

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldErrorSerializer(serializers.Serializer[Any]):
    field = serializers.CharField()
    message = serializers.CharField()


# An RFC 9457 problem; `errors` on validation failures; 402 INSUFFICIENT_FUNDS adds available_usd and
# required_usd, 402 KEY_SPEND_LIMIT required_usd and the refusing key's limit, spend and window (SPEC §4.1).
# (Inline: a field named `errors` would shadow Serializer.errors.)
ProblemSerializer = inline_serializer(
    "Problem",
    {
        "type": serializers.CharField(help_text="/problems/<slug>, a human page"),
        "title": serializers.CharField(),
        "status": serializers.IntegerField(),
        "detail": serializers.CharField(),
        "instance": serializers.CharField(),
        "reason_code": serializers.CharField(),
        "trace_id": serializers.CharField(),
        "errors": FieldErrorSerializer(many=True, required=False),
        "available_usd": serializers.CharField(required=False),
        "required_usd": serializers.CharField(required=False),
        "limit_usd": serializers.CharField(required=False, help_text="KEY_SPEND_LIMIT: the refusing key's limit"),
        "spent_usd": serializers.CharField(required=False, help_text="KEY_SPEND_LIMIT: its spend in the window"),
        "window": serializers.ChoiceField(choices=["day", "month", "total"], required=False),
        "resets_at": serializers.DateTimeField(
            required=False, allow_null=True, help_text="KEY_SPEND_LIMIT: when the window restarts (null: total)"
        ),
        "key_prefix": serializers.CharField(required=False, help_text="KEY_SPEND_LIMIT: the key whose limit refused"),
    },
)


# Problems any /v1 call may get: its key refused (401) or its tenant suspended (403), its rate limit (429), a
# dependency down (503: authentication reads the database).
EVERYWHERE = ("UNAUTHENTICATED", "TENANT_SUSPENDED", "RATE_LIMITED", "UNAVAILABLE")
_EXAMPLE_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _reasons(item: int | str) -> list[str]:
    """A reason code as itself; a status as every reason code of the catalogue with that status."""
    if isinstance(item, str):
        return [item]
    return [code for code, problem in PROBLEMS.items() if problem.status == item]


def _problem_example(reason_code: str) -> OpenApiExample:
    problem = PROBLEMS[reason_code]
    value = {
        "type": f"/problems/{ProblemType.slug(reason_code)}",
        "title": problem.title,
        "status": problem.status,
        "detail": problem.description,
        "instance": "/v1/runs",
        "reason_code": reason_code,
        "trace_id": _EXAMPLE_TRACE_ID,
    }
    return OpenApiExample(
        reason_code, value=value, summary=problem.title, response_only=True, status_codes=[str(problem.status)]
    )


def problems(*items: int | str) -> dict[Any, Any]:
    """`responses=` entries for the problems an operation can answer: reason codes (from dpp.http.errors'
    catalogue, which gives their status) or statuses (every reason code of that status), plus EVERYWHERE. Each
    status lists its reason codes (`x-reason-codes`, added by document_common_headers from the examples) with an
    example problem of each."""
    by_status: dict[int, list[str]] = {}
    for item in (*items, *EVERYWHERE):
        for code in _reasons(item):
            codes = by_status.setdefault(PROBLEMS[code].status, [])
            if code not in codes:
                codes.append(code)
    return {
        (status, PROBLEM_MEDIA_TYPE): OpenApiResponse(
            ProblemSerializer,
            description="RFC 9457 problem; reason_code one of " + ", ".join(codes),
            examples=[_problem_example(code) for code in codes],
        )
        for status, codes in sorted(by_status.items())
    }


class ApiKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "dpp.http.auth.ApiKeyAuthentication"
    match_subclasses = True
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "dpp_live_<32 base62>_<8 hex>"}


_STRING = {"type": "string"}
# Headers on every /v1 response (dpp.http.middleware, dpp.http.ratelimit); Retry-After on the statuses that carry it.
COMMON_HEADERS = {
    "RateLimit-Policy": 'The quota counted against: `"<policy>";q=<requests>;w=60` (IETF draft). Policies: '
    "`submits` (POST /v1/runs), `reads` (every other call, cancels and quotes included; per tenant, from its "
    "plan), `anonymous` (per client address, without a good key). Absent, as is `RateLimit`, from a server that "
    "enforces no rate limits (no Redis configured).",
    "RateLimit": 'What is left of it: `"<policy>";r=<remaining>;t=<seconds until full>`; on a 429 `r=0` and `t` '
    "the seconds until the policy admits the next request, the same number as `Retry-After`.",
    "X-Request-ID": "The request's `X-Request-ID` echoed, or a new one.",
    "X-Trace-Id": "The trace id of this request (also in every problem and in the logs).",
    "tracestate": "The request's W3C tracestate echoed (normalised), when it came with a valid traceparent.",
}
RETRY_AFTER_STATUSES = ("429", "503")


# Request headers every operation takes (dpp.http.middleware); components.parameters, referenced by each.
REQUEST_HEADERS = {
    "X-Request-ID": "Your id of this request (1-128 of [A-Za-z0-9_.:-]), echoed back; else one is made.",
    "traceparent": "W3C Trace Context: a valid one sets the trace id (X-Trace-Id, the logs, the run's trace id).",
    "tracestate": "W3C Trace Context vendor state, carried with a valid traceparent to the logs (the worker's too) "
    "and echoed back.",
}


def _declare_request_headers(result: dict[str, Any]) -> None:
    parameters = result.setdefault("components", {}).setdefault("parameters", {})
    for name, description in REQUEST_HEADERS.items():
        parameters[name] = {"name": name, "in": "header", "required": False, "description": description}
        parameters[name]["schema"] = {"type": "string", "maxLength": 512 if name == "tracestate" else 128}
    for item in result.get("paths", {}).values():
        for operation in item.values():
            listed = operation.setdefault("parameters", [])
            listed.extend({"$ref": f"#/components/parameters/{name}"} for name in REQUEST_HEADERS)


def _list_reason_codes(response: dict[str, Any]) -> None:
    """`x-reason-codes` of a problem response: the reason codes its examples show, one each (see `problems`)."""
    media = response.get("content", {}).get(PROBLEM_MEDIA_TYPE, {})
    if media.get("examples"):  # keyed by reason code (drf-spectacular's keys are camel-cased names)
        media["examples"] = {example["value"]["reason_code"]: example for example in media["examples"].values()}
        response["x-reason-codes"] = list(media["examples"])


def document_common_headers(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: declare the common headers once and reference them everywhere; the
    request headers every operation takes; each problem response's reason codes."""
    components = result.setdefault("components", {}).setdefault("headers", {})
    for name, description in COMMON_HEADERS.items():
        components[name] = {"description": description, "schema": _STRING}
    components["Retry-After"] = {
        "description": "Seconds to wait before retrying (on a 429, the exhausted policy's RateLimit t).",
        "schema": {"type": "integer", "minimum": 1},
    }
    for item in result.get("paths", {}).values():
        for operation in item.values():
            for status, response in operation.get("responses", {}).items():
                names = [*COMMON_HEADERS, *(["Retry-After"] if status in RETRY_AFTER_STATUSES else [])]
                headers = response.setdefault("headers", {})
                for name in names:
                    headers.setdefault(name, {"$ref": f"#/components/headers/{name}"})
                _list_reason_codes(response)
    _declare_request_headers(result)
    return result


class OpenApiDocumentView(SpectacularJSONAPIView):
    """/v1/openapi.json, saved as `dpp-openapi.json`: the title (with its em dash) made an RFC 2047-encoded
    Content-Disposition that curl and browsers show as `=?utf-8?…`."""

    def _get_filename(self, request: Any, version: Any) -> str:
        return "dpp-openapi.json"


def lib_doc_excludes() -> list[type]:
    """drf-spectacular's GET_LIB_DOC_EXCLUDES: the search for a view's description (its method's docstring, else
    the first docstring up its bases) stops at these, so that the rate-limit mixin every /v1 view shares does not
    describe every operation (billing.apis.TenantApiView, above it, has a comment instead of a docstring)."""
    from drf_spectacular.plumbing import get_lib_doc_excludes

    from dpp.http.ratelimit import RateLimitedViewMixin

    return [*get_lib_doc_excludes(), RateLimitedViewMixin]  # type: ignore[no-untyped-call]
