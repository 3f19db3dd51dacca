"""The ledger, read-only: accounts, transactions with their entries, plans; and the CSV export of transactions.

Nobody adds, changes or deletes a transaction or an entry here, superusers included (the database refuses it
too: append-only triggers). A mistake is corrected by a new ADJUSTMENT, from the tenant's page.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.views.main import ORDER_VAR
from django.core.exceptions import PermissionDenied
from django.db.models import BigIntegerField, CharField, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce, Concat
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import reverse
from django.utils.html import format_html

from billing.admin.forms import TransactionExportForm
from billing.models import Account, LedgerEntry, LedgerTransaction, Plan
from dpp.admin_tools import (
    CsvExportMixin,
    FinanceDateFilter,
    InputFilter,
    ReadOnlyModelAdmin,
    ReadOnlyTabularInline,
    TenantFilter,
    active_range,
    column,
    compact_instant,
    csv_text,
    form_page,
    parse_row_id,
    parse_uuid,
    short_link,
    stream_csv,
)
from dpp.money import format_usd

EXPORT_HEADER = (
    "transaction_id",
    "created_at",
    "kind",
    "tenant_id",
    "run_id",
    "actor",
    "reason",
    "available_delta_usd",
    "held_delta_usd",
    "charged_usd",
)


def _leg(account_id: Any = None, *, account_prefix: str = "") -> Coalesce:
    # A transaction has at most one entry per account (and one per platform kind, on one of its shards); one
    # lookup on the entries' transaction index, evaluated only for the rows returned (a page, or the export's
    # stream), never for the whole table.
    entries = LedgerEntry.objects.filter(transaction=OuterRef("pk"))
    if account_prefix:
        entries = entries.filter(account__id__startswith=account_prefix)
    else:
        entries = entries.filter(account_id=account_id)
    # No entry on an account is a delta of 0 on it.
    return Coalesce(Subquery(entries.order_by().values("amount_micros")[:1]), 0, output_field=BigIntegerField())


def with_deltas(queryset: QuerySet[LedgerTransaction]) -> QuerySet[LedgerTransaction]:
    """Annotate each transaction with its deltas on its tenant's two accounts and the charge (to revenue)."""
    return queryset.annotate(
        available_delta_micros=_leg(Concat(OuterRef("tenant_id"), Value("/available"), output_field=CharField())),
        held_delta_micros=_leg(Concat(OuterRef("tenant_id"), Value("/held"), output_field=CharField())),
        charged_micros=_leg(account_prefix=Account.platform_prefix(Account.Kind.REVENUE)),
    )


def run_link(run_id: uuid.UUID | None) -> str:
    if run_id is None:
        return "—"
    # A URL name, not an import: billing does not depend on runs.
    return short_link(reverse("admin:runs_run_change", args=[run_id]), run_id)


class RunFilter(InputFilter):
    lookup = "run_id"

    def clean(self, value: str) -> object | None:
        return parse_uuid(value)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        # Only RESERVE and SETTLE carry a run: saying so lets PostgreSQL use the partial unique index.
        if self.value():
            queryset = queryset.filter(kind__in=LedgerTransaction.RUN_KINDS)
        return super().queryset(request, queryset)


class LedgerEntryInline(ReadOnlyTabularInline):
    model = LedgerEntry
    fields = ("account", "amount")
    readonly_fields = fields

    @admin.display(description="amount (USD)")
    def amount(self, obj: LedgerEntry) -> str:
        return format_usd(obj.amount_micros)


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(CsvExportMixin, ReadOnlyModelAdmin):
    list_display = (
        "id",
        "created",
        "kind",
        "tenant",
        "run",
        "short_actor",
        "short_reason",
        "available_delta",
        "held_delta",
        "charged",
    )
    list_filter = (("created_at", FinanceDateFilter), "kind", TenantFilter, RunFilter)
    list_select_related = ("tenant",)
    sortable_by = ("id", "created", "available_delta", "held_delta", "charged")
    totals = (
        ("available Δ", "available_delta_micros"),
        ("held Δ", "held_delta_micros"),
        ("charged", "charged_micros"),
    )
    # Summing the entries of a day's 170,000 transactions takes ~0.4 s at 1M runs: only a tenant's or a run's.
    totals_need = ("tenant", "run")
    totals_hint = (
        "Totals: filter by a tenant or a run to sum these columns (the runs list totals the charges of any period)."
    )
    refusal = (
        "The ledger is append-only: a transaction and its entries are never changed or deleted, not by a "
        "superuser either (the database refuses it too), so that every balance can always be recomputed from "
        "its entries and audited. A mistake is corrected by a new ADJUSTMENT with a reason, from the tenant's page."
    )
    search_fields = ("id",)
    search_help_text = "A transaction id or a run id, exactly."
    search_exact = True
    fields = (
        "id",
        "kind",
        "tenant",
        "run",
        "actor",
        "reason",
        "trace",
        "created_at",
        "available_delta",
        "held_delta",
        "charged",
    )
    readonly_fields = fields
    inlines = (LedgerEntryInline,)
    ordering = ("-id",)
    created = column("created (UTC)", "created_at", compact_instant)

    @admin.display(description="trace id")
    def trace(self, obj: LedgerTransaction) -> str:
        """A run's trace id; on a movement posted from an admin form, that form's one-time code."""
        if obj.kind in LedgerTransaction.RUN_KINDS:
            return obj.trace_id or "-"
        return f"admin form code {obj.trace_id}" if obj.trace_id else "- (posted from the command line)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[LedgerTransaction]:
        return with_deltas(super().get_queryset(request))

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """Drops a delta sort from `?o=` where get_sortable_by offers none (the header links never make one)."""
        order = request.GET.get(ORDER_VAR)
        if order:
            sortable = self.get_sortable_by(request)
            columns = list(self.get_list_display(request))  # no actions here: `o` counts these columns from 0
            kept = [
                part
                for part in order.split(".")
                if part.lstrip("-").isdigit()
                and int(part.lstrip("-")) < len(columns)
                and columns[int(part.lstrip("-"))] in sortable
            ]
            params = request.GET.copy()
            params[ORDER_VAR] = ".".join(kept)
            request.GET = params  # type: ignore[assignment]  # a mutable copy in place of the request's
        return super().changelist_view(request, extra_context)

    def get_sortable_by(self, request: HttpRequest) -> tuple[str, ...]:
        """The deltas are per-row subqueries: sorting by one reads every matching transaction (5 s over the whole
        ledger at 1M runs, 0.5 s over a day), so they sort within a tenant or a run, like the totals. The runs
        list sorts charges over any period."""
        if any(request.GET.get(name) for name in self.totals_need):
            return tuple(self.sortable_by)
        return ("id", "created")

    def totals_of(self, queryset: QuerySet[Any]) -> list[tuple[str, str]]:
        """The three deltas summed over the filtered transactions, from their entries in one query (a join on the
        entries' transaction index; summing the per-row subqueries would run three lookups per transaction)."""
        entries = LedgerEntry.objects.filter(transaction__in=queryset.order_by().values("pk"))
        sums = entries.aggregate(
            available=Sum("amount_micros", filter=Q(account__id__endswith="/available")),
            held=Sum("amount_micros", filter=Q(account__id__endswith="/held")),
            charged=Sum("amount_micros", filter=Q(account__kind=Account.Kind.REVENUE)),
        )
        return [(label, format_usd(sums[key] or 0)) for (label, _), key in zip(self.totals, sums, strict=True)]

    def exact_matches(self, queryset: QuerySet[LedgerTransaction], term: str) -> QuerySet[LedgerTransaction]:
        row_id = parse_row_id(term)
        if row_id is not None:
            return queryset.filter(pk=row_id)
        run_id = None if term.isdigit() else parse_uuid(term)
        if run_id is None:
            return queryset.none()
        return queryset.filter(run_id=run_id, kind__in=LedgerTransaction.RUN_KINDS)

    @admin.display(description="run", ordering="run_id")
    def run(self, obj: LedgerTransaction) -> str:
        return run_link(obj.run_id)

    @admin.display(description="actor")
    def short_actor(self, obj: LedgerTransaction) -> str:
        return _shortened(obj.actor, 18)

    @admin.display(description="reason")
    def short_reason(self, obj: LedgerTransaction) -> str:
        return _shortened(obj.reason, 24)

    @admin.display(description="available Δ (USD)", ordering="available_delta_micros")
    def available_delta(self, obj: LedgerTransaction) -> str:
        return format_usd(getattr(obj, "available_delta_micros", 0))

    @admin.display(description="held Δ (USD)", ordering="held_delta_micros")
    def held_delta(self, obj: LedgerTransaction) -> str:
        return format_usd(getattr(obj, "held_delta_micros", 0))

    @admin.display(description="charged (USD)", ordering="charged_micros")
    def charged(self, obj: LedgerTransaction) -> str:
        return format_usd(getattr(obj, "charged_micros", 0))

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        """GET with a date range: the transactions as CSV, streamed; without one: the form."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        params = request.GET
        if "date_from" in params or "date_to" in params:
            form = TransactionExportForm(params)
        else:  # from the list's "Export CSV": its filters as the form's starting values
            form = TransactionExportForm(initial=_export_initial(params))
        if not form.is_bound or not form.is_valid():
            return form_page(
                request,
                self,
                title="Export transactions (CSV)",
                form=form,
                submit_label="Download CSV",
                method="get",
                intro="Every transaction created in the range, oldest first; amounts are 4-decimal USD strings.",
            )
        start, end = form.created_range()
        queryset = LedgerTransaction.objects.filter(created_at__gte=start, created_at__lt=end)
        if form.cleaned_data["tenant"]:
            queryset = queryset.filter(tenant_id=form.cleaned_data["tenant"])
        if form.cleaned_data["kind"]:
            queryset = queryset.filter(kind=form.cleaned_data["kind"])
        filename = f"dpp-transactions-{start.date().isoformat()}-{form.cleaned_data['date_to'].isoformat()}.csv"
        return stream_csv(filename=filename, header=EXPORT_HEADER, rows=_export_rows(queryset))


def _shortened(text: str, length: int) -> str:
    """A free-text cell cut to fit its column; the whole text is on the transaction's page."""
    return text if len(text) <= length else f"{text[: length - 1]}…"


def _export_initial(params: Mapping[str, str]) -> dict[str, Any]:
    """The changelist's tenant, kind and created-date filters as the export form's values: the date range filter
    (`created_at__range__gte`/`__lte`, both days included), else raw `created_at__gte`/`__lt` (the end day is
    inclusive in the form)."""
    range_from, range_to = active_range(params, "created_at")
    if range_from or range_to:
        return {
            "tenant": params.get("tenant"),
            "kind": params.get("kind__exact"),
            "date_from": range_from,
            "date_to": range_to,
        }

    def day(raw: str | None) -> dt.date | None:
        try:
            return dt.date.fromisoformat(raw[:10]) if raw else None
        except ValueError:
            return None

    until = day(params.get("created_at__lt"))
    return {
        "tenant": params.get("tenant"),
        "kind": params.get("kind__exact"),
        "date_from": day(params.get("created_at__gte")),
        "date_to": until - dt.timedelta(days=1) if until and until > dt.date.min else None,
    }


def _export_rows(queryset: QuerySet[LedgerTransaction]) -> Iterator[list[str]]:
    rows = with_deltas(queryset).order_by("created_at", "pk")
    # A server-side cursor on PostgreSQL: rows arrive in chunks while the response is being sent.
    for txn in rows.iterator(chunk_size=2000):
        yield [
            str(txn.pk),
            txn.created_at.isoformat(),
            txn.kind,
            csv_text(txn.tenant_id),
            str(txn.run_id) if txn.run_id else "",
            csv_text(txn.actor),
            csv_text(txn.reason),
            format_usd(getattr(txn, "available_delta_micros", 0)),
            format_usd(getattr(txn, "held_delta_micros", 0)),
            format_usd(getattr(txn, "charged_micros", 0)),
        ]


class AccountFilter(InputFilter):
    lookup = "account_id"
    placeholder = "e.g. acme/available, @revenue/00"


class TransactionFilter(InputFilter):
    lookup = "transaction_id"

    def clean(self, value: str) -> object | None:
        return parse_row_id(value)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "transaction_link", "kind", "created_at", "account", "amount")
    list_filter = (AccountFilter, TransactionFilter)
    list_select_related = ("transaction",)
    sortable_by = ("id",)
    fields = ("id", "transaction_link", "kind", "created_at", "account", "amount")
    readonly_fields = fields
    ordering = ("-id",)

    @admin.display(description="transaction", ordering="transaction_id")
    def transaction_link(self, obj: LedgerEntry) -> str:
        url = reverse("admin:billing_ledgertransaction_change", args=[obj.transaction_id])
        return format_html('<a href="{}">#{}</a>', url, obj.transaction_id)

    @admin.display(description="kind")
    def kind(self, obj: LedgerEntry) -> str:
        return obj.transaction.kind

    @admin.display(description="created at")
    def created_at(self, obj: LedgerEntry) -> Any:
        return obj.transaction.created_at

    @admin.display(description="amount (USD)", ordering="amount_micros")
    def amount(self, obj: LedgerEntry) -> str:
        return format_usd(obj.amount_micros)


_SUMMED_KINDS = (
    (Account.Kind.AVAILABLE, "available (all tenants)"),
    (Account.Kind.HELD, "held (all tenants)"),
    (Account.Kind.REVENUE, "@revenue"),  # the sum of its shards
    (Account.Kind.FUNDING, "@funding"),
)


def balances_by_kind() -> dict[str, Any]:
    """Every account's balance summed by kind, in one statement, and their total, which must be zero: each
    transaction sums to zero (SPEC §2.1, invariant 1). For the accounts list; `audit_ledger` checks the rest."""
    sums = dict(Account.objects.order_by().values_list("kind").annotate(total=Sum("balance_micros")))
    total = sum(sums.values(), 0)
    return {
        "by_kind": [(label, format_usd(sums.get(kind) or 0)) for kind, label in _SUMMED_KINDS],
        "total": format_usd(total),
        "total_is_zero": total == 0,
    }


@admin.register(Account)
class AccountAdmin(ReadOnlyModelAdmin):
    change_list_template = "billing/admin/account_change_list.html"
    list_display = ("id", "tenant_id", "kind", "balance", "entries_link")
    list_filter = ("kind", TenantFilter)
    search_fields = ("id",)
    search_help_text = "An account id, exactly (acme/available, acme/held, @revenue/00, @funding/15)."
    search_exact = True
    fields = ("id", "tenant_id", "kind", "balance", "entries_sum", "created_at", "entries_link")
    readonly_fields = fields
    ordering = ("id",)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {**(extra_context or {}), "balances": balances_by_kind()})

    @admin.display(description="sum of its entries (USD)")
    def entries_sum(self, obj: Account) -> str:
        """On a tenant account's own page (one indexed SUM): the stored balance must equal it (SPEC §2.1, 2).

        Balance and sum are read by one statement, so a transaction committing meanwhile cannot make them look
        different. The platform accounts carry every charge and top-up ever made: `audit_ledger` checks them."""
        if obj.tenant_id is None:
            return "not summed here (every charge ever made): run audit_ledger"
        entries = LedgerEntry.objects.filter(account=OuterRef("pk")).order_by().values("account")
        total_of = Subquery(entries.annotate(total=Sum("amount_micros")).values("total")[:1])
        balance, total = Account.objects.filter(pk=obj.pk).values_list("balance_micros", total_of).get()
        total = total or 0
        verdict = "equals the balance" if total == balance else "DIFFERS from the balance: run audit_ledger"
        return f"{format_usd(total)} — {verdict}"

    @admin.display(description="balance (USD)", ordering="balance_micros")
    def balance(self, obj: Account) -> str:
        return format_usd(obj.balance_micros)

    @admin.display(description="entries")
    def entries_link(self, obj: Account) -> str:
        url = reverse("admin:billing_ledgerentry_changelist")
        return format_html('<a href="{}?{}">entries</a>', url, urlencode({"account": obj.pk}))


@admin.register(Plan)
class PlanAdmin(ReadOnlyModelAdmin):
    list_display = ("code", "name", "packs", "submits_per_min", "reads_per_min", "max_concurrent_runs")
    fields = ("code", "name", "packs", "submits_per_min", "reads_per_min", "max_concurrent_runs", "created_at")
    readonly_fields = fields

    @admin.display(description="packs (max cost per run, USD)")
    def packs(self, obj: Plan) -> str:
        return ", ".join(f"{pack} ≤ {format_usd(int(cost))}" for pack, cost in obj.pack_max_cost_micros.items())
