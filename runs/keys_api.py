"""The /v1/keys API (SPEC §8): agent keys with spend limits, delegated by a key that may manage keys.

Thin views: parse the body, call runs.keys, present the key objects.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from billing.apis import TenantApiView
from dpp.http.errors import ApplicationError
from dpp.http.openapi import problems
from dpp.http.pagination import PAGE_PARAMETERS, decode_cursor, encode_cursor, parse_limit
from dpp.models import ApiKey, SpendWindow
from dpp.money import parse_max_cost, parse_usd
from dpp.services import KeyLimits
from runs import keys

_CREATE_MEMBERS = frozenset({"label", "limits", "can_manage_keys", "expires_at"})
_PATCH_MEMBERS = frozenset({"label", "limits", "expires_at"})
_LIMIT_MEMBERS = frozenset({"spend_limit_usd", "spend_window", "max_cost_per_run_usd", "allowed_packs"})


def _invalid(field: str, message: str) -> ApplicationError:
    return ApplicationError("VALIDATION_ERROR", f"{field}: {message}", errors=[{"field": field, "message": message}])


def _object(body: Any, known: frozenset[str], name: str = "body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _invalid(name, "must be a JSON object")
    unknown = sorted(set(body) - known)
    if unknown:
        raise _invalid(unknown[0] if name == "body" else f"{name}.{unknown[0]}", "unknown member")
    return body


def _packs(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(pack, str) for pack in value):
        raise _invalid("limits.allowed_packs", "must be a list of pack types, or null")
    return tuple(dict.fromkeys(value))


def _window(value: Any) -> str:
    if value is None:
        return ""
    if value not in SpendWindow.values:
        raise _invalid("limits.spend_window", "must be one of day, month, total")
    return str(value)


def _limits(raw: Any) -> dict[str, Any]:
    """The members given, as KeyLimits field names (null: cleared)."""
    given = _object(raw, _LIMIT_MEMBERS, "limits")
    parsed: dict[str, Any] = {}
    if "spend_limit_usd" in given:
        value = given["spend_limit_usd"]
        parsed["spend_limit_micros"] = None if value is None else parse_usd(value, field="limits.spend_limit_usd")
    if "spend_window" in given:
        parsed["spend_window"] = _window(given["spend_window"])
    if "max_cost_per_run_usd" in given:
        value = given["max_cost_per_run_usd"]
        field = "limits.max_cost_per_run_usd"
        parsed["max_cost_per_run_micros"] = None if value is None else parse_max_cost(value, field=field)
    if "allowed_packs" in given:
        parsed["allowed_packs"] = _packs(given["allowed_packs"])
    return parsed


def _expires(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is None or parsed.tzinfo is None:
        raise _invalid("expires_at", "must be an RFC 3339 date-time with Z or an offset, or null")
    return parsed.astimezone(UTC)


def _label(value: Any) -> str:
    if not isinstance(value, str) or len(value) > ApiKey._meta.get_field("label").max_length:  # type: ignore[operator]
        raise _invalid("label", "must be a string of at most 100 characters")
    return value


_LIMITS_OUT = inline_serializer(
    "KeyLimits",
    {
        "spend_limit_usd": serializers.CharField(allow_null=True, help_text='4-decimal USD, e.g. "5.0000"'),
        "spend_window": serializers.ChoiceField(choices=SpendWindow.values, allow_null=True),
        "max_cost_per_run_usd": serializers.CharField(allow_null=True),
        "allowed_packs": serializers.ListField(child=serializers.CharField(), allow_null=True),
    },
)


def _spend_fields() -> dict[str, serializers.Field[Any, Any, Any, Any]]:
    return {
        "window": serializers.ChoiceField(choices=SpendWindow.values),
        "window_start": serializers.DateTimeField(),
        "spent_usd": serializers.CharField(),
        "remaining_usd": serializers.CharField(),
    }


_KEY_FIELDS: dict[str, serializers.Field[Any, Any, Any, Any]] = {
    "key_prefix": serializers.CharField(),
    "label": serializers.CharField(),
    "parent_prefix": serializers.CharField(allow_null=True),
    "can_manage_keys": serializers.BooleanField(),
    "created_at": serializers.DateTimeField(),
    "expires_at": serializers.DateTimeField(allow_null=True),
    "revoked_at": serializers.DateTimeField(allow_null=True),
    "last_used_at": serializers.DateTimeField(allow_null=True),
    "limits": _LIMITS_OUT,
    "spend": inline_serializer("KeySpend", _spend_fields(), allow_null=True),
}
KeyOut = inline_serializer("ApiKeyObject", _KEY_FIELDS)
KeyCreatedOut = inline_serializer("ApiKeyCreated", {**_KEY_FIELDS, "api_key": serializers.CharField()})
KeyPageOut = inline_serializer(
    "ApiKeyPage", {"data": KeyOut.__class__(many=True), "next_cursor": serializers.CharField(allow_null=True)}
)
KeyCreateIn = inline_serializer(
    "ApiKeyCreate",
    {
        "label": serializers.CharField(required=False),
        "limits": _LIMITS_OUT.__class__(required=False),
        "can_manage_keys": serializers.BooleanField(required=False, default=False),
        "expires_at": serializers.DateTimeField(required=False, allow_null=True),
    },
)
KeyPatchIn = inline_serializer(
    "ApiKeyPatch",
    {
        "label": serializers.CharField(required=False),
        "limits": _LIMITS_OUT.__class__(required=False),
        "expires_at": serializers.DateTimeField(required=False, allow_null=True),
    },
)
_CREATE_EXAMPLE = OpenApiExample(
    "an agent with 5 USD a day",
    value={"label": "agent-7", "limits": {"spend_limit_usd": "5.0000", "spend_window": "day"}},
    request_only=True,
)


def _caller(request: Request) -> ApiKey:
    assert isinstance(request.auth, ApiKey)  # noqa: S101 - guaranteed by dpp.http.auth
    return request.auth


def _shown(request: Request, key_prefix: str) -> dict[str, Any]:
    """The key's object as it is now in the database."""
    return keys.key_objects(keys=[keys.key_get(caller=_caller(request), key_prefix=key_prefix)])[0]


class KeysApi(TenantApiView):
    @extend_schema(
        operation_id="keys_create",
        summary="Create a key below yours",
        description="A new key whose parent is the calling key, with limits within the caller's (422 "
        "KEY_LIMIT_OVER_PARENT), at most 3 levels below the tenant's first key. The full key is in `api_key`, "
        "shown only in this answer. Needs a key that may manage keys (403 KEY_CANNOT_MANAGE_KEYS).",
        request=KeyCreateIn,
        examples=[_CREATE_EXAMPLE],
        responses={201: KeyCreatedOut, **problems(403, 422)},
        tags=["keys"],
    )
    def post(self, request: Request) -> Response:
        body = _object(request.data, _CREATE_MEMBERS)
        limits = KeyLimits(**_limits(body.get("limits", {})), expires_at=_expires(body.get("expires_at")))
        manage = body.get("can_manage_keys", False)
        if not isinstance(manage, bool):
            raise _invalid("can_manage_keys", "must be true or false")
        issued = keys.key_create(
            caller=_caller(request),
            plan=self.plan(request),
            label=_label(body.get("label", "")),
            limits=limits,
            can_manage_keys=manage,
        )
        obj = _shown(request, issued.api_key.prefix)
        return Response({**obj, "api_key": issued.secret}, status=201)

    @extend_schema(
        operation_id="keys_list",
        summary="List your key and the keys below it",
        description="The calling key and every key below it, newest first, with their limits and spend.",
        parameters=PAGE_PARAMETERS,
        responses={200: KeyPageOut, **problems(403, 422)},
        tags=["keys"],
    )
    def get(self, request: Request) -> Response:
        limit = parse_limit(request.query_params.get("limit"))
        position = decode_cursor(request.query_params.get("cursor"))
        page = keys.keys_visible(caller=_caller(request)).order_by("-pk")
        if position is not None:
            if not isinstance(position.get("id"), int):
                raise _invalid("cursor", "invalid cursor")
            page = page.filter(pk__lt=position["id"])
        rows = list(page[: limit + 1])
        next_cursor = encode_cursor({"id": rows[limit - 1].pk}) if len(rows) > limit else None
        return Response({"data": keys.key_objects(keys=rows[:limit]), "next_cursor": next_cursor})


class KeyDetailApi(TenantApiView):
    @extend_schema(
        operation_id="keys_get",
        summary="Get a key",
        description="Your key or one below it, by its 16-character prefix; any other prefix is a 404.",
        responses={200: KeyOut, **problems(403, 404)},
        tags=["keys"],
    )
    def get(self, request: Request, key_prefix: str) -> Response:
        api_key = keys.key_get(caller=_caller(request), key_prefix=key_prefix)
        return Response(keys.key_objects(keys=[api_key])[0])

    @extend_schema(
        operation_id="keys_update",
        summary="Change a key's label or limits",
        description="The members given change (a limit set to null is removed: the parent's applies), with the "
        "rules of creation. A limit lowered below the current spend is allowed and refuses new submits.",
        request=KeyPatchIn,
        examples=[OpenApiExample("lower the daily limit", value={"limits": {"spend_limit_usd": "1.0000"}})],
        responses={200: KeyOut, **problems(403, 404, 422)},
        tags=["keys"],
    )
    def patch(self, request: Request, key_prefix: str) -> Response:
        body = _object(request.data, _PATCH_MEMBERS)
        limits = _limits(body["limits"]) if "limits" in body else None
        if "expires_at" in body:
            limits = {**(limits or {}), "expires_at": _expires(body["expires_at"])}
        api_key = keys.key_update(
            caller=_caller(request),
            plan=self.plan(request),
            key_prefix=key_prefix,
            label=_label(body["label"]) if "label" in body else None,
            limits=limits,
        )
        return Response(_shown(request, api_key.prefix))


class KeyRevokeApi(TenantApiView):
    @extend_schema(
        operation_id="keys_revoke",
        summary="Revoke a key and every key below it",
        description="At once: from the next request on, the key and all keys below it answer 401.",
        request=None,
        responses={200: KeyOut, **problems(403, 404)},
        tags=["keys"],
    )
    def post(self, request: Request, key_prefix: str) -> Response:
        api_key = keys.key_revoke(caller=_caller(request), key_prefix=key_prefix)
        return Response(_shown(request, api_key.prefix))
