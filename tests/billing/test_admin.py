"""The finance admin: tenants with balances, top-up and adjustment, a read-only ledger, CSV export, groups."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from freezegun import freeze_time

from billing import services as billing_services
from billing.models import Account, LedgerEntry, LedgerTransaction
from billing.selectors import balances_get
from billing.services import ledger_adjust, ledger_topup
from dpp.models import ApiKey
from dpp.services import api_key_issue
from tests.helpers.admin import csv_rows, ensure_staff_groups, staff_client
from tests.helpers.bulk import bulk_topups
from tests.helpers.money import USD
from tests.helpers.personas import Persona, Personas, make_persona
from tests.helpers.states import completed_run, failed_run, queued_run
from tests.helpers.threads import at_once

pytestmark = pytest.mark.django_db

TXN = LedgerTransaction.Kind


def _topup_url(tenant_id: str, action: str = "topup") -> str:
    return reverse(f"admin:dpp_tenant_{action}", args=[tenant_id])


def _nonce(client: Client, url: str) -> str:
    page = client.get(url)
    assert page.status_code == 200
    match = re.search(r'name="nonce" value="([0-9a-f]{32})"', page.content.decode())
    assert match is not None
    return match.group(1)


def _row(html: str, text: str) -> str:
    """The changelist row (one <tr>) that contains `text`."""
    match = re.search(rf"<tr>(?:(?!<tr>).)*?{re.escape(text)}(?:(?!</tr>).)*</tr>", html, re.S)
    assert match is not None, text
    return match.group(0)


def _manual_transactions(tenant_id: str) -> list[LedgerTransaction]:
    return list(LedgerTransaction.objects.filter(tenant_id=tenant_id, kind__in=[TXN.TOPUP, TXN.ADJUSTMENT]))


# --- groups -------------------------------------------------------------------------------------------------------


def _codenames(group: str) -> set[str]:
    perms = Permission.objects.filter(group__name=group).select_related("content_type")
    return {f"{perm.content_type.app_label}.{perm.codename}" for perm in perms}


def test_groups_exist_after_migrate_with_the_intended_permissions(db: None) -> None:
    assert ("billing", "0002_staff_groups") in MigrationRecorder(connection).applied_migrations()
    ensure_staff_groups()  # a transactional test elsewhere may have flushed the tables since migrate
    views = {
        "dpp.view_tenant",
        "dpp.view_apikey",
        "dpp.view_webhookendpoint",
        "dpp.view_webhookevent",
        "dpp.view_webhookdelivery",
        "billing.view_plan",
        "billing.view_tenantplan",
        "billing.view_account",
        "billing.view_ledgertransaction",
        "billing.view_ledgerentry",
        "billing.view_accountcheckpoint",
        "billing.view_auditcheckpoint",
        "billing.view_keyspend",
        "runs.view_run",
        "runs.view_closedday",
        "reaper.view_auditflag",
    }
    assert _codenames("finance") == views | {"billing.topup", "billing.adjust"}
    assert _codenames("ops") == views | {"reaper.reconcile"}
    assert not any(
        perm.codename.startswith(("add_", "change_", "delete_"))
        for perm in Permission.objects.filter(group__in=Group.objects.filter(name__in=["finance", "ops"]))
    )


# --- tenants --------------------------------------------------------------------------------------------------------


def test_finance_sees_tenants_with_balances_plan_and_status(finance: Client, personas: Personas) -> None:
    queued_run(personas.owner, pack_type="decision", max_cost_usd="0.2500")  # 0.2500 held
    response = finance.get(reverse("admin:dpp_tenant_changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "DPP administration" in html
    owner_row = _row(html, personas.owner.tenant.pk)
    assert '<td class="field-available">9.7500</td>' in owner_row  # 10 credited − 0.25 held
    assert '<td class="field-held">0.2500</td>' in owner_row
    assert '<td class="field-plan">starter</td>' in owner_row
    assert '<td class="field-status">Active</td>' in owner_row
    outsider_row = _row(html, personas.outsider.tenant.pk)
    assert '<td class="field-available">0.0000</td>' in outsider_row


def test_tenant_list_costs_the_same_for_many_tenants(finance: Client, django_assert_max_num_queries: Any) -> None:
    for index in range(30):
        make_persona(prefix=f"many{index}", credit_micros=USD)
    with django_assert_max_num_queries(12):
        response = finance.get(reverse("admin:dpp_tenant_changelist"))
    assert response.status_code == 200
    assert response.content.decode().count("1.0000") >= 30


def test_tenant_page_shows_keys_without_hash_and_plan_history(finance: Client, owner: Persona) -> None:
    api_key = ApiKey.objects.get(tenant=owner.tenant)
    response = finance.get(reverse("admin:dpp_tenant_change", args=[owner.tenant.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert api_key.prefix in html
    assert api_key.key_hash not in html
    assert owner.api_key not in html
    assert "onboarding" in html  # the plan history
    assert _topup_url(owner.tenant.pk) in html  # finance holds billing.topup
    assert 'name="_save"' not in html


# --- top-up ---------------------------------------------------------------------------------------------------------


def test_finance_tops_up_a_tenant(finance: Client, owner: Persona) -> None:
    url = _topup_url(owner.tenant.pk)
    nonce = _nonce(finance, url)
    response = finance.post(url, {"amount": "25.5000", "reason": "wire 2024-117", "nonce": nonce})
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:dpp_tenant_change", args=[owner.tenant.pk])
    assert balances_get(tenant_id=owner.tenant.pk).available_micros == 10 * USD + 25_500_000
    txn = LedgerTransaction.objects.get(tenant=owner.tenant, kind=TXN.TOPUP, trace_id=nonce)
    assert (txn.actor, txn.reason) == ("admin:alice", "wire 2024-117")
    legs = dict(txn.entries.values_list("account_id", "amount_micros"))
    assert legs == {
        Account.platform_account_for(Account.Kind.FUNDING, owner.tenant.pk): -25_500_000,
        Account.tenant_account_id(owner.tenant.pk, Account.Kind.AVAILABLE): 25_500_000,
    }
    page = finance.get(reverse("admin:billing_ledgertransaction_change", args=[txn.pk])).content.decode()
    assert f"admin form code {nonce}" in page  # not passed off as a trace id
    # Each leg's row is titled in the admin's money format, not in raw micros.
    assert f"{Account.platform_account_for(Account.Kind.FUNDING, owner.tenant.pk)} -25.5000" in page
    assert f"{owner.tenant.pk}/available +25.5000" in page
    assert "25500000" not in page


@pytest.mark.parametrize("nonce", [None, "abc"], ids=["missing", "altered"])
def test_a_refused_form_code_is_named_and_renewed(finance: Client, owner: Persona, nonce: str | None) -> None:
    url = _topup_url(owner.tenant.pk)
    data = {"amount": "5.0000", "reason": "wire 7", **({"nonce": nonce} if nonce else {})}
    refused = finance.post(url, data)
    assert refused.status_code == 200
    page = refused.content.decode()
    assert "one-time code was missing or altered" in page
    assert _manual_transactions(owner.tenant.pk) == [] or all(
        t.actor == "test" for t in _manual_transactions(owner.tenant.pk)
    )
    assert 'value="5.0000"' in page  # the values typed, as typed
    assert "wire 7</textarea>" in page
    renewed = re.search(r'name="nonce" value="([0-9a-f]{32})"', page)
    assert renewed is not None  # the corrected page can be sent again, and then it posts
    assert finance.post(url, {**data, "nonce": renewed.group(1)}).status_code == 302
    assert balances_get(tenant_id=owner.tenant.pk).available_micros == 15 * USD
    assert LedgerTransaction.objects.get(tenant=owner.tenant, trace_id=renewed.group(1)).reason == "wire 7"


@pytest.mark.parametrize(
    ("amount", "reason", "message"),
    [
        ("5.0000", "", "This field is required."),
        ("5.0000", "   ", "This field is required."),
        ("1.00001", "typo", "At most 4 decimals"),
        ("-5", "typo", "no sign, no thousands separator, no currency symbol"),
        ("1e3", "typo", "digits and up to 4 decimals"),
        ("10,50", "typo", "digits and up to 4 decimals"),
        ("$5", "typo", "digits and up to 4 decimals"),
        ("0", "typo", "more than 0"),
        ("1000000.0001", "typo", "At most 1000000.0000 USD"),
        ("99999999999999999999", "typo", "At most 1000000.0000 USD"),
    ],
)
def test_topup_refused_posts_nothing(finance: Client, owner: Persona, amount: str, reason: str, message: str) -> None:
    url = _topup_url(owner.tenant.pk)
    before = _manual_transactions(owner.tenant.pk)
    response = finance.post(url, {"amount": amount, "reason": reason, "nonce": _nonce(finance, url)})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert _manual_transactions(owner.tenant.pk) == before
    assert balances_get(tenant_id=owner.tenant.pk).available_micros == 10 * USD


def test_resubmitted_topup_form_posts_once(finance: Client, owner: Persona) -> None:
    url = _topup_url(owner.tenant.pk)
    data = {"amount": "3.0000", "reason": "invoice 9", "nonce": _nonce(finance, url)}
    assert finance.post(url, data).status_code == 302
    assert finance.post(url, data).status_code == 302
    assert LedgerTransaction.objects.filter(tenant=owner.tenant, kind=TXN.TOPUP, reason="invoice 9").count() == 1
    assert balances_get(tenant_id=owner.tenant.pk).available_micros == 13 * USD


def test_ops_sees_lists_but_cannot_top_up_or_adjust(ops: Client, owner: Persona) -> None:
    for name in ("dpp_tenant", "billing_ledgertransaction", "billing_account", "runs_run", "reaper_auditflag"):
        assert ops.get(reverse(f"admin:{name}_changelist")).status_code == 200, name
    page = ops.get(reverse("admin:dpp_tenant_change", args=[owner.tenant.pk]))
    assert page.status_code == 200
    assert _topup_url(owner.tenant.pk) not in page.content.decode()
    for action in ("topup", "adjust"):
        url = _topup_url(owner.tenant.pk, action)
        refused = ops.get(url)
        assert refused.status_code == 403
        assert refused["Content-Type"].startswith("text/html")  # the admin's own error page, not a problem
        data = {"amount": "5.0000", "reason": "x", "nonce": uuid.uuid4().hex, "direction": "credit"}
        assert ops.post(url, {**data, "counterparty": "FUNDING"}).status_code == 403
    assert _manual_transactions(owner.tenant.pk) == list(
        LedgerTransaction.objects.filter(tenant=owner.tenant, kind=TXN.TOPUP, actor="test")
    )
    assert balances_get(tenant_id=owner.tenant.pk).available_micros == 10 * USD


# --- adjustment -----------------------------------------------------------------------------------------------------


def test_finance_credits_a_refund_from_revenue(finance: Client, owner: Persona) -> None:
    run = completed_run(owner, pack_type="decision", max_cost_usd="0.0500", cost_micros=30_000)
    url = _topup_url(owner.tenant.pk, "adjust")
    data = {
        "direction": "credit",
        "counterparty": "REVENUE",
        "amount": "0.0300",
        "reason": f"refund run {run.pk}",
        "nonce": _nonce(finance, url),
    }
    assert finance.post(url, data).status_code == 302
    assert balances_get(tenant_id=owner.tenant.pk).available_micros == 10 * USD
    txn = LedgerTransaction.objects.get(tenant=owner.tenant, kind=TXN.ADJUSTMENT)
    assert (txn.actor, txn.reason) == ("admin:alice", f"refund run {run.pk}")
    legs = dict(txn.entries.values_list("account_id", "amount_micros"))
    revenue = Account.platform_account_for(Account.Kind.REVENUE, owner.tenant.pk)
    assert legs == {revenue: -30_000, f"{owner.tenant.pk}/available": 30_000}


def test_finance_debits_to_funding_and_never_below_zero(finance: Client, owner: Persona) -> None:
    url = _topup_url(owner.tenant.pk, "adjust")
    data = {"direction": "debit", "counterparty": "FUNDING", "amount": "4.0000", "reason": "reverse a test credit"}
    assert finance.post(url, {**data, "nonce": _nonce(finance, url)}).status_code == 302
    assert balances_get(tenant_id=owner.tenant.pk).available_micros == 6 * USD
    txn = LedgerTransaction.objects.get(tenant=owner.tenant, kind=TXN.ADJUSTMENT)
    assert dict(txn.entries.values_list("account_id", "amount_micros")) == {
        Account.platform_account_for(Account.Kind.FUNDING, owner.tenant.pk): 4 * USD,
        f"{owner.tenant.pk}/available": -4 * USD,
    }

    too_much = finance.post(url, {**data, "amount": "6.0001", "nonce": _nonce(finance, url)})
    assert too_much.status_code == 200
    assert "below zero" in too_much.content.decode()
    assert LedgerTransaction.objects.filter(tenant=owner.tenant, kind=TXN.ADJUSTMENT).count() == 1
    assert balances_get(tenant_id=owner.tenant.pk).available_micros == 6 * USD


def test_adjustment_needs_a_reason(finance: Client, owner: Persona) -> None:
    url = _topup_url(owner.tenant.pk, "adjust")
    data = {"direction": "credit", "counterparty": "FUNDING", "amount": "1.0000", "reason": ""}
    response = finance.post(url, {**data, "nonce": _nonce(finance, url)})
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert not LedgerTransaction.objects.filter(tenant=owner.tenant, kind=TXN.ADJUSTMENT).exists()


# --- the ledger is read-only ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["finance", "root"])
@pytest.mark.parametrize("model", ["ledgertransaction", "ledgerentry"])
def test_ledger_cannot_be_changed_or_deleted_from_the_admin(
    request: pytest.FixtureRequest, owner: Persona, who: str, model: str
) -> None:
    client: Client = request.getfixturevalue(who)
    txn = LedgerTransaction.objects.get(tenant=owner.tenant, kind=TXN.TOPUP)
    obj = txn if model == "ledgertransaction" else txn.entries.get(amount_micros__gt=0)
    before = (LedgerTransaction.objects.count(), list(LedgerEntry.objects.values_list("pk", "amount_micros")))
    change = reverse(f"admin:billing_{model}_change", args=[obj.pk])
    delete = reverse(f"admin:billing_{model}_delete", args=[obj.pk])

    view = client.get(change)
    assert view.status_code == 200  # a read-only page
    assert 'name="_save"' not in view.content.decode()
    assert client.post(change, {"reason": "edited", "amount_micros": "1"}).status_code == 403
    assert client.get(delete).status_code == 403
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert client.get(reverse(f"admin:billing_{model}_add")).status_code == 403
    changelist = client.post(
        reverse(f"admin:billing_{model}_changelist"), {"action": "delete_selected", "_selected_action": [obj.pk]}
    )
    assert changelist.status_code in (200, 302)  # no such action: nothing happens

    after = (LedgerTransaction.objects.count(), list(LedgerEntry.objects.values_list("pk", "amount_micros")))
    assert after == before
    txn.refresh_from_db()
    assert txn.reason == "test credit"


def test_transaction_page_shows_entries_and_deltas(finance: Client, owner: Persona) -> None:
    run = failed_run(owner, pack_type="decision", max_cost_usd="0.0800")  # the minimum fee: 0.0050
    settle = LedgerTransaction.objects.get(run_id=run.pk, kind=TXN.SETTLE)
    html = finance.get(reverse("admin:billing_ledgertransaction_change", args=[settle.pk])).content.decode()
    assert f"{owner.tenant.pk}/held" in html
    assert "-0.0800" in html  # held leg
    assert "0.0750" in html  # released to available
    assert "0.0050" in html  # charged to revenue
    assert reverse("admin:runs_run_change", args=[run.pk]) in html


# --- scale ----------------------------------------------------------------------------------------------------------


def test_transactions_changelist_over_10000_rows_runs_few_queries(
    finance: Client, owner: Persona, django_assert_max_num_queries: Any
) -> None:
    bulk_topups(owner.tenant.pk, 10_000, 100)
    newest = LedgerTransaction.objects.order_by("-pk").first()
    assert newest is not None
    url = reverse("admin:billing_ledgertransaction_changelist")
    with django_assert_max_num_queries(15):
        response = finance.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert reverse("admin:billing_ledgertransaction_change", args=[newest.pk]) in html
    assert "more than 10,000 ledger transactions" in html
    assert html.count('class="action-checkbox"') == 0  # no action offered: nothing to select
    with django_assert_max_num_queries(15):
        filtered = finance.get(
            url, {"kind__exact": "TOPUP", "tenant": owner.tenant.pk, "created_at__gte": "2000-01-01 00:00:00+00:00"}
        )
    assert filtered.status_code == 200
    with django_assert_max_num_queries(15):
        page = finance.get(url, {"p": "3"})
    assert page.status_code == 200
    assert balances_get(tenant_id=owner.tenant.pk).available_micros == 10 * USD + 10_000 * 100


def test_transactions_changelist_filters(finance: Client, personas: Personas) -> None:
    owner, other = personas.owner.tenant, personas.other.tenant
    run = queued_run(personas.owner, pack_type="decision", max_cost_usd="0.0500")
    url = reverse("admin:billing_ledgertransaction_changelist")

    def listed(params: dict[str, str]) -> set[int]:
        html = finance.get(url, params).content.decode()
        return {int(pk) for pk in re.findall(r"/admin/billing/ledgertransaction/(\d+)/change/", html)}

    reserve = LedgerTransaction.objects.get(run_id=run.pk)
    owner_topup = LedgerTransaction.objects.get(tenant=owner, kind=TXN.TOPUP)
    other_topup = LedgerTransaction.objects.get(tenant=other, kind=TXN.TOPUP)
    assert listed({"tenant": owner.pk}) == {reserve.pk, owner_topup.pk}
    assert listed({"kind__exact": "RESERVE"}) == {reserve.pk}
    assert listed({"run": str(run.pk)}) == {reserve.pk}
    assert listed({"run": "not-a-uuid"}) == set()
    assert listed({"q": str(other_topup.pk)}) == {other_topup.pk}
    assert listed({"q": str(run.pk)}) == {reserve.pk}
    today = f"{timezone.now().date().isoformat()} 00:00:00+00:00"
    assert other_topup.pk in listed({"created_at__gte": today})
    assert listed({"created_at__lt": "2000-01-01 00:00:00+00:00"}) == set()


# --- CSV export -----------------------------------------------------------------------------------------------------


def test_transactions_csv_export_for_a_date_range(finance: Client, personas: Personas) -> None:
    owner = personas.owner.tenant
    with freeze_time("2020-01-15 12:00:00"):
        ledger_topup(tenant=owner, amount_micros=USD, actor="test", reason="old credit")
    ledger_adjust(
        tenant=owner, amount_micros=-2 * USD, counterparty="FUNDING", actor="admin:alice", reason="=SUM(A1:A9)"
    )
    run = completed_run(personas.owner, pack_type="decision", max_cost_usd="0.0500", cost_micros=11_000)
    today = timezone.now().date()

    response = finance.get(
        reverse("admin:billing_ledgertransaction_export"),
        {"date_from": (today - dt.timedelta(days=1)).isoformat(), "date_to": today.isoformat(), "tenant": owner.pk},
    )
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    rows = csv_rows(response)
    assert [row["kind"] for row in rows] == ["TOPUP", "ADJUSTMENT", "RESERVE", "SETTLE"]
    assert {row["tenant_id"] for row in rows} == {owner.pk}
    topup, adjustment, reserve, settle = rows
    assert (topup["available_delta_usd"], topup["held_delta_usd"], topup["charged_usd"]) == (
        "10.0000",
        "0.0000",
        "0.0000",
    )
    assert (topup["actor"], topup["reason"]) == ("test", "test credit")
    assert adjustment["available_delta_usd"] == "-2.0000"
    assert adjustment["reason"] == "'=SUM(A1:A9)"  # neutralised for spreadsheets
    assert (reserve["run_id"], reserve["available_delta_usd"], reserve["held_delta_usd"]) == (
        str(run.pk),
        "-0.0500",
        "0.0500",
    )
    assert (settle["available_delta_usd"], settle["held_delta_usd"], settle["charged_usd"]) == (
        "0.0390",
        "-0.0500",
        "0.0110",
    )
    assert int(settle["transaction_id"]) == LedgerTransaction.objects.get(run_id=run.pk, kind=TXN.SETTLE).pk

    old = csv_rows(
        finance.get(
            reverse("admin:billing_ledgertransaction_export"),
            {"date_from": "2020-01-15", "date_to": "2020-01-15", "kind": "TOPUP"},
        )
    )
    assert [(row["reason"], row["available_delta_usd"], row["created_at"][:10]) for row in old] == [
        ("old credit", "1.0000", "2020-01-15")
    ]


def test_admin_errors_are_html_pages_and_there_is_no_view_site_link(finance: Client) -> None:
    missing = finance.get("/admin/billing/ledgertransaction/999999999/change/", follow=True)
    assert missing["Content-Type"].startswith("text/html")
    no_such_page = finance.get("/admin/no-such-app/")
    assert no_such_page.status_code == 404
    assert no_such_page["Content-Type"].startswith("text/html")
    unknown_static = finance.get("/static/no-such-file.css")  # not a page: a problem, as any unknown path
    assert unknown_static.status_code == 404
    assert unknown_static["Content-Type"] == "application/problem+json"
    index = finance.get(reverse("admin:index")).content.decode()
    assert "View site" not in index


def test_export_over_the_whole_calendar(finance: Client, personas: Personas) -> None:
    ledger_topup(tenant=personas.owner.tenant, amount_micros=USD, actor="test", reason="any day")
    response = finance.get(
        reverse("admin:billing_ledgertransaction_export"),
        {"date_from": "0001-01-01", "date_to": "9999-12-31", "tenant": personas.owner.tenant.pk, "kind": "TOPUP"},
    )
    assert response.status_code == 200
    assert [row["reason"] for row in csv_rows(response)] == ["test credit", "any day"]


@pytest.mark.parametrize("typed", ["99999999999999999999999", "²", "12a", "-1"])
def test_a_typed_id_that_is_no_row_id_finds_nothing(finance: Client, typed: str) -> None:
    entries = finance.get(reverse("admin:billing_ledgerentry_changelist"), {"transaction": typed})
    assert entries.status_code == 200
    transactions = finance.get(reverse("admin:billing_ledgertransaction_changelist"), {"q": typed})
    assert transactions.status_code == 200
    assert "0 ledger transactions" in transactions.content.decode()


def test_export_from_a_filtered_list_keeps_its_tenant_and_kind(finance: Client, owner: Persona) -> None:
    listed = finance.get(
        reverse("admin:billing_ledgertransaction_changelist"), {"kind__exact": "TOPUP", "tenant": owner.tenant.pk}
    ).content.decode()
    link = re.search(r'href="([^"]*/export/[^"]*)">Export CSV', listed)
    assert link is not None
    form = finance.get(link.group(1).replace("&amp;", "&")).content.decode()
    assert f'value="{owner.tenant.pk}"' in form
    assert '<option value="TOPUP" selected>' in form
    assert "This field is required" not in form  # the dates are asked for, not reported missing


def test_export_from_a_list_filtered_by_date_keeps_the_days(finance: Client) -> None:
    listed = finance.get(
        reverse("admin:billing_ledgertransaction_changelist"),
        {"created_at__gte": "2026-11-01 00:00:00+00:00", "created_at__lt": "2026-11-08 00:00:00+00:00"},
    ).content.decode()
    link = re.search(r'href="([^"]*/export/[^"]*)">Export CSV', listed)
    assert link is not None
    form = finance.get(link.group(1).replace("&amp;", "&")).content.decode()
    assert 'name="date_from" value="2026-11-01"' in form
    assert 'name="date_to" value="2026-11-07"' in form  # the last day, inclusive


def test_export_without_a_range_shows_the_form(finance: Client) -> None:
    url = reverse("admin:billing_ledgertransaction_export")
    form = finance.get(url)
    assert form.status_code == 200
    assert 'name="date_from"' in form.content.decode()
    reversed_range = finance.get(url, {"date_from": "2024-02-02", "date_to": "2024-02-01"})
    assert reversed_range.status_code == 200
    assert "The start date is after the end date." in reversed_range.content.decode()


# --- API keys -------------------------------------------------------------------------------------------------------


def test_superuser_revokes_selected_keys(root: Client, owner: Persona) -> None:
    first = ApiKey.objects.get(tenant=owner.tenant)
    second = api_key_issue(tenant=owner.tenant, label="second").api_key
    response = root.post(
        reverse("admin:dpp_apikey_changelist"),
        {"action": "revoke_selected", "_selected_action": [first.pk, second.pk], "index": "0"},
    )
    assert response.status_code == 302
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.revoked_at is not None
    assert second.revoked_at is not None
    revoked_at = first.revoked_at

    again = root.post(
        reverse("admin:dpp_apikey_changelist"),
        {"action": "revoke_selected", "_selected_action": [first.pk], "index": "0"},
        follow=True,
    )
    assert "(1 already revoked)" in again.content.decode()
    first.refresh_from_db()
    assert first.revoked_at == revoked_at
    assert owner.client.get("/v1/account").status_code == 401


def test_finance_cannot_revoke_keys(finance: Client, owner: Persona) -> None:
    api_key = ApiKey.objects.get(tenant=owner.tenant)
    listing = finance.get(reverse("admin:dpp_apikey_changelist"))
    assert listing.status_code == 200
    assert api_key.prefix in listing.content.decode()
    assert "revoke_selected" not in listing.content.decode()
    finance.post(
        reverse("admin:dpp_apikey_changelist"),
        {"action": "revoke_selected", "_selected_action": [api_key.pk], "index": "0"},
    )
    api_key.refresh_from_db()
    assert api_key.revoked_at is None


def test_key_search_is_by_exact_prefix(finance: Client, personas: Personas) -> None:
    owner_key = ApiKey.objects.get(tenant=personas.owner.tenant)
    other_key = ApiKey.objects.get(tenant=personas.other.tenant)
    url = reverse("admin:dpp_apikey_changelist")
    html = finance.get(url, {"q": owner_key.prefix}).content.decode()
    assert owner_key.prefix in html
    assert other_key.prefix not in html
    assert owner_key.prefix not in finance.get(url, {"q": owner_key.prefix[:10]}).content.decode()
    detail = finance.get(reverse("admin:dpp_apikey_change", args=[owner_key.pk])).content.decode()
    assert owner_key.key_hash not in detail
    assert personas.owner.api_key not in detail


@pytest.mark.parametrize("advisory_lock", [True, False], ids=["advisory-lock", "unique-index-alone"])
@pytest.mark.django_db(transaction=True)
def test_double_click_on_topup_posts_once(advisory_lock: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Submissions of one form at the same instant: the advisory lock lets the second see the first; without it
    (SQLite has none), the unique index on the form's code refuses the second INSERT, and the page says so."""
    if not advisory_lock:
        monkeypatch.setattr(billing_services, "_lock_manual_trace_id", lambda trace_id: None)
    ensure_staff_groups()
    alice = staff_client("alice", groups=["finance"])
    tenant = make_persona(credit_micros=0).tenant
    url = _topup_url(tenant.pk)
    data = {"amount": "7.0000", "reason": "double click", "nonce": _nonce(alice, url)}
    statuses: list[int] = []

    def post_the_form() -> None:
        statuses.append(alice.post(url, data).status_code)

    assert at_once([post_the_form] * 4) == []
    assert statuses == [302] * 4
    assert LedgerTransaction.objects.filter(tenant=tenant, kind=TXN.TOPUP).count() == 1
    assert balances_get(tenant_id=tenant.pk).available_micros == 7 * USD


def test_the_twin_that_loses_the_race_says_already_posted(
    finance: Client, owner: Persona, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of a double click without the advisory lock, made deterministic: the twin committed between this
    request's check and its INSERT. The unique index refuses the INSERT; the page names the twin's transaction."""
    url = _topup_url(owner.tenant.pk)
    nonce = _nonce(finance, url)
    twin = ledger_topup(tenant=owner.tenant, amount_micros=7 * USD, actor="admin:alice", reason="r", trace_id=nonce)
    checks = iter([None])  # the first look finds nothing: the twin had not committed yet
    real = billing_services._manual_posted
    monkeypatch.setattr(billing_services, "_manual_posted", lambda code: next(checks, None) or real(code))
    response = finance.post(url, {"amount": "7.0000", "reason": "r", "nonce": nonce}, follow=True)
    assert f"Already posted as transaction #{twin.pk}; nothing more." in response.content.decode()
    assert [t.pk for t in LedgerTransaction.objects.filter(tenant=owner.tenant, kind=TXN.TOPUP, trace_id=nonce)] == [
        twin.pk
    ]


def test_a_form_code_from_another_tenants_form_posts_nothing(finance: Client, personas: Personas) -> None:
    owner, other = personas.owner.tenant, personas.other.tenant
    url = _topup_url(owner.pk)
    data = {"amount": "2.0000", "reason": "r", "nonce": _nonce(finance, url)}
    assert finance.post(url, data).status_code == 302
    copied = finance.post(_topup_url(other.pk), data)  # the same code, sent to another tenant's form
    assert copied.status_code == 200
    assert "one-time code was missing or altered" in copied.content.decode()
    assert f'value="{data["nonce"]}"' not in copied.content.decode()  # renewed
    assert balances_get(tenant_id=other.pk).available_micros == 10 * USD


def test_superuser_suspends_and_reactivates_a_tenant(client) -> None:
    from django.contrib.auth import get_user_model

    from dpp.models import Tenant
    from tests.helpers.personas import make_persona

    persona = make_persona()
    admin_user = get_user_model().objects.create_superuser("root-suspend", "r@example.com", "pw-123456789")
    client.force_login(admin_user)
    url = "/admin/dpp/tenant/"
    response = client.post(url, {"action": "suspend_selected", "_selected_action": [persona.tenant.pk]})
    assert response.status_code == 302
    assert Tenant.objects.get(pk=persona.tenant.pk).status == "SUSPENDED"
    assert persona.client.get("/v1/account").json()["reason_code"] == "TENANT_SUSPENDED"
    client.post(url, {"action": "reactivate_selected", "_selected_action": [persona.tenant.pk]})
    assert Tenant.objects.get(pk=persona.tenant.pk).status == "ACTIVE"
    assert persona.client.get("/v1/account").status_code == 200


def test_an_account_page_says_whether_its_balance_equals_its_entries(finance: Client, owner: Persona) -> None:
    account_id = Account.tenant_account_id(owner.tenant.pk, Account.Kind.AVAILABLE)
    page = finance.get(reverse("admin:billing_account_change", args=[account_id])).content.decode()
    assert "10.0000 — equals the balance" in page
    funding = finance.get(reverse("admin:billing_account_change", args=["@funding/00"])).content.decode()
    assert "not summed here (every charge ever made): run audit_ledger" in funding
    with connection.cursor() as cursor:  # what no service can do: the stored balance drifts from the entries
        cursor.execute("UPDATE billing_account SET balance_micros = balance_micros + 100 WHERE id = %s", [account_id])
    drifted = finance.get(reverse("admin:billing_account_change", args=[account_id])).content.decode()
    assert "10.0000 — DIFFERS from the balance: run audit_ledger" in drifted


def test_the_accounts_list_sums_every_balance_by_kind_and_says_whether_they_sum_to_zero(finance: Client) -> None:
    queued_run(make_persona(plan="unlimited", credit_micros=10 * USD), max_cost_usd="0.2500")  # available → held
    url = reverse("admin:billing_account_changelist")
    page = " ".join(finance.get(url).content.decode().split())
    assert (
        "available (all tenants) 9.7500; held (all tenants) 0.2500; @revenue 0.0000; @funding -10.0000. "
        "Together: <strong>0.0000</strong> — they sum to zero"
    ) in page
    with connection.cursor() as cursor:  # what no service can do: one balance drifts
        cursor.execute("UPDATE billing_account SET balance_micros = balance_micros + 100 WHERE id = '@revenue/03'")
    drifted = " ".join(finance.get(url).content.decode().split())
    assert "Together: <strong>0.0001</strong> — <strong>they do not sum to zero: run <code>manage.py audit_ledger" in (
        drifted
    )


def test_the_key_admin_shows_limits_spend_and_place_in_the_tree_read_only(finance: Client, owner: Persona) -> None:
    from dpp.services import KeyLimits, api_key_issue
    from tests.helpers.api import body, submit
    from tests.runs.keys_support import client_for

    root = ApiKey.objects.get(tenant=owner.tenant)
    limits = KeyLimits(spend_limit_micros=2_000_000, spend_window="day", max_cost_per_run_micros=500_000)
    child = api_key_issue(tenant=owner.tenant, parent=root, limits=limits, label="agent")
    assert submit(client_for(child.secret), body("decision", max_cost_usd="0.0500")).status_code == 202
    html = finance.get(reverse("admin:dpp_apikey_changelist"), {"q": child.api_key.prefix}).content.decode()
    assert f"level 1, below {root.prefix}" in html
    assert "2.0000 USD per day; ≤ 0.5000 USD per run" in html
    assert "0.0500 of 2.0000 USD this day" in html
    detail = finance.get(reverse("admin:dpp_apikey_change", args=[child.api_key.pk])).content.decode()
    assert "0.0500 of 2.0000 USD this day" in detail
    assert 'name="_save"' not in detail  # read-only
    assert "first key (no parent)" in finance.get(reverse("admin:dpp_apikey_change", args=[root.pk])).content.decode()
