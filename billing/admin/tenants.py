"""Tenants with their money, API keys, and the two manual money movements: top-up and adjustment.

The tenant list annotates both balances and the open plan in its one page query (no N+1). A top-up or an
adjustment is a form that calls billing.services.ledger_manual_post with actor "admin:<username>", a mandatory
reason and the form's one-time code as trace id; it is gated by the permissions `billing.topup` /
`billing.adjust` (group `finance`), not by the tenant's change permission. Tenants themselves are read-only
here: they are created by `create_tenant` (their accounts and plan come with them), and no one edits a tenant's
money except through the ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Q, QuerySet, Subquery, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from billing.admin.forms import STALE_FORM, AdjustForm, TopupForm
from billing.models import Account, KeySpend, LedgerTransaction, Plan, TenantPlan
from billing.selectors import balances_get, statement_get, statement_month_parse
from billing.services import ledger_manual_post
from dpp.admin_tools import (
    DppModelAdmin,
    ReadOnlyTabularInline,
    TenantFilter,
    form_page,
    staff_actor,
    state_filter,
    tenant_link,
    usd_or_dash,
)
from dpp.http.errors import ApplicationError
from dpp.models import ApiKey, Tenant
from dpp.money import format_usd
from dpp.services import api_key_revoke_by_id, tenant_set_status

TOPUP_PERMISSION = "billing.topup"
ADJUST_PERMISSION = "billing.adjust"
# Revoking a key is the one write on keys the admin offers; it needs dpp's change permission on keys.
REVOKE_PERMISSION = "dpp.change_apikey"


def _balance(kind: str) -> Subquery:
    # One index lookup per listed tenant (unique (tenant, kind)), evaluated for the page's rows only.
    return Subquery(Account.objects.filter(tenant=OuterRef("pk"), kind=kind).order_by().values("balance_micros")[:1])


class PlanFilter(admin.SimpleListFilter):
    title = "plan"
    parameter_name = "plan"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Tenant]) -> list[tuple[str, str]]:
        return list(Plan.objects.values_list("code", "name"))

    def queryset(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> QuerySet[Tenant]:
        value = self.value()
        if not value:
            return queryset
        return queryset.filter(plan_history__ended_at__isnull=True, plan_history__plan__code=value)


class ApiKeyInline(ReadOnlyTabularInline):
    model = ApiKey
    fields = ("prefix", "label", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    show_change_link = True
    ordering = ("-created_at",)


class TenantPlanInline(ReadOnlyTabularInline):
    model = TenantPlan
    fields = ("plan", "started_at", "ended_at", "actor", "reason")
    readonly_fields = fields
    verbose_name = "plan period"
    verbose_name_plural = "plan history"

    def get_queryset(self, request: HttpRequest) -> QuerySet[TenantPlan]:
        return super().get_queryset(request).select_related("plan")


@admin.register(Tenant)
class TenantAdmin(DppModelAdmin):
    list_display = ("id", "name", "status", "plan", "available", "held", "created_at")
    list_filter = ("status", PlanFilter)
    # A part of the id or of the name, any case (ILIKE '%…%'): the tenants table is small (one row per customer,
    # thousands), its scan costs a few milliseconds; see docs/BENCHMARKS.md (admin lists).
    search_fields = ("id", "name")  # no prefix: icontains
    search_help_text = "A part of the tenant's id or name, any case."
    totals = (("available", "available_micros"), ("held", "held_micros"))
    fields = ("id", "name", "status", "plan", "available", "held", "created_at")
    readonly_fields = fields
    inlines = (ApiKeyInline, TenantPlanInline)
    change_form_template = "billing/admin/tenant_change_form.html"
    actions = ("suspend_selected", "reactivate_selected")

    def has_suspend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("dpp.change_tenant")

    @admin.action(description="Suspend selected tenants (their keys get 403 TENANT_SUSPENDED)", permissions=["suspend"])
    def suspend_selected(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._set_status(request, queryset, Tenant.Status.SUSPENDED)

    @admin.action(description="Reactivate selected tenants", permissions=["suspend"])
    def reactivate_selected(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._set_status(request, queryset, Tenant.Status.ACTIVE)

    def _set_status(self, request: HttpRequest, queryset: QuerySet[Tenant], status: str) -> None:
        changed = 0
        for tenant in queryset:
            if tenant_set_status(tenant=tenant, status=status, actor=staff_actor(request)):
                changed += 1
                self.log_change(request, tenant, f"Status set to {status}")
        self.message_user(request, f"{changed} tenant(s) now {status}.", messages.SUCCESS)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        open_plan = TenantPlan.objects.filter(tenant=OuterRef("pk"), ended_at__isnull=True)
        queryset: QuerySet[Tenant] = super().get_queryset(request)
        return queryset.annotate(
            available_micros=_balance(Account.Kind.AVAILABLE),
            held_micros=_balance(Account.Kind.HELD),
            plan_code=Subquery(open_plan.order_by().values("plan__code")[:1]),
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a tenant comes with its accounts and plan: `manage.py create_tenant`

    def has_change_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return False

    def totals_of(self, queryset: QuerySet[Any]) -> list[tuple[str, str]]:
        """Both balances summed over the filtered tenants: one aggregate over their accounts."""
        accounts = Account.objects.filter(tenant__in=queryset.order_by().values("pk"))
        sums = accounts.aggregate(
            available=Sum("balance_micros", filter=Q(kind=Account.Kind.AVAILABLE)),
            held=Sum("balance_micros", filter=Q(kind=Account.Kind.HELD)),
        )
        return [("available", usd_or_dash(sums["available"] or 0)), ("held", usd_or_dash(sums["held"] or 0))]

    @admin.display(description="plan", ordering="plan_code")
    def plan(self, obj: Tenant) -> str:
        return str(getattr(obj, "plan_code", None) or "—")

    @admin.display(description="available (USD)", ordering="available_micros")
    def available(self, obj: Tenant) -> str:
        return usd_or_dash(getattr(obj, "available_micros", None))

    @admin.display(description="held (USD)", ordering="held_micros")
    def held(self, obj: Tenant) -> str:
        return usd_or_dash(getattr(obj, "held_micros", None))

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        wrap: Callable[..., Any] = self.admin_site.admin_view
        return [
            path("<path:object_id>/topup/", wrap(self.topup_view), name="{}_{}_topup".format(*info)),
            path("<path:object_id>/adjust/", wrap(self.adjust_view), name="{}_{}_adjust".format(*info)),
            path("<path:object_id>/statement/", wrap(self.statement_view), name="{}_{}_statement".format(*info)),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra = {
            **(extra_context or {}),
            "can_topup": request.user.has_perm(TOPUP_PERMISSION),
            "can_adjust": request.user.has_perm(ADJUST_PERMISSION),
        }
        return super().change_view(request, object_id, form_url, extra)

    def statement_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The tenant's statement of a month (?month=YYYY-MM, this month by default): totals and every line with
        the running balance, from billing.selectors.statement_get, as the API and `manage.py statement` show it."""
        tenant: Tenant | HttpResponseRedirect = self.object_or_changelist(request, object_id)
        if isinstance(tenant, HttpResponseRedirect):
            return tenant
        month = request.GET.get("month") or timezone.now().strftime("%Y-%m")
        try:
            start, end = statement_month_parse(month)
        except ApplicationError:
            self.message_user(request, f"{month!r} is not a month (YYYY-MM): this month instead.", messages.WARNING)
            month = timezone.now().strftime("%Y-%m")
            start, end = statement_month_parse(month)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": tenant,
            "title": f"Statement of {tenant.pk} for {month}",
            "statement": statement_get(tenant_id=tenant.pk, month=month),
            "previous_month": (start - timedelta(days=1)).strftime("%Y-%m"),
            "next_month": end.strftime("%Y-%m"),
        }
        return TemplateResponse(request, "billing/admin/tenant_statement.html", context)

    def topup_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._movement_view(request, object_id, TopupForm, TOPUP_PERMISSION)

    def adjust_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._movement_view(request, object_id, AdjustForm, ADJUST_PERMISSION)

    def _movement_view(
        self, request: HttpRequest, object_id: str, form_class: type[TopupForm | AdjustForm], permission: str
    ) -> HttpResponse:
        if not request.user.has_perm(permission):
            raise PermissionDenied
        tenant: Tenant | HttpResponseRedirect = self.object_or_changelist(request, object_id)
        if isinstance(tenant, HttpResponseRedirect):
            return tenant
        if request.method == "POST":
            form = form_class(request.POST)
            if form.is_valid():
                response = self._post_movement(request, tenant, form)
                if response is not None:
                    return response
            else:
                form.renew_nonce_if_refused()
        else:
            form = form_class(initial={"nonce": form_class.new_nonce()})
        topup = isinstance(form, TopupForm)
        return form_page(
            request,
            self,
            title=f"{'Top up' if topup else 'Adjust'} {tenant.pk}",
            form=form,
            submit_label="Top up" if topup else "Post adjustment",
            original=tenant,
            intro=(
                f"Available {usd_or_dash(getattr(tenant, 'available_micros', None))} USD, "
                f"held {usd_or_dash(getattr(tenant, 'held_micros', None))} USD. "
                + ("Funding → available." if topup else "Available ↔ revenue or funding; never below zero.")
            ),
        )

    def _post_movement(
        self, request: HttpRequest, tenant: Tenant, form: TopupForm | AdjustForm
    ) -> HttpResponseRedirect | None:
        """Post the transaction and redirect; None when the service refused it (the error is on the form)."""
        change_url = reverse("admin:dpp_tenant_change", args=[quote(tenant.pk)], current_app=self.admin_site.name)
        data = form.cleaned_data
        adjust = isinstance(form, AdjustForm)
        kind = LedgerTransaction.Kind.ADJUSTMENT if adjust else LedgerTransaction.Kind.TOPUP
        amount = form.signed_amount_micros() if isinstance(form, AdjustForm) else data["amount"]
        try:
            posted = ledger_manual_post(
                tenant=tenant,
                kind=kind,
                amount_micros=amount,
                counterparty=data["counterparty"] if adjust else "",
                actor=staff_actor(request),
                reason=data["reason"],
                trace_id=data["nonce"],  # one form, one transaction: a resubmitted form answers the first
            )
        except ApplicationError as exc:
            if exc.reason_code == "IDEMPOTENCY_KEY_REUSED":  # a code copied from another form
                form.add_error("nonce", STALE_FORM)
                form.renew_nonce_if_refused()
            else:
                form.add_error(None, exc.detail)
            return None
        txn = posted.transaction
        if posted.replayed:
            self.message_user(request, f"Already posted as transaction #{txn.pk}; nothing more.", messages.WARNING)
            return HttpResponseRedirect(change_url)
        available = format_usd(balances_get(tenant_id=tenant.pk).available_micros)
        summary = f"{kind} #{txn.pk} of {format_usd(amount)} USD: {data['reason']}"
        self.log_change(request, tenant, summary)
        self.message_user(request, f"Posted {summary}. Available is now {available} USD.", messages.SUCCESS)
        return HttpResponseRedirect(change_url)


RevokedFilter = state_filter("revoked", column="revoked_at", when_null=("no", "active"), when_set=("yes", "revoked"))


@admin.register(ApiKey)
class ApiKeyAdmin(DppModelAdmin):
    """Keys are recognised by their 16-character prefix; the hash is never shown and the key cannot be. Each key
    shows its place in its tenant's tree (depth, parent), its limits (SPEC §8) and the spend of its current window
    (its own counter; a key without a spend limit of its own counts against the keys above it). Read-only."""

    fields = (
        "prefix",
        "tenant_link",
        "label",
        "place",
        "can_manage_keys",
        "limits",
        "spend",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    readonly_fields = fields
    # The list shows every field but whether the key may create keys below it.
    list_display = tuple(name for name in fields if name != "can_manage_keys")
    list_filter = (RevokedFilter, TenantFilter)
    search_fields = ("prefix",)
    search_help_text = "The key's 16-character prefix, exactly (e.g. dpp_live_AbC1234)."
    search_exact = True  # on the indexed prefix
    actions = ("revoke_selected",)
    ordering = ("-created_at",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        # The current window's counter of each listed key, in the page's query.
        now = timezone.now()
        counter = KeySpend.objects.filter(
            api_key=OuterRef("pk"), window_kind=OuterRef("spend_window"), window_start__lte=now, window_end__gt=now
        )
        spent = Subquery(counter.order_by().values("spent_micros")[:1])
        keys: QuerySet[ApiKey] = super().get_queryset(request)
        return keys.select_related("parent").annotate(spent_micros=spent)

    @admin.display(description="place in the tree")
    def place(self, obj: ApiKey) -> str:
        if obj.parent is None:
            return "first key (no parent)"
        return f"level {obj.depth}, below {obj.parent.prefix}"

    @admin.display(description="limits")
    def limits(self, obj: ApiKey) -> str:
        parts = []
        if obj.spend_limit_micros is not None:
            parts.append(f"{format_usd(obj.spend_limit_micros)} USD per {obj.spend_window}")
        if obj.max_cost_per_run_micros is not None:
            parts.append(f"≤ {format_usd(obj.max_cost_per_run_micros)} USD per run")
        if obj.allowed_packs is not None:
            parts.append("packs: " + (", ".join(obj.allowed_packs) or "none"))
        return "; ".join(parts) or "none of its own"

    @admin.display(description="spend (current window)")
    def spend(self, obj: ApiKey) -> str:
        if obj.spend_limit_micros is None:
            return "—"
        spent = getattr(obj, "spent_micros", None) or 0
        window = "in total" if obj.spend_window == "total" else f"this {obj.spend_window}"
        return f"{format_usd(spent)} of {format_usd(obj.spend_limit_micros)} USD {window}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a key is shown once when issued: `manage.py issue_api_key`

    def has_change_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(REVOKE_PERMISSION)

    @admin.display(description="tenant", ordering="tenant_id")
    def tenant_link(self, obj: ApiKey) -> str:
        return tenant_link(obj.tenant_id)

    @admin.action(description="Revoke selected keys", permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        actor = staff_actor(request)
        revoked = already = 0
        for api_key in queryset:
            if api_key_revoke_by_id(api_key=api_key, actor=actor):
                revoked += 1
                self.log_change(request, api_key, "Revoked")
            else:
                already += 1
        note = f" ({already} already revoked)" if already else ""
        self.message_user(request, f"Revoked {revoked} key(s){note}.", messages.SUCCESS)
