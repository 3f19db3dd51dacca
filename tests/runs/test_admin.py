"""The runs admin: read-only, filters and exact search, the run's money and ledger, CSV export, bounded queries."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing.models import Account, LedgerTransaction
from dpp.admin_tools import EstimatedCountPaginator
from runs.models import MoneyState, Run, RunStatus
from tests.helpers.admin import csv_rows, staff_client
from tests.helpers.api import accepted, body
from tests.helpers.bulk import bulk_queued_runs
from tests.helpers.inputs import DECISION_PRICE_MICROS, URL_INPUTS
from tests.helpers.money import USD
from tests.helpers.personas import Persona, Personas
from tests.helpers.states import canceled_run, completed_run, execute, expired_run, failed_run, queued_run

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:runs_run_changelist"


def _listed(client: Client, params: dict[str, str]) -> set[str]:
    response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200
    return set(re.findall(r"/admin/runs/run/([0-9a-f-]{36})/change/", response.content.decode()))


def test_run_page_shows_money_ledger_timeline_error_and_result(finance: Client, owner: Persona) -> None:
    run = failed_run(owner, pack_type="decision", max_cost_usd="0.5000", detail="the pack said no")
    reserve = LedgerTransaction.objects.get(run_id=run.pk, kind="RESERVE")
    settle = LedgerTransaction.objects.get(run_id=run.pk, kind="SETTLE")
    response = finance.get(reverse("admin:runs_run_change", args=[run.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    for figure in ("0.5000", "0.0100", "0.4900"):  # reserved, minimum fee = charged (2 %), released
        assert f'<div class="readonly">{figure}</div>' in html, figure
    for txn in (reserve, settle):
        assert reverse("admin:billing_ledgertransaction_change", args=[txn.pk]) in html
    assert f"{owner.tenant.pk}/held -0.5000" in html  # SETTLE's held leg
    assert f"{Account.platform_account_for(Account.Kind.REVENUE, run.pk)} 0.0100" in html
    assert f"{owner.tenant.pk}/available 0.4900" in html
    assert "PACK_FAILED" in html
    assert "the pack said no" in html
    assert "Timeline" in html
    stored = Run.objects.get(pk=run.pk)
    for instant in (stored.created_at, stored.completed_at):  # to the millisecond, in UTC
        assert instant is not None
        assert instant.astimezone(dt.UTC).isoformat(timespec="milliseconds") in html
    assert 'name="_save"' not in html
    completed = completed_run(owner, pack_type="decision", cost_micros=DECISION_PRICE_MICROS)  # only it has a result
    completed_html = finance.get(reverse("admin:runs_run_change", args=[completed.pk])).content.decode()
    assert completed.result_sha256 in completed_html
    assert completed.result_key in completed_html


def test_open_run_page_shows_nothing_released_yet(finance: Client, owner: Persona) -> None:
    run = queued_run(owner, pack_type="decision", max_cost_usd="0.0500")
    html = finance.get(reverse("admin:runs_run_change", args=[run.pk])).content.decode()
    assert '<div class="readonly">0.0500</div>' in html
    assert html.count('<div class="readonly">—</div>') >= 2  # charged, released
    assert len(re.findall(r"/admin/billing/ledgertransaction/\d+/change/", html)) == 1  # its RESERVE only


@pytest.mark.parametrize("who", ["finance", "root"])
def test_runs_cannot_be_added_changed_or_deleted(request: pytest.FixtureRequest, owner: Persona, who: str) -> None:
    client: Client = request.getfixturevalue(who)
    run = queued_run(owner, pack_type="decision")
    change = reverse("admin:runs_run_change", args=[run.pk])
    assert client.post(change, {"status__exact": "COMPLETED"}).status_code == 403
    assert client.get(reverse("admin:runs_run_delete", args=[run.pk])).status_code == 403
    assert client.post(reverse("admin:runs_run_delete", args=[run.pk]), {"post": "yes"}).status_code == 403
    assert client.get(reverse("admin:runs_run_add")).status_code == 403
    run.refresh_from_db()
    assert (run.status, run.version) == (RunStatus.QUEUED, 0)


def test_filters(finance: Client, personas: Personas) -> None:
    owner = personas.owner.tenant.pk
    queued = queued_run(personas.owner, pack_type="decision")
    completed = completed_run(personas.owner, pack_type="decision", cost_micros=20_000)
    expired = expired_run(personas.other, pack_type="url", inputs=URL_INPUTS)
    assert _listed(finance, {"status__exact": "COMPLETED"}) == {str(completed.pk)}
    assert _listed(finance, {"money_state__exact": MoneyState.REFUNDED}) == {str(expired.pk)}
    assert _listed(finance, {"money_state__exact": MoneyState.RESERVED}) == {str(queued.pk)}
    assert _listed(finance, {"pack_type": "url"}) == {str(expired.pk)}
    assert _listed(finance, {"tenant": owner}) == {str(queued.pk), str(completed.pk)}
    assert _listed(finance, {"tenant": "NOT A TENANT"}) == set()
    today = f"{timezone.now().date().isoformat()} 00:00:00+00:00"
    assert len(_listed(finance, {"created_at__gte": today})) == 3
    assert _listed(finance, {"created_at__lt": "2000-01-01 00:00:00+00:00"}) == set()


def test_search_is_exact(finance: Client, owner: Persona) -> None:
    run = queued_run(owner, pack_type="decision", key="order-2024-0001", trace_id="trace-abc-123")
    other = queued_run(owner, pack_type="decision")
    assert _listed(finance, {"q": str(run.pk)}) == {str(run.pk)}
    assert _listed(finance, {"q": "order-2024-0001"}) == {str(run.pk)}
    assert _listed(finance, {"q": " trace-abc-123 "}) == {str(run.pk)}
    assert _listed(finance, {"q": "order-2024"}) == set()  # no partial matches: no LIKE
    assert _listed(finance, {"q": str(run.pk)[:8]}) == set()
    assert _listed(finance, {"q": ""}) == {str(run.pk), str(other.pk)}


def test_runs_changelist_over_10000_runs_runs_few_queries(
    finance: Client, owner: Persona, django_assert_max_num_queries: Any
) -> None:
    bulk_queued_runs(owner.tenant.pk, 10_000, 500)
    newest = Run.objects.order_by("-created_at", "-id").first()
    assert newest is not None
    with django_assert_max_num_queries(15):
        response = finance.get(reverse(CHANGELIST))
    assert response.status_code == 200
    html = response.content.decode()
    assert reverse("admin:runs_run_change", args=[newest.pk]) in html
    assert "10000 runs" in html  # exactly the cap: still an exact count
    with django_assert_max_num_queries(15):
        filtered = finance.get(reverse(CHANGELIST), {"status__exact": "QUEUED", "tenant": owner.tenant.pk, "p": "2"})
    assert filtered.status_code == 200
    assert len(re.findall(r"/admin/runs/run/[0-9a-f-]{36}/change/", filtered.content.decode())) == 50
    assert Run.objects.filter(tenant=owner.tenant).count() == 10_000
    held = owner.tenant.accounts.get(kind="HELD").balance_micros
    assert held == 10_000 * 500


def test_unfiltered_count_uses_the_planner_estimate_not_count(finance: Client, owner: Persona) -> None:
    """Once ANALYZE has seen a large table, the unfiltered changelist runs no COUNT at all."""
    bulk_queued_runs(owner.tenant.pk, EstimatedCountPaginator.COUNT_CAP + 500, 100)
    try:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE runs_run")  # sees this transaction's own rows
        with CaptureQueriesContext(connection) as queries:
            response = finance.get(reverse(CHANGELIST))
        assert response.status_code == 200
        assert not [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
        assert re.search(r"about 10,[0-9]{3} runs", response.content.decode())
        with CaptureQueriesContext(connection) as queries:
            assert finance.get(reverse(CHANGELIST), {"status__exact": "QUEUED"}).status_code == 200
        counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
        assert len(counts) == 1
        assert "LIMIT 10001" in counts[0]  # filtered: an exact count, capped
    finally:
        # ANALYZE writes pg_class in place (not rolled back): leave an estimate that matches the emptied table.
        Run.objects.all().delete()
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE runs_run")


def test_csv_export_of_the_filtered_changelist(finance: Client, personas: Personas) -> None:
    owner = personas.owner.tenant.pk
    completed = completed_run(personas.owner, pack_type="decision", max_cost_usd="0.0500", cost_micros=11_000)
    queued_run(personas.owner, pack_type="decision", max_cost_usd="0.0700")  # QUEUED: filtered out
    completed_run(personas.other, pack_type="decision", cost_micros=5_600)  # other tenant
    changelist = finance.get(reverse(CHANGELIST), {"status__exact": "COMPLETED", "tenant": owner}).content.decode()
    export_url = reverse("admin:runs_run_export")
    assert f"{export_url}?status__exact=COMPLETED&amp;tenant={owner}" in changelist

    rows = csv_rows(finance.get(export_url, {"status__exact": "COMPLETED", "tenant": owner}))
    assert len(rows) == 1
    row = rows[0]
    assert row["run_id"] == str(completed.pk)
    assert (row["tenant_id"], row["status"], row["money_state"]) == (owner, "COMPLETED", "SETTLED")
    assert (row["reserved_usd"], row["minimum_fee_usd"], row["charged_usd"], row["released_usd"]) == (
        "0.0500",
        "0.0050",
        "0.0110",
        "0.0390",
    )
    assert row["idempotency_key"] == completed.idempotency_key

    everything = csv_rows(finance.get(export_url))
    assert len(everything) == 3
    queued = next(r for r in everything if r["status"] == "QUEUED")
    assert (queued["reserved_usd"], queued["charged_usd"], queued["released_usd"]) == ("0.0700", "", "")
    bad = finance.get(export_url, {"nonsense__field": "1"})
    assert bad.status_code == 302


def test_run_ledger_links_back_to_the_run(finance: Client, owner: Persona) -> None:
    run = canceled_run(owner, pack_type="decision")
    settle = LedgerTransaction.objects.get(run_id=run.pk, kind="SETTLE")
    html = finance.get(reverse("admin:billing_ledgertransaction_change", args=[settle.pk])).content.decode()
    assert reverse("admin:runs_run_change", args=[run.pk]) in html
    assert owner.tenant.accounts.get(kind="HELD").balance_micros == 0
    assert owner.tenant.accounts.get(kind="AVAILABLE").balance_micros == 10 * USD


def test_unknown_run_id_is_not_an_error(finance: Client) -> None:
    response = finance.get(reverse("admin:runs_run_change", args=[uuid.uuid4()]))
    assert response.status_code == 302  # the admin's "does not exist" redirect


@pytest.mark.django_db(transaction=True)
def test_run_page_links_to_its_result_envelope(finance: Client, owner: Persona) -> None:
    receipt = accepted(owner.client, body("decision", max_cost_usd="0.0100"))
    assert execute(receipt["run_id"]) == "completed"
    page = finance.get(reverse("admin:runs_run_change", args=[receipt["run_id"]])).content.decode()
    link = reverse("admin:runs_run_result", args=[receipt["run_id"]])
    assert f'<a href="{link}">open the envelope</a>' in page
    envelope = finance.get(link)
    assert envelope.status_code == 200
    assert envelope["Content-Type"] == "application/json"
    run = Run.objects.get(pk=receipt["run_id"])
    assert hashlib.sha256(envelope.content).hexdigest() == run.result_sha256  # what the agent gets, byte for byte
    assert json.loads(envelope.content)["run_id"] == receipt["run_id"]


@pytest.mark.parametrize("run_id", [str(uuid.uuid4()), "not-a-run-id"])
def test_result_of_a_run_that_does_not_exist(finance: Client, run_id: str) -> None:
    response = finance.get(reverse("admin:runs_run_result", args=[run_id]), follow=True)
    assert response.redirect_chain[0] == (reverse(CHANGELIST), 302)
    assert f"There is no run &#x27;{run_id}&#x27;." in response.content.decode()


def test_result_link_of_a_run_without_a_stored_result(finance: Client, owner: Persona) -> None:
    run = failed_run(owner, pack_type="decision")  # the minimum fee: 0.0050
    assert "open the envelope" not in finance.get(reverse("admin:runs_run_change", args=[run.pk])).content.decode()
    response = finance.get(reverse("admin:runs_run_result", args=[run.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:runs_run_change", args=[run.pk])


@pytest.mark.django_db(transaction=True)
def test_result_envelope_needs_the_view_permission(owner: Persona) -> None:
    receipt = accepted(owner.client, body("decision", max_cost_usd="0.0100"))
    assert execute(receipt["run_id"]) == "completed"
    nobody = staff_client("plain")
    assert nobody.get(reverse("admin:runs_run_result", args=[receipt["run_id"]])).status_code == 403


def test_head_of_the_csv_export_sends_its_headers_without_rows(finance: Client, personas: Personas) -> None:
    """Through the WSGI application as gunicorn calls it (the test client drops a HEAD's body by itself)."""
    queued_run(personas.owner, pack_type="decision")
    environ = RequestFactory().head(reverse("admin:runs_run_export")).environ
    environ["HTTP_COOKIE"] = "; ".join(f"{name}={morsel.value}" for name, morsel in finance.cookies.items())
    started: list[tuple[str, dict[str, str]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], *_: object) -> Callable[[bytes], object]:
        started.append((status, dict(headers)))
        return lambda data: None

    # As the test client does: the test's connection (its transaction) must outlive the request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        body = WSGIHandler()(environ, start_response)
        sent = b"".join(body)
        body.close()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    status, headers = started[0]
    assert status == "200 OK"
    assert headers["Content-Type"].startswith("text/csv")
    assert sent == b""
