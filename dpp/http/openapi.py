"""OpenAPI pieces shared by every API: the bearer security scheme, the RFC 9457 problem schema, and the headers
every /v1 response carries."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from drf_spectacular.views import SpectacularJSONAPIView
from rest_framework import serializers

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldErrorSerializer(serializers.Serializer[Any]):
    field = serializers.CharField()
    message = serializers.CharField()


# An RFC 9457 problem; `errors` on validation failures; 402 adds available_usd and required_usd.
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
    },
)


def problems(*statuses: int) -> dict[Any, Any]:
    """`responses=` entries for the given error statuses, plus those every /v1 call may get: 401, 429, and 503
    (authentication reads the database; a database that cannot be reached is 503 UNAVAILABLE with Retry-After)."""
    return {
        (status, PROBLEM_MEDIA_TYPE): OpenApiResponse(ProblemSerializer, description="RFC 9457 problem")
        for status in sorted({401, 429, 503, *statuses})
    }


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "dpp.http.auth.ApiKeyAuthentication"
    match_subclasses = True
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "dpp_live_<32 base62>_<8 hex>"}


_STRING = {"type": "string"}
# Headers on every /v1 response (dpp.http.middleware, dpp.http.ratelimit); Retry-After on the statuses that carry it.
COMMON_HEADERS = {
    "RateLimit-Policy": 'The quota counted against: `"<policy>";q=<requests>;w=60` (IETF draft). Policies: '
    "`submits` (POST /v1/runs), `reads` (every other call, cancels included; per tenant, from its plan), "
    "`anonymous` (per client address, without a good key).",
    "RateLimit": 'What is left of it: `"<policy>";r=<remaining>;t=<seconds until full>`; on a 429 `r=0` and `t` '
    "the seconds until the policy admits the next request, the same number as `Retry-After`.",
    "X-Request-ID": "The request's `X-Request-ID` echoed, or a new one.",
    "X-Trace-Id": "The trace id of this request (also in every problem and in the logs).",
}
RETRY_AFTER_STATUSES = ("429", "503")


def document_common_headers(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: declare the common headers once and reference them everywhere."""
    components = result.setdefault("components", {}).setdefault("headers", {})
    for name, description in COMMON_HEADERS.items():
        components[name] = {"description": description, "schema": _STRING}
    components["Retry-After"] = {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
    for item in result.get("paths", {}).values():
        for operation in item.values():
            for status, response in operation.get("responses", {}).items():
                names = [*COMMON_HEADERS, *(["Retry-After"] if status in RETRY_AFTER_STATUSES else [])]
                headers = response.setdefault("headers", {})
                for name in names:
                    headers.setdefault(name, {"$ref": f"#/components/headers/{name}"})
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

    return [*get_lib_doc_excludes(), RateLimitedViewMixin]
