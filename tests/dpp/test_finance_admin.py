"""The finance admin's answers without a browser (SPEC §13): date periods, money sorts and totals, the alarms
panel, the 30-day activity page, the append-only refusal page, tenant search by a part of its id or name."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.models import LedgerTransaction
from reaper.models import AuditFlag
from tests.helpers.personas import Persona, make_persona, make_plan, persona_on_plan
from tests.helpers.states import ago, canceled_run, completed_run, expired_lease, queued_run

RUNS = "/admin/runs/run/"
LEDGER = "/admin/billing/ledgertransaction/"
DAY = 86_400


def _totals(html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", item).strip() for item in re.findall(r'class="dpp-total"[^>]*>(.*?)</span>', html)]


def _charges(html: str) -> list[str]:
    return re.findall(r'<td class="field-charged">([^<]*)</td>', html)


def test_runs_of_yesterday_sorted_by_charge_with_their_totals(finance: Client) -> None:
    persona = persona_on_plan(make_plan("finance-admin"))
    with ago(DAY):
        for cost in (10_000, 40_000, 20_000):
            completed_run(persona, cost_micros=cost)
    completed_run(persona, cost_micros=30_000)  # today: not yesterday's
    yesterday = (timezone.localdate() - timedelta(days=1)).isoformat()
    period = {"created_at__range__gte": yesterday, "created_at__range__lte": yesterday}
    html = finance.get(RUNS, {**period, "o": "-6"}).content.decode()
    assert _charges(html) == ["0.0400", "0.0200", "0.0100"]
    assert _totals(html) == ["reserved 0.1500", "charged 0.0700"]
    assert ">Yesterday</a>" in html
    assert ">Last month</a>" in html


def test_ledger_totals_and_delta_sorts_only_within_a_tenant(finance: Client, personas: object) -> None:
    owner: Persona = personas.owner  # type: ignore[attr-defined]
    unfiltered = finance.get(LEDGER, {"o": "-9"}).content.decode()
    assert "filter by a tenant or a run" in unfiltered
    assert 'class="sortable column-charged' not in unfiltered
    html = finance.get(LEDGER, {"tenant": owner.tenant.pk, "o": "-9"}).content.decode()
    assert _totals(html) == ["available Δ 10.0000", "held Δ 0.0000", "charged 0.0000"]
    assert "column-charged" in html


def test_the_index_shows_alarms_linking_to_filtered_lists(finance: Client) -> None:
    persona = make_persona(plan="starter")
    AuditFlag.objects.create(kind=AuditFlag.Kind.HELD_MISMATCH, subject="x", detail="off")
    expired_lease(persona, pack_type="decision")
    html = finance.get("/admin/").content.decode()
    assert re.search(
        r'href="/admin/reaper/auditflag/\?open=yes" class="dpp-alarm"\s+data-alarm="open audit flags">⚠ 1', html
    )
    assert re.search(r'href="/admin/runs/run/\?lease=expired" class="dpp-alarm"\s+data-alarm="runs past', html)
    stale = finance.get(RUNS, {"lease": "expired"}).content.decode()
    assert len(re.findall(r'<th class="field-short_id">', stale)) == 1


def test_the_activity_page_counts_runs_and_revenue_per_day(finance: Client) -> None:
    persona = persona_on_plan(make_plan("activity"))
    with ago(2 * DAY):
        completed_run(persona, cost_micros=20_000)
    completed_run(persona, cost_micros=10_000)
    html = finance.get(f"{RUNS}activity/").content.decode()
    rows = re.findall(r'<tr data-day="([0-9-]+)">.*?class="runs">(\d+)<.*?class="revenue">([0-9.]+)<', html, re.S)
    assert len(rows) == 30
    by_day = {day: (runs, revenue) for day, runs, revenue in rows}
    today = timezone.localdate()
    assert by_day[today.isoformat()] == ("1", "0.0100")
    assert by_day[(today - timedelta(days=2)).isoformat()] == ("1", "0.0200")
    assert "In 30 days: 2 runs, 0.0300 USD." in html


def test_a_refused_ledger_delete_is_an_admin_page_saying_why(finance: Client, personas: object) -> None:
    owner: Persona = personas.owner  # type: ignore[attr-defined]
    topup = LedgerTransaction.objects.get(tenant=owner.tenant, kind=LedgerTransaction.Kind.TOPUP)
    for response in (
        finance.get(f"{LEDGER}{topup.pk}/delete/"),
        finance.post(f"{LEDGER}{topup.pk}/delete/", {"post": "yes"}),
        finance.post(f"{LEDGER}{topup.pk}/change/", {"reason": "edited"}),
    ):
        assert response.status_code == 403
        html = response.content.decode()
        assert "The ledger is append-only" in html
        assert "DPP administration" in html
    assert LedgerTransaction.objects.filter(pk=topup.pk, reason=topup.reason).exists()


def test_tenant_search_finds_a_part_of_the_id_or_name_in_any_case(finance: Client) -> None:
    persona = make_persona(prefix="zebra")
    part = persona.tenant.pk[6:12].upper()
    html = finance.get("/admin/dpp/tenant/", {"q": part}).content.decode()
    assert f">{persona.tenant.pk}</a>" in html
    other = make_persona(prefix="okapi")
    by_name = finance.get("/admin/dpp/tenant/", {"q": "ZEBR"}).content.decode()
    assert f">{persona.tenant.pk}</a>" in by_name
    assert other.tenant.pk not in by_name


def _sorted_charges(finance: Client, order: str) -> list[str]:
    return _charges(finance.get(RUNS, {"o": order}).content.decode())


def test_runs_by_charge_put_open_runs_below_every_charge_and_ties_newest_first(finance: Client) -> None:
    persona = persona_on_plan(make_plan("by-charge"))
    with ago(60):
        older = completed_run(persona, cost_micros=40_000)
    queued_run(persona)  # open: no charge yet
    canceled_run(persona)  # charged 0
    completed_run(persona, cost_micros=10_000)
    newer = completed_run(persona, cost_micros=40_000)
    most_first = ["0.0400", "0.0400", "0.0100", "0.0000", "—"]
    assert _sorted_charges(finance, "-6") == most_first
    assert _sorted_charges(finance, "6") == most_first[::-1]
    ids = re.findall(r'href="/admin/runs/run/([0-9a-f-]{36})/change/', finance.get(RUNS, {"o": "-6"}).content.decode())
    assert ids[:2] == [str(newer.pk), str(older.pk)]  # a tie: the newest first, as the unsorted list


@pytest.mark.parametrize(("order", "index"), [("-6", "runs_charged"), ("6", "runs_charged"), ("-5", "runs_reserved")])
def test_a_money_sort_reads_its_index_in_order_and_sorts_nothing(finance: Client, order: str, index: str) -> None:
    """The ORDER BY the changelist emits and the index agree (direction of every key, the charge's expression): with
    sorting priced out, PostgreSQL still needs no Sort node for the page (at 1M runs a sort took 0.6–0.9 s)."""
    completed_run(persona_on_plan(make_plan("plan-of-sort")), cost_micros=10_000)
    with CaptureQueriesContext(connection) as queries:
        finance.get(RUNS, {"o": order})
    (page,) = [q["sql"] for q in queries.captured_queries if "ORDER BY" in q["sql"] and '"runs_run"' in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(f"EXPLAIN (FORMAT JSON) {page}")
        plan = json.dumps(cursor.fetchone()[0])
    assert '"Sort"' not in plan
    assert '"Incremental Sort"' not in plan
    assert f'"Index Name": "{index}"' in plan
