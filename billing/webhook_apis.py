"""/v1 endpoints of the webhooks (SPEC §10). Thin: parse, call dpp.webhooks, present. Here rather than in dpp
because every /v1 view's rate limits come from the tenant's plan (TenantApiView), which dpp knows nothing of."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from billing.apis import TenantApiView
from dpp.http.errors import ApplicationError
from dpp.http.openapi import problems
from dpp.http.pagination import PAGE_PARAMETERS, decode_cursor, encode_cursor, parse_limit
from dpp.models import ApiKey, WebhookDelivery, WebhookEndpoint
from dpp.webhooks import endpoints
from dpp.webhooks.outbox import EVENT_TYPES
from dpp.webhooks.presenters import delivery_object, endpoint_object

_EVENTS = serializers.ListField(child=serializers.ChoiceField(choices=list(EVENT_TYPES)))


class EndpointIn(serializers.Serializer[Any]):
    url = serializers.CharField(help_text="https; every address its host resolves to must be public")
    events = _EVENTS
    description = serializers.CharField(required=False)


class EndpointPatchIn(serializers.Serializer[Any]):
    url = serializers.CharField(required=False)
    events = serializers.ListField(child=serializers.ChoiceField(choices=list(EVENT_TYPES)), required=False)
    description = serializers.CharField(required=False)
    status = serializers.ChoiceField(choices=["enabled", "disabled"], required=False)


class EndpointOut(serializers.Serializer[Any]):
    id = serializers.CharField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    description = serializers.CharField()
    status = serializers.ChoiceField(choices=["enabled", "disabled"])
    created_at = serializers.DateTimeField()


class EndpointWithSecretOut(EndpointOut):
    secret = serializers.CharField(help_text="whsec_<base64>: shown only here; sign-verify with it")


class DeliveryOut(serializers.Serializer[Any]):
    event_id = serializers.CharField()
    event_type = serializers.CharField()
    status = serializers.ChoiceField(choices=["pending", "delivered", "failed"])
    attempts = serializers.IntegerField()
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    delivered_at = serializers.DateTimeField(allow_null=True)


def _page(name: str, item: serializers.Serializer[Any]) -> Any:
    return inline_serializer(name, {"data": item, "next_cursor": serializers.CharField(allow_null=True)})


RedeliveryOut = inline_serializer("Redelivery", {"queued": serializers.IntegerField()})
CREATE_EXAMPLE = OpenApiExample(
    "run endings",
    value={"url": "https://example.com/hooks/dpp", "events": ["run.completed", "run.failed"], "description": "ci"},
    request_only=True,
)


def _body(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise ApplicationError("VALIDATION_ERROR", "The body must be a JSON object.")
    return request.data


class WebhooksApiView(TenantApiView):
    # Every webhook operation: only a key without a parent (SPEC §8). Checked after DRF's initial() has
    # authenticated and counted the request (the rate limit comes before any other check, SPEC §4.2) and before
    # any lookup, so the refusal is the same whichever id is named.

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        assert isinstance(request.auth, ApiKey)  # noqa: S101 - guaranteed by dpp.http.auth.IsTenant
        endpoints.webhook_manager_require(request.auth)


# The 403 of a key with a parent (WebhooksApiView), beside TENANT_SUSPENDED's.
_KEY_WITH_PARENT = "FORBIDDEN"


class WebhookEndpointsApi(WebhooksApiView):
    @extend_schema(
        operation_id="webhook_endpoints_list",
        summary="Your webhook endpoints",
        description="Your webhook endpoints, newest first (at most 10). Secrets are never shown here. Webhook "
        "endpoints belong to the tenant: every webhook operation needs a key without a parent (else 403 FORBIDDEN).",
        responses={200: _page("WebhookEndpointPage", EndpointOut(many=True)), **problems(_KEY_WITH_PARENT)},
        tags=["webhooks"],
    )
    def get(self, request: Request) -> Response:
        rows = WebhookEndpoint.objects.filter(tenant=self.tenant(request)).order_by("-created_at", "-id")
        return Response({"data": [endpoint_object(endpoint) for endpoint in rows], "next_cursor": None})

    @extend_schema(
        operation_id="webhook_endpoints_create",
        summary="Register a webhook endpoint",
        description="A new endpoint told of the events it names (Standard Webhooks 1.0 signatures). The URL must "
        "be https and every address its host resolves to public (else 422 WEBHOOK_URL_BLOCKED); at most 10 "
        "endpoints per tenant. The answer carries the signing `secret`, shown only here.",
        request=EndpointIn,
        examples=[CREATE_EXAMPLE],
        responses={201: EndpointWithSecretOut, **problems(_KEY_WITH_PARENT, "VALIDATION_ERROR", "WEBHOOK_URL_BLOCKED")},
        tags=["webhooks"],
    )
    def post(self, request: Request) -> Response:
        body = _body(request)
        issued = endpoints.webhook_endpoint_create(
            tenant=self.tenant(request),
            url=body.get("url"),
            events=body.get("events"),
            description=body.get("description", ""),
        )
        return Response(endpoint_object(issued.endpoint, secret=issued.secret), status=201)


class WebhookEndpointApi(WebhooksApiView):
    @extend_schema(
        operation_id="webhook_endpoints_get",
        summary="Get a webhook endpoint",
        description="One of your endpoints (without its secret); another tenant's → 404.",
        responses={200: EndpointOut, **problems(_KEY_WITH_PARENT, "NOT_FOUND")},
        tags=["webhooks"],
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        endpoint = endpoints.webhook_endpoint_get(tenant=self.tenant(request), endpoint_id=endpoint_id)
        return Response(endpoint_object(endpoint))

    @extend_schema(
        operation_id="webhook_endpoints_update",
        summary="Change a webhook endpoint",
        description="Change `url` (checked as at registration), `events`, `description` or `status` (`enabled` "
        "re-enables an endpoint disabled after 5 days of failures).",
        request=EndpointPatchIn,
        responses={
            200: EndpointOut,
            **problems(_KEY_WITH_PARENT, "NOT_FOUND", "VALIDATION_ERROR", "WEBHOOK_URL_BLOCKED"),
        },
        tags=["webhooks"],
    )
    def patch(self, request: Request, endpoint_id: str) -> Response:
        endpoint = endpoints.webhook_endpoint_update(
            tenant=self.tenant(request), endpoint_id=endpoint_id, changes=dict(_body(request))
        )
        return Response(endpoint_object(endpoint))

    @extend_schema(
        operation_id="webhook_endpoints_delete",
        summary="Delete a webhook endpoint",
        description="The endpoint and its deliveries are gone; nothing more is sent to it.",
        responses={204: None, **problems(_KEY_WITH_PARENT, "NOT_FOUND")},
        tags=["webhooks"],
    )
    def delete(self, request: Request, endpoint_id: str) -> Response:
        endpoints.webhook_endpoint_delete(tenant=self.tenant(request), endpoint_id=endpoint_id)
        return Response(status=204)


class WebhookSecretRotateApi(WebhooksApiView):
    @extend_schema(
        operation_id="webhook_endpoints_rotate_secret",
        summary="Rotate a webhook endpoint's secret",
        description="A new signing secret, shown only here; for 24 h every delivery is signed with both the new "
        "and the previous one (two `v1,` entries in webhook-signature).",
        request=None,
        responses={200: EndpointWithSecretOut, **problems(_KEY_WITH_PARENT, "NOT_FOUND")},
        tags=["webhooks"],
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        issued = endpoints.webhook_endpoint_rotate_secret(tenant=self.tenant(request), endpoint_id=endpoint_id)
        return Response(endpoint_object(issued.endpoint, secret=issued.secret))


class WebhookDeliveriesApi(WebhooksApiView):
    @extend_schema(
        operation_id="webhook_endpoints_deliveries",
        summary="An endpoint's deliveries",
        description="The deliveries to one of your endpoints, newest first, cursor pages: each event's status "
        "(pending, delivered, failed), attempts, last status code or error, next attempt.",
        parameters=PAGE_PARAMETERS,
        responses={
            200: _page("WebhookDeliveryPage", DeliveryOut(many=True)),
            **problems(_KEY_WITH_PARENT, "NOT_FOUND"),
        },
        tags=["webhooks"],
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        endpoint = endpoints.webhook_endpoint_get(tenant=self.tenant(request), endpoint_id=endpoint_id)
        position = decode_cursor(request.query_params.get("cursor"))
        limit = parse_limit(request.query_params.get("limit"))
        rows = WebhookDelivery.objects.filter(endpoint=endpoint).select_related("event").order_by("-id")
        if position:
            before = position.get("id")
            if not isinstance(before, int) or isinstance(before, bool):
                raise ApplicationError("VALIDATION_ERROR", "The cursor is not valid.")
            rows = rows.filter(id__lt=before)
        page = list(rows[: limit + 1])
        next_cursor = encode_cursor({"id": page[limit - 1].pk}) if len(page) > limit else None
        return Response({"data": [delivery_object(row) for row in page[:limit]], "next_cursor": next_cursor})


class EventRedeliverApi(WebhooksApiView):
    @extend_schema(
        operation_id="events_redeliver",
        summary="Redeliver an event",
        description="Queue one more attempt of the event to every endpoint subscribed to it (same webhook-id).",
        request=None,
        responses={
            202: inline_serializer("Redelivery", {"queued": serializers.IntegerField()}),
            **problems(_KEY_WITH_PARENT, "NOT_FOUND"),
        },
        tags=["webhooks"],
    )
    def post(self, request: Request, event_id: str) -> Response:
        queued = endpoints.webhook_event_redeliver(tenant=self.tenant(request), event_id=event_id)
        return Response({"queued": queued}, status=202)
