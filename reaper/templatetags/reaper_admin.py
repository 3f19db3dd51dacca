"""The admin index's "is anything stuck or flagged" panel (SPEC §13): counts, each linking to its filtered list.

Each count reads a small partial index (open flags: reaper_open; runs past their lease: runs_leased), so the index
page costs the same at a million runs as at ten.
"""

from __future__ import annotations

from dataclasses import dataclass

from django import template
from django.apps import apps
from django.urls import reverse

from reaper.models import AuditFlag
from runs.admin import past_lease
from runs.models import Run

register = template.Library()


@dataclass(frozen=True)
class Alarm:
    label: str
    count: int
    url: str


def _overdue_webhook_deliveries() -> Alarm | None:
    """SLOT (issue 21): the overdue webhook deliveries, once `dpp.WebhookDelivery` exists (webhooks are built
    elsewhere). Until its model and an "overdue" filter on its admin list exist, the panel leaves this row out."""
    if "webhookdelivery" not in apps.all_models["dpp"]:
        return None
    return None  # fill in with the model's overdue count and its filtered changelist URL


def admin_alarms() -> list[Alarm]:
    flags = reverse("admin:reaper_auditflag_changelist")
    runs = reverse("admin:runs_run_changelist")
    alarms = [
        Alarm("open audit flags", AuditFlag.objects.filter(resolved_at__isnull=True).count(), f"{flags}?open=yes"),
        Alarm("runs past their lease", Run.objects.filter(past_lease()).count(), f"{runs}?lease=expired"),
    ]
    webhooks = _overdue_webhook_deliveries()
    return alarms if webhooks is None else [*alarms, webhooks]


@register.inclusion_tag("reaper/admin/alarms.html")
def alarms_panel() -> dict[str, object]:
    return {"alarms": admin_alarms(), "activity_url": reverse("admin:runs_run_activity")}
