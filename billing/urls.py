"""/v1 routes of the billing app."""

from django.urls import path

from billing import apis

urlpatterns = [
    path("account", apis.AccountApi.as_view(), name="account"),
    path("ledger", apis.LedgerApi.as_view(), name="ledger"),
    path("statements/<str:month>", apis.StatementApi.as_view(), name="statement"),
]
