"""/v1 routes of the webhooks (SPEC §10)."""

from django.urls import path

from billing import webhook_apis as apis

urlpatterns = [
    path("webhook-endpoints", apis.WebhookEndpointsApi.as_view(), name="webhook-endpoints"),
    path("webhook-endpoints/<str:endpoint_id>", apis.WebhookEndpointApi.as_view(), name="webhook-endpoint"),
    path(
        "webhook-endpoints/<str:endpoint_id>/rotate-secret",
        apis.WebhookSecretRotateApi.as_view(),
        name="webhook-endpoint-rotate-secret",
    ),
    path(
        "webhook-endpoints/<str:endpoint_id>/deliveries",
        apis.WebhookDeliveriesApi.as_view(),
        name="webhook-endpoint-deliveries",
    ),
    path("events/<str:event_id>/redeliver", apis.EventRedeliverApi.as_view(), name="event-redeliver"),
]
