"""Runs, read-only, for finance auditing and on-call: every run with its money, ledger, timeline and result.

The changelist costs one page whatever the size of the table (dpp.admin_tools); search is exact and indexed
(run id, Idempotency-Key, trace id), never a LIKE. No one adds, changes or deletes a run here: runs move only
through runs.services. The filtered changelist exports as CSV, streamed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.admin.views.main import ORDER_VAR
from django.core.exceptions import PermissionDenied
from django.db.models import F, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from billing.models import LedgerTransaction
from dpp.admin_tools import (
    CsvExportMixin,
    FinanceDateFilter,
    ReadOnlyModelAdmin,
    TenantFilter,
    changelist_queryset,
    column,
    compact_instant,
    csv_text,
    parse_uuid,
    short_id,
    stream_csv,
    usd_or_dash,
)
from dpp.http.errors import DependencyUnavailableError
from dpp.money import format_usd
from packs.registry import all_packs
from runs import results
from runs.activity import ACTIVITY_DAYS, activity_days
from runs.models import CHARGE_ORDER, Run, RunStatus

INPUTS_SHOWN_CHARS = 20_000


def _usd_or_blank(micros: int | None) -> str:
    return "" if micros is None else format_usd(micros)


def _iso_or_blank(value: datetime | None) -> str:
    return value.isoformat() if value else ""


# (CSV header, the column read, how its cell is written), in the export's order.
EXPORT_COLUMNS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("run_id", "pk", str),
    ("tenant_id", "tenant_id", str),
    ("pack_type", "pack_type", str),
    ("status", "status", str),
    ("money_state", "money_state", str),
    ("reserved_usd", "reserved_micros", format_usd),
    ("minimum_fee_usd", "minimum_fee_micros", format_usd),
    ("charged_usd", "charged_micros", _usd_or_blank),
    ("released_usd", "released_micros", _usd_or_blank),
    ("reason_code", "reason_code", str),
    ("created_at", "created_at", _iso_or_blank),
    ("started_at", "started_at", _iso_or_blank),
    ("completed_at", "completed_at", _iso_or_blank),
    ("idempotency_key", "idempotency_key", csv_text),
    ("trace_id", "trace_id", csv_text),
)
EXPORT_HEADER = tuple(header for header, _, _ in EXPORT_COLUMNS)


def _millis(value: datetime | None) -> str:
    """A timestamp to the millisecond, in UTC: steps of one run are often within the same minute."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds") if value else "-"


def _instant(field: str, label: str) -> Callable[..., str]:
    return column(label, field, _millis, sortable=False)


def _released(run: Run) -> int | None:
    return None if run.charged_micros is None else run.reserved_micros - run.charged_micros


class PackTypeFilter(admin.SimpleListFilter):
    """The registry's packs: no SELECT DISTINCT over the runs table."""

    title = "pack type"
    parameter_name = "pack_type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Run]) -> list[tuple[str, str]]:
        return [(pack.pack_type, pack.pack_type) for pack in all_packs()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> QuerySet[Run]:
        value = self.value()
        return queryset.filter(pack_type=value) if value else queryset


class LeaseFilter(admin.SimpleListFilter):
    """Runs past their lease: PROCESSING, not finalizing, lease over (what the reaper re-drives; partial index)."""

    title = "lease"
    parameter_name = "lease"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Run]) -> list[tuple[str, str]]:
        return [("expired", "past its lease")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> QuerySet[Run]:
        if self.value() != "expired":
            return queryset
        return queryset.filter(past_lease())


def past_lease() -> Q:
    """A run the reaper would call stale now (reaper.services.reap_stale_leases), on the runs_leased index."""
    return Q(status=RunStatus.PROCESSING, finalize_stage__isnull=True, lease_expires_at__lt=timezone.now())


@admin.register(Run)
class RunAdmin(CsvExportMixin, ReadOnlyModelAdmin):
    list_display = ("short_id", "tenant", "pack_type", "status", "money_state", "reserved", "charged", "created_utc")
    list_display_links = ("short_id",)
    list_filter = (
        ("created_at", FinanceDateFilter),
        "status",
        "money_state",
        LeaseFilter,
        PackTypeFilter,
        TenantFilter,
    )
    list_select_related = ("tenant",)
    sortable_by = ("created_utc", "reserved", "charged")
    totals = (("reserved", "reserved_micros"), ("charged", "charged_micros"))
    refusal = (
        "Runs are read-only here, for everyone: a run moves only through DPP's services (submit, worker, "
        "reaper, cancel), each with its ledger transaction. A money correction is an ADJUSTMENT, from the "
        "tenant's page."
    )
    search_fields = ("id",)  # shows the search box; exact_matches does the exact, indexed lookups
    search_help_text = "A run id, an Idempotency-Key or a trace id, exactly."
    search_exact = True
    fieldsets = (
        (None, {"fields": ("id", "tenant", "pack_type", "profile_version", "status", "money_state")}),
        ("Money (USD)", {"fields": ("reserved", "minimum_fee", "charged", "released")}),
        ("Ledger transactions", {"fields": ("ledger",)}),
        (
            "Timeline",
            {"fields": ("created", "started", "claimed", "completed", "updated", "cancel_requested")},
        ),
        ("Error", {"fields": ("reason_code", "error_detail")}),
        ("Result", {"fields": ("result_link", "result_key", "result_sha256", "result_bytes")}),
        (
            "Request and execution",
            {
                "classes": ("collapse",),
                "fields": (
                    "idempotency_key",
                    "trace_id",
                    "request_hash",
                    "timebox_sec",
                    "inputs_json",
                    "finalize_stage",
                    "version",
                    "lease_expires",
                    "redriven",
                    "redrive_count",
                ),
            },
        ),
    )
    readonly_fields = tuple(flatten_fieldsets(fieldsets))  # every field shown is read-only
    created = _instant("created_at", "created (accepted)")
    started = _instant("started_at", "started (leased)")
    claimed = _instant("claimed_at", "claimed (finalize)")
    completed = _instant("completed_at", "completed")
    updated = _instant("updated_at", "updated")
    cancel_requested = _instant("cancel_requested_at", "cancel requested")
    lease_expires = _instant("lease_expires_at", "lease expires")
    redriven = _instant("published_at", "last re-publish by the reaper (attempted)")
    created_utc = column("created (UTC)", "created_at", compact_instant)
    reserved = column("reserved", "reserved_micros", format_usd)
    minimum_fee = column("minimum fee", "minimum_fee_micros", format_usd, sortable=False)

    def get_urls(self) -> list[URLPattern]:
        wrap: Callable[..., Any] = self.admin_site.admin_view
        result = path("<path:object_id>/result/", wrap(self.result_view), name="runs_run_result")
        activity = path("activity/", wrap(self.activity_view), name="runs_run_activity")
        return [activity, result, *super().get_urls()]

    def activity_view(self, request: HttpRequest) -> HttpResponse:
        """Revenue and runs per day over the last 30 days, as bars drawn on the server (no script, no CDN)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        days = activity_days(days=ACTIVITY_DAYS)
        most_runs = max((day.runs for day in days), default=0) or 1
        most_revenue = max((day.revenue_micros for day in days), default=0) or 1
        rows = [
            {
                "day": day.day,
                "runs": day.runs,
                "revenue": format_usd(day.revenue_micros),
                "runs_pct": round(100 * day.runs / most_runs),
                "revenue_pct": round(100 * day.revenue_micros / most_revenue),
            }
            for day in days
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Revenue and runs per day, last {ACTIVITY_DAYS} days",
            "rows": rows,
            "total_runs": sum(day.runs for day in days),
            "total_revenue": format_usd(sum(day.revenue_micros for day in days)),
        }
        return TemplateResponse(request, "runs/admin/activity.html", context)

    @admin.display(description="result envelope")
    def result_link(self, run: Run) -> str:
        if not run.result_key:
            return "-"
        url = reverse("admin:runs_run_result", args=[run.pk], current_app=self.admin_site.name)
        return format_html('<a href="{}">open the envelope</a> (as the agent gets it)', url)

    def result_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        """The stored envelope, as GET /v1/runs/{id}/result serves it to its owner (a signed URL on S3)."""
        run: Run | HttpResponseRedirect = self.object_or_changelist(request, object_id)
        if isinstance(run, HttpResponseRedirect):
            return run
        change_url = reverse("admin:runs_run_change", args=[run.pk], current_app=self.admin_site.name)
        try:
            response = results.result_response(run) if run.result_key else None
        except DependencyUnavailableError:
            self.message_user(request, "The result storage cannot be read now; try again later.", messages.ERROR)
            return HttpResponseRedirect(change_url)
        if response is None:
            self.message_user(request, "This run has no result in storage.", messages.WARNING)
            return HttpResponseRedirect(change_url)
        return response

    def get_ordering(self, request: HttpRequest) -> tuple[str, ...]:
        """The ties of a sort (`?o=`, which the changelist puts first) in the sort's own direction, newest first
        under "most first": `ORDER BY money DESC, created_at DESC, id DESC` or all ASC, one index read forwards or
        backwards (runs_charged, runs_reserved), never a mixed order that must sort every run."""
        ascending = not request.GET.get(ORDER_VAR, "-").startswith("-")
        return ("created_at", "id") if ascending else ("-created_at", "-id")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Run]:
        # The inputs (up to 256 KiB a run) are read only by the detail page, which loads them on demand.
        queryset: QuerySet[Run] = super().get_queryset(request)
        return queryset.defer("inputs")

    def exact_matches(self, queryset: QuerySet[Run], term: str) -> QuerySet[Run]:
        # Each on an index: the primary key, runs_trace, and the idempotency key.
        match = Q(trace_id=term) | Q(idempotency_key=term)
        run_id = parse_uuid(term)
        if run_id is not None:
            match |= Q(pk=run_id)
        return queryset.filter(match)

    @admin.display(description="run")
    def short_id(self, obj: Run) -> str:
        return short_id(obj.pk)  # the list links it to the run's page (list_display_links)

    @admin.display(description="charged", ordering=CHARGE_ORDER)  # open runs below every charge (runs_charged)
    def charged(self, obj: Run) -> str:
        return usd_or_dash(obj.charged_micros)

    @admin.display(description="released (reserved − charged)")
    def released(self, obj: Run) -> str:
        return usd_or_dash(_released(obj))

    @admin.display(description="inputs")
    def inputs_json(self, obj: Run) -> SafeString:
        text = json.dumps(obj.inputs, indent=2, ensure_ascii=False, sort_keys=True)
        if len(text) > INPUTS_SHOWN_CHARS:
            text = text[:INPUTS_SHOWN_CHARS] + "\n… (truncated)"
        return format_html("<pre>{}</pre>", text)

    @admin.display(description="transactions")
    def ledger(self, obj: Run) -> SafeString:
        # RESERVE and SETTLE are the only kinds with a run id: naming them lets PostgreSQL use the partial
        # unique index on (run_id, kind).
        transactions = (
            LedgerTransaction.objects.filter(run_id=obj.pk, kind__in=LedgerTransaction.RUN_KINDS)
            .prefetch_related("entries")
            .order_by("pk")
        )
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">#{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:billing_ledgertransaction_change", args=[txn.pk]),
                    txn.pk,
                    txn.kind,
                    txn.created_at.isoformat(),
                    "; ".join(f"{entry.account_id} {format_usd(entry.amount_micros)}" for entry in txn.entries.all()),
                    txn.reason or "",
                )
                for txn in transactions
            ),
        )
        if not rows:
            return format_html("<p>{}</p>", "No ledger transaction for this run.")
        return format_html(
            "<table><thead><tr><th>transaction</th><th>kind</th><th>created at</th><th>entries (USD)</th>"
            "<th>reason</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        """The changelist's runs — same filters, search and order — as CSV, streamed."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            queryset = changelist_queryset(self, request)
        except IncorrectLookupParameters:
            self.message_user(request, "These filters cannot be exported.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:runs_run_changelist"))
        return stream_csv(filename="dpp-runs.csv", header=EXPORT_HEADER, rows=_export_rows(queryset))


def _export_rows(queryset: QuerySet[Run]) -> Iterator[list[str]]:
    columns = [name for _, name, _ in EXPORT_COLUMNS]
    # No charge yet is no release either: NULL minus anything is NULL.
    released = F("reserved_micros") - F("charged_micros")
    rows = queryset.select_related(None).annotate(released_micros=released).values_list(*columns)
    # A server-side cursor on PostgreSQL: rows arrive in chunks while the response is being sent.
    for row in rows.iterator(chunk_size=2000):
        yield [show(value) for (_, _, show), value in zip(EXPORT_COLUMNS, row, strict=True)]
