"""Audit flags: what the reaper found and may not fix by itself. Open flags first.

Resolving a flag — with a mandatory note, by a user holding `reaper.reconcile` (group `ops`) — is the only write
the admin offers here. It never moves money: a money correction is an ADJUSTMENT, from the tenant's page.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import quote
from django.db.models import F, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from dpp.admin_tools import FinanceDateFilter, ReadOnlyModelAdmin, column, compact_instant, form_page, state_filter
from reaper.models import AuditFlag
from reaper.services import audit_flag_resolve

RESOLVE_PERMISSION = "reaper.reconcile"


class ResolveForm(forms.Form):
    note = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Mandatory: what was found and what was done (ticket, adjustment transaction id…).",
    )

    def clean_note(self) -> str:
        note: str = self.cleaned_data["note"].strip()
        if not note:
            raise forms.ValidationError("A note is required.")
        return note


OpenFilter = state_filter("open", column="resolved_at", when_null=("yes", "open"), when_set=("no", "resolved"))


@admin.register(AuditFlag)
class AuditFlagAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "state", "kind", "subject", "tenant_id", "created", "resolved", "resolved_by")
    list_filter = (OpenFilter, "kind", ("created_at", FinanceDateFilter))
    search_fields = ("subject",)
    search_help_text = "A run id or a tenant id, exactly."
    search_exact = True
    # Open flags (resolved_at NULL) first, newest first; then the most recently resolved.
    ordering = (F("resolved_at").desc(nulls_first=True), "-created_at")
    fields = (
        "id",
        "kind",
        "subject",
        "tenant_id",
        "run",
        "detail",
        "trace_id",
        "created_at",
        "resolved_at",
        "resolved_by",
        "resolution_note",
    )
    readonly_fields = fields
    actions = ("resolve",)
    created = column("created (UTC)", "created_at", compact_instant)
    resolved = column("resolved (UTC)", "resolved_at", compact_instant)

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RESOLVE_PERMISSION)

    @admin.display(description="state", ordering="resolved_at")
    def state(self, obj: AuditFlag) -> str:
        """An open flag is an alarm — red, first in its row — not a green check: it needs a person."""
        if obj.is_open:
            return format_html('<span class="dpp-alarm" title="{}">{}</span>', "needs a person", "⚠ OPEN")
        return format_html('<span class="dpp-resolved">{}</span>', "resolved")

    @admin.display(description="run")
    def run(self, obj: AuditFlag) -> str:
        if obj.run_id is None:
            return "—"
        url = reverse("admin:runs_run_change", args=[quote(str(obj.run_id))])
        return format_html('<a href="{}">{}</a>', url, obj.run_id)

    @admin.action(description="Resolve selected flags (with a note)", permissions=["resolve"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[AuditFlag]) -> TemplateResponse | None:
        """First a page asking for the note; its POST comes back here with `apply`."""
        flags = list(queryset.filter(resolved_at__isnull=True))
        if not flags:
            self.message_user(request, "The selected flags are already resolved.", messages.WARNING)
            return None
        form = ResolveForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            resolved = audit_flag_resolve(
                flag_ids=[flag.pk for flag in flags],
                actor=request.user.get_username(),
                note=form.cleaned_data["note"],
            )
            for flag in flags:
                self.log_change(request, flag, "Resolved")
            self.message_user(request, f"Resolved {resolved} flag(s).", messages.SUCCESS)
            return None
        hidden: list[tuple[str, object]] = [("action", "resolve"), ("apply", "1")]
        hidden += [(ACTION_CHECKBOX_NAME, flag.pk) for flag in flags]
        return form_page(
            request,
            self,
            title="Resolve audit flags",
            form=form,
            submit_label="Resolve",
            intro="These open flags will be marked resolved with your name and this note. No money moves.",
            hidden=hidden,
            items=[f"#{flag.pk} {flag.get_kind_display()} — {flag.subject}: {flag.detail}" for flag in flags],
        )
