"""/v1 routes of the runs app."""

from django.urls import path

from runs import apis, keys_api

urlpatterns = [
    path("runs", apis.RunsApi.as_view(), name="runs"),
    path("runs/<str:run_id>", apis.RunDetailApi.as_view(), name="run-detail"),
    path("runs/<str:run_id>/cancel", apis.RunCancelApi.as_view(), name="run-cancel"),
    path("runs/<str:run_id>/result", apis.RunResultApi.as_view(), name="run-result"),
    path("quotes", apis.QuotesApi.as_view(), name="quotes"),
    path("usage", apis.UsageApi.as_view(), name="usage"),
    path("packs", apis.PacksApi.as_view(), name="packs"),
    path("keys", keys_api.KeysApi.as_view(), name="keys"),
    path("keys/<str:key_prefix>", keys_api.KeyDetailApi.as_view(), name="key-detail"),
    path("keys/<str:key_prefix>/revoke", keys_api.KeyRevokeApi.as_view(), name="key-revoke"),
]
