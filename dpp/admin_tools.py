"""Building blocks shared by every admin of DPP (billing, runs, reaper).

The tables behind the admin grow to millions of rows (ledger entries, runs), so a changelist must cost what one
page costs: no COUNT(*) over the whole table (`EstimatedCountPaginator`), no facet counts, no "N total" count,
no list filter that loads every distinct value (`InputFilter` instead), no LIKE search. Exports stream.

Amounts are shown with `dpp.money.format_usd`, through `usd_or_dash` where there may be none. A finance list fits a
1400-px screen: short ids (`short_link`), compact instants (`compact_instant`), no wrapping (dpp/admin/change_list).
Its money columns sort, its date filter offers the auditor's periods and a custom range (`FinanceDateFilter`), and
`totals` sums each money column of the filtered rows in one aggregate query.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.contrib.contenttypes import views as contenttype_views
from django.contrib.contenttypes.fields import GenericForeignKey
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import CharField, Field, ForeignObjectRel, Model, QuerySet, Sum
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from rangefilter.filters import DateRangeQuickSelectListFilter

from dpp.db import sql
from dpp.money import format_usd

if TYPE_CHECKING:  # django-stubs' generics; at run time the classes take no subscript
    _Paginator = Paginator[Any]
    _ModelAdmin = admin.ModelAdmin[Any]
    _TabularInline = admin.TabularInline[Any, Any]
    from django.template.response import _TemplateForResponseT
else:
    _Paginator, _ModelAdmin, _TabularInline = Paginator, admin.ModelAdmin, admin.TabularInline

# Cells that a spreadsheet would run as a formula (CSV injection); such text cells get a leading apostrophe.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class EstimatedCountPaginator(_Paginator):
    """A paginator whose count never reads a large table to the end.

    - Unfiltered list on PostgreSQL: the planner's row estimate (`pg_class.reltuples`, kept by ANALYZE and
      autovacuum) when it says the table holds more than `COUNT_CAP` rows.
    - Otherwise: an exact count capped at `COUNT_CAP` — `SELECT COUNT(*) FROM (SELECT id … LIMIT cap + 1)`,
      which stops after cap + 1 matching rows, so it never costs more than reading those rows.
    `count_label` says how to read the figure ("about 1,204,311", "more than 10,000"); None when exact.
    """

    COUNT_CAP = 10_000
    count_label: str | None = None

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return len(queryset)
        estimate = _estimated_rows(queryset)
        if estimate is not None and estimate > self.COUNT_CAP:
            self.count_label = f"about {estimate:,}"
            return estimate
        capped = queryset.order_by().values("pk")[: self.COUNT_CAP + 1].count()
        if capped > self.COUNT_CAP:
            self.count_label = f"more than {self.COUNT_CAP:,}"
        return capped


def _estimated_rows(queryset: QuerySet[Any]) -> int | None:
    """The planner's row count of the queryset's table, or None (filtered, not PostgreSQL, never analysed)."""
    query = queryset.query
    if query.where or query.distinct or query.combinator:
        return None
    if connections[queryset.db].vendor != "postgresql":
        return None
    return sql.estimated_rows(table=queryset.model._meta.db_table, alias=queryset.db)


REFUSAL_TEMPLATE = "dpp/admin/refused.html"


class DppModelAdmin(_ModelAdmin):
    """A changelist that costs one page, whatever the size of the table; totals of its money columns; a refused
    write explained on an admin page (403), not a bare "403 Forbidden"."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False  # no second COUNT(*) for "N total"
    show_facets = admin.ShowFacets.NEVER  # facet counts are one COUNT per filter choice
    list_per_page = 50
    list_max_show_all = 200
    change_list_template: ClassVar[_TemplateForResponseT | None] = "dpp/admin/change_list.html"
    # (label, column or annotation in micros) of each money column summed over the filtered rows; see totals_of.
    totals: tuple[tuple[str, str], ...] = ()
    # The filters of which one must be active for the totals to be summed (empty: always), where summing every row
    # would cost more than a page may (docs/BENCHMARKS.md, admin lists); `totals_hint` says so instead.
    totals_need: tuple[str, ...] = ()
    totals_hint = ""
    # Shown when an add, change or delete is refused: why these rows are not edited here.
    refusal = "These rows are read-only in the admin: they change only through DPP's own services."
    # Whether the search box matches exactly, on an index (`exact_matches`), never with a LIKE.
    search_exact = False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if self.totals and isinstance(response, TemplateResponse) and context and "cl" in context:
            if self.totals_need and not any(request.GET.get(name) for name in self.totals_need):
                context["totals_hint"] = self.totals_hint
            else:
                context["totals"] = self.totals_of(context["cl"].queryset)
        return response

    def totals_of(self, queryset: QuerySet[Any]) -> list[tuple[str, str]]:
        """Each money column summed over the filtered rows (all pages): one aggregate query, no ORDER BY."""
        sums = queryset.order_by().aggregate(**{f"total_{name}": Sum(name) for _, name in self.totals})
        return [(label, format_usd(sums[f"total_{name}"] or 0)) for label, name in self.totals]

    def refused(self, request: HttpRequest, action: str) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{action} refused",
            "action": action.lower(),
            "refusal": self.refusal,
        }
        return TemplateResponse(request, REFUSAL_TEMPLATE, context, status=403)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except PermissionDenied:
            return self.refused(request, "Change" if object_id else "Add")

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except PermissionDenied:
            return self.refused(request, "Delete")

    def object_or_changelist(self, request: HttpRequest, object_id: str) -> Any | HttpResponseRedirect:
        """The row of a page about one object (a statement, a top-up, a result) for someone who may view this
        list (else 403), or the way back to the list, saying there is no such row."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is not None:
            return obj
        self.message_user(request, f"There is no {self.opts.verbose_name} {unquote(object_id)!r}.", messages.WARNING)
        changelist = f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist"
        return HttpResponseRedirect(reverse(changelist, current_app=self.admin_site.name))

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        if not self.search_exact:
            return super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        return (self.exact_matches(queryset, term) if term else queryset), False

    def exact_matches(self, queryset: QuerySet[Any], term: str) -> QuerySet[Any]:
        """The rows whose first search field is `term` (stripped, not empty)."""
        return queryset.filter(**{self.search_fields[0]: term})

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        """None — the admin's "does not exist" — for an id that no row can have, before the database sees it: a
        NUL (PostgreSQL text cannot hold one: a DataError, a 500) or a value longer than the key's column."""
        opts = self.model._meta
        field = opts.get_field(from_field) if from_field else opts.pk
        if not storable_key(field, object_id):
            return None
        return super().get_object(request, object_id, from_field)


class CsvExportMixin:
    """Adds `<changelist>/export/` (named `<app>_<model>_export`) served by the admin's `export_view`, and its link
    above the list."""

    change_list_template: ClassVar[_TemplateForResponseT | None] = "dpp/admin/export_change_list.html"

    def get_urls(self) -> list[URLPattern]:
        model_admin: Any = self
        wrap: Callable[..., Any] = model_admin.admin_site.admin_view
        name = f"{model_admin.opts.app_label}_{model_admin.opts.model_name}_export"
        return [path("export/", wrap(model_admin.export_view), name=name), *super().get_urls()]  # type: ignore[misc]


class ReadOnlyModelAdmin(DppModelAdmin):
    """View only, for everyone, superusers included: no add, change or delete page answers anything but 403."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class ReadOnlyTabularInline(_TabularInline):
    extra = 0
    max_num = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class InputFilter(admin.SimpleListFilter):
    """An exact-match filter typed into a box: for columns with too many values to list (tenant, account, run).

    Subclasses set `lookup` (the ORM lookup, on an indexed column), which names the filter: "run_id" is the filter
    "run", `?run=`, its box saying "run id" unless `placeholder` says more; they may override `clean` (None = the
    value cannot match anything, e.g. a malformed UUID: the list is empty, not an error).
    """

    template = "dpp/admin/input_filter.html"
    lookup: str = ""
    placeholder: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.lookup.removesuffix("_id")
        cls.title = cls.parameter_name = name
        cls.placeholder = cls.placeholder or f"{name} id"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return []

    def has_output(self) -> bool:
        return True

    def clean(self, value: str) -> object | None:
        return value.strip() or None

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        raw = self.value()
        if raw is None:
            return queryset
        cleaned = self.clean(str(raw))
        if cleaned is None:
            return queryset.none()
        return queryset.filter(**{self.lookup: cleaned})

    # The choice carries one more key than Django's typed dict: the parameters to keep as hidden inputs.
    def choices(self, changelist: ChangeList) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[str(self.parameter_name)]),
            "display": "All",
            # The other active parameters, so that typing a value keeps them.
            "hidden": [(name, value) for name, value in changelist.params.items() if name != self.parameter_name],
        }


class StateFilter(admin.SimpleListFilter):
    """Two states told apart by whether a timestamp is set (a key's revoked_at, a flag's resolved_at): no SELECT
    DISTINCT, no count. Made by `state_filter`."""

    title = "state"
    column = ""
    # The (value, label) of each choice: the timestamp NULL, then set.
    when_null = ("", "")
    when_set = ("", "")

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [self.when_null, self.when_set]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value in (self.when_null[0], self.when_set[0]):
            return queryset.filter(**{f"{self.column}__isnull": value == self.when_null[0]})
        return queryset


def state_filter(
    parameter_name: str, *, column: str, when_null: tuple[str, str], when_set: tuple[str, str]
) -> type[StateFilter]:
    """A `StateFilter` on `column`, as `?<parameter_name>=<value>`."""
    attributes = {"parameter_name": parameter_name, "column": column, "when_null": when_null, "when_set": when_set}
    return type(f"{parameter_name.capitalize()}Filter", (StateFilter,), attributes)


class FinanceDateFilter(DateRangeQuickSelectListFilter):  # type: ignore[misc]  # rangefilter has no types
    """A date filter with an auditor's periods — today, yesterday, the last 7 days, this month, last month — and a
    custom range (from/to, both days included), on an indexed timestamp: the list stays a range scan."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        today = timezone.localdate()
        first = today.replace(day=1)
        last_month_end = first - dt.timedelta(days=1)
        periods = (
            ("Today", today, today),
            ("Yesterday", today - dt.timedelta(days=1), today - dt.timedelta(days=1)),
            ("Last 7 days", today - dt.timedelta(days=6), today),
            ("This month", first, today),
            ("Last month", last_month_end.replace(day=1), last_month_end),
        )
        self.links = (
            ("Any date", {}),
            *((label, {self.lookup_kwarg_gte: start, self.lookup_kwarg_lte: end}) for label, start, end in periods),
        )


def active_range(params: Mapping[str, str], field: str) -> tuple[dt.date | None, dt.date | None]:
    """The days of a FinanceDateFilter on `field` in a changelist's parameters (either may be None)."""

    def day(raw: str | None) -> dt.date | None:
        try:
            return dt.date.fromisoformat(raw) if raw else None
        except ValueError:
            return None

    return day(params.get(f"{field}__range__gte")), day(params.get(f"{field}__range__lte"))


SHORT_ID_CHARS = 8


def short_id(value: object) -> str:
    """An id shown by its first characters, the whole id in the tooltip: a UUID fits a narrow column."""
    text = str(value)
    return format_html('<span title="{}" class="dpp-id">{}</span>', text, text[:SHORT_ID_CHARS])


def short_link(url: str, value: object) -> str:
    """A short id (`short_id`) linking to its page."""
    return format_html('<a href="{}">{}</a>', url, short_id(value))


def compact_instant(value: dt.datetime | None) -> str:
    """A timestamp in one short unbreakable token, in UTC to the second: "2026-12-06 23:27:59"."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d\u00a0%H:%M:%S") if value else "—"


def column(description: str, field: str, show: Callable[[Any], str], *, sortable: bool = True) -> Callable[..., str]:
    """A list column or a read-only field of a ModelAdmin: the row's `field` through `show`, sorted by `field`."""

    @admin.display(description=description, ordering=field if sortable else None)
    def cell(model_admin: admin.ModelAdmin[Any], obj: Any) -> str:
        return show(getattr(obj, field))

    return cell


def tenant_link(tenant_id: str) -> str:
    """A tenant's id linking to its page."""
    return format_html('<a href="{}">{}</a>', reverse("admin:dpp_tenant_change", args=[quote(tenant_id)]), tenant_id)


_TENANT_ID_RE = re.compile(r"[a-z0-9_-]{3,64}")


class TenantFilter(InputFilter):
    lookup = "tenant_id"

    def clean(self, value: str) -> object | None:
        value = value.strip()
        return value if _TENANT_ID_RE.fullmatch(value) else None


_ROW_ID_RE = re.compile(r"[0-9]{1,18}")  # fits a bigint: a longer number is no row's id (not a 500)


def parse_row_id(value: str) -> int | None:
    """A bigint primary key typed by a person (ASCII digits only: str.isdigit also takes "²"), or None."""
    value = value.strip()
    return int(value) if _ROW_ID_RE.fullmatch(value) else None


def storable_key(field: Field[Any, Any] | ForeignObjectRel | GenericForeignKey | None, value: str) -> bool:
    """Whether `value` may be stored in `field` at all (the field's own to_python still judges its form)."""
    if "\x00" in value:
        return False
    # Only a text column's length bounds its values (a UUIDField has a max_length too, for its 32 hex digits).
    return not isinstance(field, CharField) or field.max_length is None or len(value) <= field.max_length


def view_on_site(request: HttpRequest, content_type_id: str, object_id: str) -> HttpResponse:
    """The admin's "view on site" shortcut (`admin/r/<type>/<id>/`), with an id no row can hold a 404, not a 500."""
    if "\x00" in object_id:
        raise Http404("no such object")
    return contenttype_views.shortcut(request, content_type_id, object_id)


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        return None


def changelist_queryset(model_admin: admin.ModelAdmin[Any], request: HttpRequest) -> QuerySet[Any]:
    """The changelist's queryset for this request — filtered, searched and ordered — without counting or paging.

    May raise IncorrectLookupParameters, like the changelist itself.
    """
    base: type[ChangeList] = model_admin.get_changelist(request)
    unpaged = type("UnpagedChangeList", (base,), {"get_results": lambda self, request: None})
    list_display = model_admin.get_list_display(request)
    changelist = unpaged(
        request,
        model_admin.model,
        list_display,
        model_admin.get_list_display_links(request, list_display),
        model_admin.get_list_filter(request),
        model_admin.date_hierarchy,
        model_admin.get_search_fields(request),
        model_admin.get_list_select_related(request),
        model_admin.list_per_page,
        model_admin.list_max_show_all,
        model_admin.list_editable,
        model_admin,
        model_admin.get_sortable_by(request),
        model_admin.search_help_text,
    )
    queryset: QuerySet[Any] = changelist.queryset
    return queryset


def csv_text(value: object) -> str:
    """A free-text cell, neutralised for spreadsheets: a leading =, +, -, @ would otherwise run as a formula."""
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(_FORMULA_START) else text


class _Echo:
    """A file-like object whose write returns the line: csv.writer then produces the CSV line by line."""

    def write(self, value: str) -> str:
        return value


def stream_csv(*, filename: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> StreamingHttpResponse:
    """A CSV download produced while it is sent: memory stays flat whatever the number of rows."""
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow(row)

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def usd_or_dash(micros: int | None) -> str:
    """An amount on an admin page, "—" when there is none (a run not charged yet, a tenant without accounts)."""
    return "—" if micros is None else format_usd(micros)


def staff_actor(request: HttpRequest) -> str:
    """The actor recorded on a money movement made from the admin: "admin:<username>"."""
    return f"admin:{request.user.get_username()}"


def form_page(
    request: HttpRequest,
    model_admin: admin.ModelAdmin[Any],
    *,
    title: str,
    form: Form,
    submit_label: str,
    original: Model | None = None,
    intro: str = "",
    method: str = "post",
    hidden: Iterable[tuple[str, object]] = (),
    items: Iterable[object] = (),
) -> TemplateResponse:
    """An admin page holding one form (a top-up, an export, an action's confirmation)."""
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": title,
        "form": form,
        "submit_label": submit_label,
        "original": original,
        "intro": intro,
        "method": method,
        "hidden": list(hidden),
        "items": list(items),
    }
    return TemplateResponse(request, "dpp/admin/form_page.html", context)
