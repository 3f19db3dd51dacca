"""Monthly statements (SPEC §13): one selector behind GET /v1/statements/{month}, `manage.py statement` and the
admin; the equation holds to the micro and each month opens where the previous one closed."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from freezegun import freeze_time

from billing.selectors import balances_get, statement_get
from billing.services import ledger_adjust, ledger_topup
from dpp.money import format_usd, parse_usd
from tests.helpers.admin import ensure_staff_groups, staff_client
from tests.helpers.money import LEDGER_ITEM_KEYS, USD
from tests.helpers.personas import Persona, make_persona
from tests.helpers.problems import assert_problem
from tests.helpers.states import cancel, completed_run, fail, leased_run, queued_run

pytestmark = pytest.mark.django_db

LINE_KEYS = (*LEDGER_ITEM_KEYS, "available_usd")  # in the CSV's column order


def _micros(statement: dict[str, Any], member: str) -> int:
    value: str = statement[member]
    return -parse_usd(value[1:]) if value.startswith("-") else parse_usd(value)


def _assert_equation(statement: dict[str, Any]) -> None:
    left = (
        _micros(statement, "opening_available_usd")
        + _micros(statement, "topups_usd")
        - _micros(statement, "charges_usd")
        + _micros(statement, "adjustments_usd")
    )
    right = (
        _micros(statement, "closing_available_usd")
        + _micros(statement, "closing_held_usd")
        - _micros(statement, "opening_held_usd")
    )
    assert left == right, statement


@pytest.fixture
def two_months() -> Persona:
    """May 2026: 10.0000 top-up, a failed run (minimum fee 0.0050), a run left queued over the month's end, an
    adjustment +0.0100. June: that run canceled before start (full release), a 2.0000 top-up, a completed run
    (0.0123), an adjustment -0.0025."""
    with freeze_time("2026-05-10T08:00:00Z", tick=True):
        persona = make_persona(plan="unlimited", credit_micros=10 * USD)
        fail(leased_run(persona, max_cost_usd="0.0500"))
        waiting = queued_run(persona, max_cost_usd="0.0300")
    with freeze_time("2026-05-31T23:59:59Z", tick=True):
        ledger_adjust(
            tenant=persona.tenant, amount_micros=10_000, counterparty="REVENUE", actor="fin", reason="goodwill"
        )
    with freeze_time("2026-06-01T00:00:01Z", tick=True):
        cancel(persona, waiting)
        ledger_topup(tenant=persona.tenant, amount_micros=2 * USD, actor="fin", reason="more credit")
        completed_run(persona, cost_micros=12_300, max_cost_usd="0.0500")
        ledger_adjust(tenant=persona.tenant, amount_micros=-2_500, counterparty="FUNDING", actor="fin", reason="fix")
    return persona


def test_the_equation_holds_across_a_month_boundary_and_june_opens_where_may_closed(two_months: Persona) -> None:
    tenant_id = two_months.tenant.pk
    april, may, june = (statement_get(tenant_id=tenant_id, month=m) for m in ("2026-04", "2026-05", "2026-06"))
    for statement in (april, may, june):
        _assert_equation(statement)
    assert {k: v for k, v in april.items() if k.endswith("_usd")} == dict.fromkeys(
        [k for k in april if k.endswith("_usd")], "0.0000"
    )
    assert (april["runs"], april["lines"]) == (0, [])
    assert {k: may[k] for k in may if k != "lines"} == {
        "tenant_id": tenant_id,
        "month": "2026-05",
        "opening_available_usd": "0.0000",
        "opening_held_usd": "0.0000",
        "topups_usd": "10.0000",
        "charges_usd": "0.0050",
        "adjustments_usd": "0.0100",
        "closing_available_usd": "9.9750",  # 10 - 0.0050 fee + 0.0100 - 0.0300 still held
        "closing_held_usd": "0.0300",
        "runs": 2,
    }
    assert (june["opening_available_usd"], june["opening_held_usd"]) == ("9.9750", "0.0300")
    assert {k: june[k] for k in ("topups_usd", "charges_usd", "adjustments_usd", "closing_held_usd", "runs")} == {
        "topups_usd": "2.0000",
        "charges_usd": "0.0123",
        "adjustments_usd": "-0.0025",
        "closing_held_usd": "0.0000",  # the canceled run's 0.0300 came back in full
        "runs": 1,
    }
    now = balances_get(tenant_id=tenant_id)  # nothing after June: its closing is the balance now
    assert (june["closing_available_usd"], june["closing_held_usd"]) == (
        format_usd(now.available_micros),
        format_usd(now.held_micros),
    )
    assert now.available_micros == 10 * USD - 5_000 + 10_000 + 2 * USD - 12_300 - 2_500


def test_lines_are_the_ledger_items_oldest_first_with_the_running_balance(two_months: Persona) -> None:
    may = statement_get(tenant_id=two_months.tenant.pk, month="2026-05")
    assert [line["kind"] for line in may["lines"]] == ["TOPUP", "RESERVE", "SETTLE", "RESERVE", "ADJUSTMENT"]
    assert [line["available_usd"] for line in may["lines"]] == ["10.0000", "9.9500", "9.9950", "9.9650", "9.9750"]
    ledger = two_months.client.get("/v1/ledger", {"limit": 100}).json()["data"]
    api_may = two_months.client.get("/v1/statements/2026-05").json()
    by_id = {item["transaction_id"]: item for item in ledger}
    for line in api_may["lines"]:
        assert tuple(line) == LINE_KEYS
        assert {k: v for k, v in line.items() if k != "available_usd"} == by_id[line["transaction_id"]]
    ids = [line["transaction_id"] for line in api_may["lines"]]
    assert ids == sorted(ids)


def test_the_api_and_the_command_show_the_selectors_object(two_months: Persona) -> None:
    response = two_months.client.get("/v1/statements/2026-06")
    assert response.status_code == 200
    assert "Accept" in response["Vary"]
    out = io.StringIO()
    call_command("statement", two_months.tenant.pk, "2026-06", "--json", stdout=out)
    assert json.loads(out.getvalue()) == response.json()
    assert response.json()["lines"][0]["created_at"].endswith("Z")


def test_csv_has_a_header_then_one_row_per_line(two_months: Persona) -> None:
    response = two_months.client.get("/v1/statements/2026-06", HTTP_ACCEPT="text/csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    lines = two_months.client.get("/v1/statements/2026-06").json()["lines"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert len(rows) == 1 + len(lines) == 6
    assert rows[0] == list(lines[0])  # the line's members, in order
    assert [dict(zip(rows[0], row, strict=True)) for row in rows[1:]] == [
        {k: "" if v is None else str(v) for k, v in line.items()} for line in lines
    ]
    out = io.StringIO()
    call_command("statement", two_months.tenant.pk, "2026-06", "--csv", stdout=out)
    assert list(csv.reader(io.StringIO(out.getvalue()))) == rows


def test_an_empty_month_in_csv_is_the_header_alone(owner: Persona) -> None:
    response = owner.client.get("/v1/statements/1999-01", HTTP_ACCEPT="text/csv")
    assert response.content.decode().splitlines() == [",".join(LINE_KEYS)]


def test_a_formula_in_a_reason_is_not_a_formula_in_the_csv(owner: Persona) -> None:
    with freeze_time("2026-03-03T03:00:00Z"):
        ledger_adjust(tenant=owner.tenant, amount_micros=100, counterparty="FUNDING", actor="f", reason="=HYPERLINK(1)")
    text = owner.client.get("/v1/statements/2026-03", HTTP_ACCEPT="text/csv").content.decode()
    [row] = csv.DictReader(io.StringIO(text))
    assert (row["reason"], row["available_delta_usd"], row["available_usd"]) == ("'=HYPERLINK(1)", "0.0001", "0.0001")


@pytest.mark.parametrize("month", ["2026-13", "2026-00", "2026-5", "202605", "26-05", "2026-05-01", "0000-01", "x"])
def test_a_month_that_is_not_yyyy_mm_is_a_422(owner: Persona, month: str) -> None:
    problem = assert_problem(owner.client.get(f"/v1/statements/{month}"), 422, "VALIDATION_ERROR")
    assert problem["errors"] == [{"field": "month", "message": "expected YYYY-MM with a month 01-12"}]
    assert_problem(owner.client.get(f"/v1/statements/{month}", HTTP_ACCEPT="text/csv"), 422, "VALIDATION_ERROR")


def test_each_tenant_sees_its_own_statement(two_months: Persona) -> None:
    with freeze_time("2026-06-15T00:00:00Z", tick=True):
        other = make_persona(plan="unlimited", credit_micros=3 * USD)
    theirs = other.client.get("/v1/statements/2026-06").json()
    assert (theirs["tenant_id"], theirs["topups_usd"], theirs["runs"]) == (other.tenant.pk, "3.0000", 0)
    assert [line["kind"] for line in theirs["lines"]] == ["TOPUP"]
    mine = two_months.client.get("/v1/statements/2026-06").json()
    assert mine["topups_usd"] == "2.0000"
    assert not {line["transaction_id"] for line in mine["lines"]} & {line["transaction_id"] for line in theirs["lines"]}


def test_the_command_in_text_and_its_refusals(two_months: Persona) -> None:
    out = io.StringIO()
    call_command("statement", two_months.tenant.pk, "2026-05", stdout=out)
    text = out.getvalue()
    assert "closing      available 9.9750  held 0.0300" in text
    assert len([line for line in text.splitlines() if " -> " in line]) == 5
    for args, message in (([two_months.tenant.pk, "2026-13"], "YYYY-MM"), (["nobody", "2026-05"], "no tenant")):
        out = io.StringIO()
        with pytest.raises(CommandError, match=message):
            call_command("statement", *args, "--json", stdout=out)
        assert message in json.loads(out.getvalue())["error"]


def test_the_admin_shows_the_statement_with_its_running_balance(two_months: Persona) -> None:
    ensure_staff_groups()
    client = staff_client("auditor", groups=["finance"])
    tenant_id = two_months.tenant.pk
    change = client.get(f"/admin/dpp/tenant/{tenant_id}/change/")
    url = f"/admin/dpp/tenant/{tenant_id}/statement/"
    assert f'href="{url}">Statement</a>' in change.content.decode()
    page = client.get(url, {"month": "2026-05"})
    assert page.status_code == 200
    html = page.content.decode()
    may = statement_get(tenant_id=tenant_id, month="2026-05")
    assert page.context["statement"] == may
    for running in ("10.0000", "9.9500", "9.9950", "9.9650", "9.9750"):
        assert f"<strong>{running}</strong>" in html
    assert html.count('<tr>\n        <td><a href="/admin/billing/ledgertransaction/') == len(may["lines"]) == 5
    assert 'href="?month=2026-04" rel="prev"' in html
    assert 'href="?month=2026-06" rel="next"' in html
    june = client.get(url, {"month": "2026-06"}).context["statement"]
    assert june["opening_available_usd"] == may["closing_available_usd"]
    wrong = client.get(url, {"month": "2026-13"}, follow=True)
    assert wrong.context["statement"]["month"] == timezone.now().strftime("%Y-%m")
    assert "is not a month" in wrong.content.decode()
    assert staff_client("nobody").get(url).status_code == 403  # staff without a view permission
