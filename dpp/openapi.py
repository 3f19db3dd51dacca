"""OpenAPI pieces shared by every API: the bearer security scheme and the RFC 9457 problem schema."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, inline_serializer
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
    """`responses=` entries for the given error statuses, plus 401 and 429 that every /v1 call may get."""
    return {
        (status, PROBLEM_MEDIA_TYPE): OpenApiResponse(ProblemSerializer, description="RFC 9457 problem")
        for status in sorted({401, 429, *statuses})
    }


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "dpp.auth.ApiKeyAuthentication"
    match_subclasses = True
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "dpp_live_<32 base62>_<8 hex>"}
