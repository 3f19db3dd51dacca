"""/v1 endpoints about money: the account and the ledger. Thin: parse, call a selector, present."""

from __future__ import annotations

from typing import Any

from django.utils.cache import patch_vary_headers
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.models import Plan
from billing.presenters import account_object
from billing.selectors import ledger_item, ledger_list, plan_by_id, plan_get, statement_get
from dpp.http.errors import ApplicationError
from dpp.http.openapi import problems
from dpp.http.pagination import PAGE_PARAMETERS, decode_cursor, encode_cursor, parse_limit
from dpp.http.ratelimit import RateLimitedViewMixin
from dpp.http.renderers import CsvRenderer
from dpp.models import Tenant


class TenantApiView(RateLimitedViewMixin, APIView):
    # Base of every /v1 view: API-key auth, and the tenant's plan deciding its rate limits. A comment, not a
    # docstring: drf-spectacular describes an operation by the first docstring up its view's bases (up to
    # dpp.http.openapi.lib_doc_excludes), and this one is for developers.

    def tenant(self, request: Request) -> Tenant:
        assert isinstance(request.user, Tenant)  # noqa: S101 - guaranteed by dpp.http.auth.IsTenant
        return request.user

    def plan(self, request: Request) -> Plan:
        """The tenant's plan, read once per request."""
        cached: Plan | None = getattr(request, "_dpp_plan", None)
        if cached is None:
            plan_id = getattr(request.auth, "open_plan_id", None)  # read with the key (billing.auth)
            cached = plan_by_id(plan_id=plan_id) if plan_id else plan_get(tenant_id=self.tenant(request).pk)
            request._dpp_plan = cached  # type: ignore[attr-defined]
        return cached

    def rate_limit_for(self, request: Request, policy: str) -> int:
        plan = self.plan(request)
        return plan.submits_per_min if policy == "submits" else plan.reads_per_min


class AccountOut(serializers.Serializer[Any]):
    tenant_id = serializers.CharField()
    plan = serializers.CharField()
    available_usd = serializers.CharField(help_text='4-decimal USD string, e.g. "9.9890"')
    held_usd = serializers.CharField()
    currency = serializers.CharField()


class LedgerItemOut(serializers.Serializer[Any]):
    transaction_id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=["TOPUP", "RESERVE", "SETTLE", "ADJUSTMENT"])
    run_id = serializers.UUIDField(allow_null=True)
    created_at = serializers.DateTimeField()
    reason = serializers.CharField(allow_null=True)
    available_delta_usd = serializers.CharField(help_text="signed 4-decimal USD string")
    held_delta_usd = serializers.CharField()
    charged_usd = serializers.CharField(help_text="what went to revenue")


# A field named `data` would shadow Serializer.data: list pages are described with inline serializers.
LedgerPageOut = inline_serializer(
    "LedgerPage", {"data": LedgerItemOut(many=True), "next_cursor": serializers.CharField(allow_null=True)}
)


class AccountApi(TenantApiView):
    @extend_schema(
        operation_id="account_get",
        summary="Your plan and balances",
        description="Your plan and balances: available (what new reservations can use) and held (reserved by runs "
        "that have not ended), 4-decimal USD strings.",
        responses={200: AccountOut, **problems()},
        tags=["account"],
    )
    def get(self, request: Request) -> Response:
        return Response(account_object(tenant_id=self.tenant(request).pk, plan_code=self.plan(request).code))


class LedgerApi(TenantApiView):
    @extend_schema(
        operation_id="ledger_list",
        summary="Your ledger entries",
        description=(
            "Every money movement that touched your accounts, newest first, one item per transaction: its "
            "kind (TOPUP, RESERVE, SETTLE, ADJUSTMENT), the signed deltas of your available and held "
            "balances, and what went to revenue."
        ),
        parameters=PAGE_PARAMETERS,
        responses={200: LedgerPageOut, **problems("VALIDATION_ERROR")},
        tags=["account"],
    )
    def get(self, request: Request) -> Response:
        position = decode_cursor(request.query_params.get("cursor"))
        limit = parse_limit(request.query_params.get("limit"))
        before_id = _cursor_id(position) if position else None
        rows = list(ledger_list(tenant_id=self.tenant(request).pk, before_id=before_id)[: limit + 1])
        next_cursor = encode_cursor({"id": rows[limit - 1].pk}) if len(rows) > limit else None
        return Response({"data": [ledger_item(txn) for txn in rows[:limit]], "next_cursor": next_cursor})


def _cursor_id(position: dict[str, Any]) -> int:
    """The transaction id a ledger cursor names; a cursor we did not issue is a 422, not the first page."""
    value = position.get("id")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApplicationError(
            "VALIDATION_ERROR", "The cursor is not valid.", errors=[{"field": "cursor", "message": "invalid cursor"}]
        )
    return value


class StatementLineOut(LedgerItemOut):
    available_usd = serializers.CharField(help_text="your available balance after this line")


class StatementOut(serializers.Serializer[Any]):
    tenant_id = serializers.CharField()
    month = serializers.CharField(help_text="YYYY-MM, a UTC calendar month")
    opening_available_usd = serializers.CharField()
    opening_held_usd = serializers.CharField()
    topups_usd = serializers.CharField()
    charges_usd = serializers.CharField(help_text="what went to revenue")
    adjustments_usd = serializers.CharField(help_text="signed")
    closing_available_usd = serializers.CharField(help_text="for the current month: now")
    closing_held_usd = serializers.CharField()
    runs = serializers.IntegerField(help_text="runs accepted in the month")
    lines = StatementLineOut(many=True)


class StatementApi(TenantApiView):
    renderer_classes = [JSONRenderer, CsvRenderer]
    csv_columns = tuple(StatementLineOut().fields)

    @extend_schema(
        operation_id="statement_get",
        summary="Your statement of a month",
        description=(
            "Your statement of a UTC calendar month (YYYY-MM): opening and closing balances, the month's top-ups, "
            "charges and adjustments, how many runs were accepted, and every ledger item of the month, oldest "
            "first, with your available balance after it. Opening + top-ups - charges + adjustments = closing "
            "available + closing held - opening held, and each month opens where the previous one closed. "
            "`Accept: text/csv` gives the lines as CSV: one header row, then one row per line."
        ),
        responses={
            (200, "application/json"): StatementOut,
            (200, "text/csv"): OpenApiTypes.STR,
            **problems("VALIDATION_ERROR"),
        },
        tags=["account"],
    )
    def get(self, request: Request, month: str) -> Response:
        statement = statement_get(tenant_id=self.tenant(request).pk, month=month)
        if request.accepted_renderer.format == CsvRenderer.format:
            response = Response(
                statement["lines"],
                headers={"Content-Disposition": f'attachment; filename="statement-{month}.csv"'},
            )
        else:
            response = Response(statement)
        patch_vary_headers(response, ["Accept"])  # one URL, two representations: caches must tell them apart
        return response
