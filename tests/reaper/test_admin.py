"""The audit flags admin: open flags first, filters, resolution with a note as the only write."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from reaper.models import AuditFlag

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:reaper_auditflag_changelist"
Kind = AuditFlag.Kind


@pytest.fixture
def flags(db: None) -> dict[str, AuditFlag]:
    now = timezone.now()
    run_id = uuid.uuid4()
    return {
        "old_open": AuditFlag.objects.create(
            kind=Kind.TERMINAL_WITHOUT_SETTLE,
            subject=str(run_id),
            run_id=run_id,
            tenant_id="acme",
            detail="COMPLETED run without SETTLE",
            created_at=now - dt.timedelta(hours=3),
        ),
        "new_open": AuditFlag.objects.create(
            kind=Kind.HELD_MISMATCH, subject="acme", tenant_id="acme", detail="held 0.0500 ≠ open 0.0000"
        ),
        "resolved": AuditFlag.objects.create(
            kind=Kind.HELD_MISMATCH,
            subject="globex",
            tenant_id="globex",
            detail="held 0.0100 ≠ open 0.0000",
            created_at=now - dt.timedelta(minutes=1),
            resolved_at=now,
            resolved_by="olga",
            resolution_note="adjusted, txn #12",
        ),
    }


def _listed(client: Client, params: dict[str, str] | None = None) -> list[int]:
    response = client.get(reverse(CHANGELIST), params or {})
    assert response.status_code == 200
    return [int(pk) for pk in re.findall(r"/admin/reaper/auditflag/(\d+)/change/", response.content.decode())]


def test_open_flags_first_then_resolved(finance: Client, flags: dict[str, AuditFlag]) -> None:
    assert _listed(finance) == [flags["new_open"].pk, flags["old_open"].pk, flags["resolved"].pk]


def test_filters_by_kind_and_state(finance: Client, flags: dict[str, AuditFlag]) -> None:
    assert _listed(finance, {"open": "yes"}) == [flags["new_open"].pk, flags["old_open"].pk]
    assert _listed(finance, {"open": "no"}) == [flags["resolved"].pk]
    assert _listed(finance, {"kind": Kind.HELD_MISMATCH}) == [flags["new_open"].pk, flags["resolved"].pk]
    assert _listed(finance, {"q": "globex"}) == [flags["resolved"].pk]


def test_ops_resolves_flags_with_a_note(ops: Client, flags: dict[str, AuditFlag]) -> None:
    url = reverse(CHANGELIST)
    selected = [flags["old_open"].pk, flags["resolved"].pk]
    confirm = ops.post(url, {"action": "resolve", "_selected_action": selected, "index": "0"})
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert 'name="note"' in html
    assert "COMPLETED run without SETTLE" in html
    assert "globex" not in html  # already resolved: not offered again

    done = ops.post(
        url,
        {"action": "resolve", "_selected_action": selected, "apply": "1", "note": "  settled by hand, txn #40  "},
    )
    assert done.status_code == 302
    flag = AuditFlag.objects.get(pk=flags["old_open"].pk)
    assert flag.resolved_at is not None
    assert (flag.resolved_by, flag.resolution_note) == ("olga", "settled by hand, txn #40")
    untouched = AuditFlag.objects.get(pk=flags["resolved"].pk)
    assert (untouched.resolved_by, untouched.resolution_note) == ("olga", "adjusted, txn #12")
    assert AuditFlag.objects.get(pk=flags["new_open"].pk).resolved_at is None
    assert LogEntry.objects.filter(object_id=str(flag.pk), change_message="Resolved").count() == 1


def test_resolution_needs_a_note(ops: Client, flags: dict[str, AuditFlag]) -> None:
    response = ops.post(
        reverse(CHANGELIST),
        {"action": "resolve", "_selected_action": [flags["new_open"].pk], "apply": "1", "note": "   "},
    )
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert AuditFlag.objects.get(pk=flags["new_open"].pk).resolved_at is None


def test_finance_cannot_resolve(finance: Client, flags: dict[str, AuditFlag]) -> None:
    listing = finance.get(reverse(CHANGELIST)).content.decode()
    assert "resolve" not in re.findall(r'<option value="(\w+)"', listing)
    finance.post(
        reverse(CHANGELIST),
        {"action": "resolve", "_selected_action": [flags["new_open"].pk], "apply": "1", "note": "nope"},
    )
    assert AuditFlag.objects.get(pk=flags["new_open"].pk).resolved_at is None


def test_flags_cannot_be_changed_or_deleted(ops: Client, flags: dict[str, AuditFlag]) -> None:
    flag = flags["new_open"]
    change = reverse("admin:reaper_auditflag_change", args=[flag.pk])
    page = ops.get(change)
    assert page.status_code == 200
    assert flag.detail in page.content.decode()
    assert (
        reverse("admin:runs_run_change", args=[flags["old_open"].run_id])
        in ops.get(reverse("admin:reaper_auditflag_change", args=[flags["old_open"].pk])).content.decode()
    )
    assert ops.post(change, {"resolution_note": "x", "resolved_by": "x"}).status_code == 403
    assert ops.get(reverse("admin:reaper_auditflag_delete", args=[flag.pk])).status_code == 403
    assert ops.post(reverse("admin:reaper_auditflag_delete", args=[flag.pk]), {"post": "yes"}).status_code == 403
    assert ops.get(reverse("admin:reaper_auditflag_add")).status_code == 403
    flag.refresh_from_db()
    assert (flag.resolved_at, flag.resolution_note) == (None, "")
    assert AuditFlag.objects.count() == 3
