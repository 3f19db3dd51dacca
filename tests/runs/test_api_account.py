"""GET /v1/account, /v1/ledger, /v1/usage and /v1/packs (SPEC §4, §4.0)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any

import pytest
from freezegun import freeze_time

from billing.models import Account, LedgerEntry, LedgerTransaction
from billing.services import ledger_adjust, plan_assign
from dpp.http.pagination import encode_cursor
from dpp.money import format_usd
from runs import services
from runs.models import Run
from tests.helpers.api import accepted, accepted_at, body
from tests.helpers.inputs import DIAGNOSTIC_FAIL
from tests.helpers.money import LEDGER_ITEM_KEYS, MONEY_RE, USD, balances
from tests.helpers.personas import Persona, make_persona
from tests.helpers.problems import assert_problem, field_errors
from tests.helpers.states import execute, expire_queued, fail, lease, run_row

pytestmark = pytest.mark.django_db

USAGE_DAY_KEYS = {"date", "runs", "completed", "failed", "canceled", "expired", "charged_usd", "reserved_usd"}


# --- account -----------------------------------------------------------------------------------------------


def test_account(owner: Persona) -> None:
    response = owner.client.get("/v1/account")
    assert response.status_code == 200
    assert response.json() == {
        "tenant_id": owner.tenant.pk,
        "plan": "starter",
        "available_usd": "10.0000",
        "held_usd": "0.0000",
        "currency": "USD",
    }
    accepted(owner.client, body("decision", max_cost_usd="0.2500"))
    plan_assign(tenant=owner.tenant, plan_code="unlimited", actor="test", reason="upgrade")
    after = owner.client.get("/v1/account").json()
    assert (after["plan"], after["available_usd"], after["held_usd"]) == ("unlimited", "9.7500", "0.2500")


# --- ledger ------------------------------------------------------------------------------------------------


def _ledger(persona: Persona, **params: Any) -> dict[str, Any]:
    response = persona.client.get("/v1/ledger", params)
    assert response.status_code == 200, response.content
    page: dict[str, Any] = response.json()
    assert page.keys() == {"data", "next_cursor"}
    for item in page["data"]:
        assert item.keys() == set(LEDGER_ITEM_KEYS)
        for member in ("available_delta_usd", "held_delta_usd", "charged_usd"):
            assert MONEY_RE.fullmatch(item[member])
        assert datetime.fromisoformat(item["created_at"].replace("Z", "+00:00")).utcoffset() is not None
    return page


def test_ledger_items_signed_deltas_newest_first(unlimited: Persona) -> None:
    first = accepted(unlimited.client, body(max_cost_usd="0.0500"))["run_id"]
    fail(lease(run_row(first)), detail="test")
    second = accepted(unlimited.client, body(max_cost_usd="0.0200"))["run_id"]
    assert unlimited.client.post(f"/v1/runs/{second}/cancel").status_code == 200
    ledger_adjust(tenant=unlimited.tenant, amount_micros=5_000, counterparty="REVENUE", actor="fin", reason="goodwill")
    ledger_adjust(tenant=unlimited.tenant, amount_micros=-2_500, counterparty="FUNDING", actor="fin", reason="fix")
    items = _ledger(unlimited)["data"]
    simplified = [
        (i["kind"], i["run_id"], i["reason"], i["available_delta_usd"], i["held_delta_usd"], i["charged_usd"])
        for i in items
    ]
    assert simplified == [
        ("ADJUSTMENT", None, "fix", "-0.0025", "0.0000", "0.0000"),
        ("ADJUSTMENT", None, "goodwill", "0.0050", "0.0000", "-0.0050"),
        ("SETTLE", second, "CANCELED CANCELED_BY_CLIENT", "0.0200", "-0.0200", "0.0000"),
        ("RESERVE", second, None, "-0.0200", "0.0200", "0.0000"),
        ("SETTLE", first, "FAILED PACK_FAILED", "0.0450", "-0.0500", "0.0050"),
        ("RESERVE", first, None, "-0.0500", "0.0500", "0.0000"),
        ("TOPUP", None, "test credit", "10.0000", "0.0000", "0.0000"),
    ]
    ids = [item["transaction_id"] for item in items]
    assert ids == sorted(ids, reverse=True)
    assert ids == list(
        LedgerTransaction.objects.filter(tenant=unlimited.tenant).order_by("-pk").values_list("pk", flat=True)
    )
    # The deltas add up to the balances.
    available, held = balances(unlimited)
    assert available == 10 * USD - 5_000 + 5_000 - 2_500
    assert format_usd(sum(_micros(i["available_delta_usd"]) for i in items)) == format_usd(available)
    assert format_usd(sum(_micros(i["held_delta_usd"]) for i in items)) == format_usd(held) == "0.0000"


def _micros(usd: str) -> int:
    sign = -1 if usd.startswith("-") else 1
    whole, fraction = usd.lstrip("-").split(".")
    return sign * (int(whole) * USD + int(fraction) * 100)


def test_ledger_cursor_walks_every_item_once(unlimited: Persona) -> None:
    for _ in range(4):
        accepted(unlimited.client, body())
    everything = [item["transaction_id"] for item in _ledger(unlimited, limit=100)["data"]]
    assert len(everything) == 5
    seen: list[int] = []
    page = _ledger(unlimited, limit=2)
    while True:
        seen += [item["transaction_id"] for item in page["data"]]
        if page["next_cursor"] is None:
            break
        accepted(unlimited.client, body())  # newer rows do not shift the pages already handed out
        page = _ledger(unlimited, limit=2, cursor=page["next_cursor"])
    assert seen == everything


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"cursor": "%%%"}, "cursor"),
        ({"cursor": "WzFd"}, "cursor"),  # [1]
        ({"cursor": encode_cursor({"id": "7"})}, "cursor"),
        ({"cursor": encode_cursor({"t": "x"})}, "cursor"),
    ],
)
def test_ledger_bad_parameters(owner: Persona, params: dict[str, str], field: str) -> None:
    problem = assert_problem(owner.client.get("/v1/ledger", params), 422, "VALIDATION_ERROR")
    assert field_errors(problem) == [field]


# --- usage -------------------------------------------------------------------------------------------------


def _accepted_at(persona: Persona, moment: str, **kwargs: Any) -> str:
    return accepted_at(persona.client, moment, body(**kwargs))


def _usage_from_the_ledger(persona: Persona) -> list[dict[str, Any]]:
    """The expected usage computed from ledger rows alone: RESERVE legs by UTC day, SETTLE revenue legs and
    outcomes (the SETTLE's reason starts with the run's final status) attributed to their RESERVE's day."""
    held = Account.tenant_account_id(persona.tenant.pk, Account.Kind.HELD)
    revenue = Account.platform_prefix(Account.Kind.REVENUE)  # any of its shards
    day_of_run: dict[uuid.UUID, date] = {}
    days: dict[date, dict[str, Any]] = defaultdict(
        lambda: {"runs": 0, "completed": 0, "failed": 0, "canceled": 0, "expired": 0, "charged": 0, "reserved": 0}
    )
    for entry in LedgerEntry.objects.filter(
        transaction__tenant=persona.tenant, transaction__kind="RESERVE", account_id=held
    ).select_related("transaction"):
        day = entry.transaction.created_at.astimezone(UTC).date()
        assert entry.transaction.run_id is not None
        day_of_run[entry.transaction.run_id] = day
        days[day]["runs"] += 1
        days[day]["reserved"] += entry.amount_micros
    for txn in LedgerTransaction.objects.filter(tenant=persona.tenant, kind="SETTLE").prefetch_related("entries"):
        assert txn.run_id is not None
        day = day_of_run[txn.run_id]
        days[day][txn.reason.split()[0].lower()] += 1
        days[day]["charged"] += sum(e.amount_micros for e in txn.entries.all() if e.account_id.startswith(revenue))
    return [
        {
            "date": day.isoformat(),
            **{name: row[name] for name in ("runs", "completed", "failed", "canceled", "expired")},
            "charged_usd": format_usd(row["charged"]),
            "reserved_usd": format_usd(row["reserved"]),
        }
        for day, row in sorted(days.items())
    ]


@pytest.mark.django_db(transaction=True)
def test_usage_per_utc_day_agrees_exactly_with_the_ledger() -> None:
    persona = make_persona(plan="unlimited", credit_micros=10 * USD)
    other = make_persona(plan="unlimited", credit_micros=10 * USD)
    completed = _accepted_at(persona, "2026-03-01T08:00:00Z", max_cost_usd="0.0500")
    failed = _accepted_at(persona, "2026-03-01T12:00:00Z", max_cost_usd="0.0500", inputs=DIAGNOSTIC_FAIL)
    canceled = _accepted_at(persona, "2026-03-01T23:59:59.999999Z", max_cost_usd="0.0200")
    capped = _accepted_at(persona, "2026-03-02T00:00:00Z", max_cost_usd="0.0100")  # cost 0.0300, capped
    _accepted_at(persona, "2026-03-02T18:00:00Z", max_cost_usd="0.0700")  # stays QUEUED
    expired = _accepted_at(persona, "2026-03-04T09:00:00Z", max_cost_usd="0.0400")
    canceled_started = _accepted_at(persona, "2026-03-04T10:00:00Z", max_cost_usd="0.0500")
    _accepted_at(other, "2026-03-01T09:00:00Z", max_cost_usd="1.0000")  # another tenant's: not counted

    assert execute(completed) == "completed"
    assert execute(failed) == "failed:PACK_FAILED"
    assert execute(capped) == "completed"
    assert persona.client.post(f"/v1/runs/{canceled}/cancel").status_code == 200
    expire_queued(run_row(expired))
    leased = lease(run_row(canceled_started))
    assert persona.client.post(f"/v1/runs/{canceled_started}/cancel").status_code == 202
    assert services.run_cancel_started(run=run_row(canceled_started), lease_token=leased.token)

    response = persona.client.get("/v1/usage", {"from": "2026-03-01", "to": "2026-03-04"})
    assert response.status_code == 200, response.content
    usage = response.json()
    assert usage.keys() == {"from", "to", "days"}
    assert (usage["from"], usage["to"]) == ("2026-03-01", "2026-03-04")
    for day in usage["days"]:
        assert day.keys() == USAGE_DAY_KEYS
    assert usage["days"] == _usage_from_the_ledger(persona)
    # The same figures, written out: a gap day (03-03) is left out.
    assert usage["days"] == [
        {"date": "2026-03-01", "runs": 3, "completed": 1, "failed": 1, "canceled": 1, "expired": 0,
         "charged_usd": "0.0350", "reserved_usd": "0.1200"},
        {"date": "2026-03-02", "runs": 2, "completed": 1, "failed": 0, "canceled": 0, "expired": 0,
         "charged_usd": "0.0100", "reserved_usd": "0.0800"},
        {"date": "2026-03-04", "runs": 2, "completed": 0, "failed": 0, "canceled": 1, "expired": 1,
         "charged_usd": "0.0050", "reserved_usd": "0.0900"},
    ]  # fmt: skip
    one_day = persona.client.get("/v1/usage", {"from": "2026-03-02", "to": "2026-03-02"}).json()
    assert one_day["days"] == usage["days"][1:2]
    assert persona.client.get("/v1/usage", {"from": "2026-03-03", "to": "2026-03-03"}).json()["days"] == []
    other_usage = other.client.get("/v1/usage", {"from": "2026-03-01", "to": "2026-03-04"}).json()["days"]
    assert [(d["date"], d["runs"], d["reserved_usd"]) for d in other_usage] == [("2026-03-01", 1, "1.0000")]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-03-02", "to": "2026-03-01"}, "from"),
        ({"from": "2026-01-01", "to": "2027-01-02"}, "to"),  # 367 days
        ({"to": "2026-03-01"}, "from"),
        ({"from": "2026-03-01"}, "to"),
        ({"from": "2026-3-1", "to": "2026-03-02"}, "from"),
        ({"from": "2026-03-01", "to": "tomorrow"}, "to"),
        ({"from": "2026-02-30", "to": "2026-03-02"}, "from"),
        # Forms date.fromisoformat reads but YYYY-MM-DD is not (2026-W48-1 was read as 2026-11-23).
        ({"from": "20261126", "to": "20261126"}, "from"),
        ({"from": "2026-11-26", "to": "20261126"}, "to"),
        ({"from": "2026-W48-1", "to": "2026-11-26"}, "from"),
        ({"from": "2026W481", "to": "2026-11-26"}, "from"),
        ({"from": "2026-11-26", "to": "2026-11-26T00:00:00"}, "to"),
        ({"from": "2026-11-26\n", "to": "2026-11-26"}, "from"),
        ({"from": "٢٠٢٦-١١-٢٦", "to": "2026-11-26"}, "from"),
    ],
)
def test_usage_bad_ranges(owner: Persona, params: dict[str, str], field: str) -> None:
    problem = assert_problem(owner.client.get("/v1/usage", params), 422, "VALIDATION_ERROR")
    assert field_errors(problem) == [field]


@pytest.mark.parametrize(
    ("params", "message"),
    [({"to": "2026-03-02"}, "is required"), ({"from": "2026-02-30", "to": "2026-03-02"}, "must be a calendar day")],
)
def test_usage_says_whether_a_day_is_missing_or_wrong(owner: Persona, params: dict[str, str], message: str) -> None:
    problem = assert_problem(owner.client.get("/v1/usage", params), 422, "VALIDATION_ERROR")
    assert message in problem["errors"][0]["message"]


def test_usage_range_of_366_days_is_accepted(owner: Persona) -> None:
    with freeze_time("2026-06-01T12:00:00Z"):
        accepted(owner.client, body("decision", max_cost_usd="0.0100"))
    response = owner.client.get("/v1/usage", {"from": "2026-01-01", "to": "2027-01-01"})
    assert response.status_code == 200
    assert [(d["date"], d["runs"], d["reserved_usd"]) for d in response.json()["days"]] == [("2026-06-01", 1, "0.0100")]


@pytest.mark.parametrize(("first", "last"), [("0001-01-01", "0001-12-31"), ("9999-01-01", "9999-12-31")])
def test_usage_at_the_ends_of_the_calendar(owner: Persona, first: str, last: str) -> None:
    # 9999-12-31 has no day after it: the range still ends, and there is nothing to count.
    response = owner.client.get("/v1/usage", {"from": first, "to": last})
    assert response.status_code == 200, response.content
    assert response.json() == {"from": first, "to": last, "days": []}


# --- packs -------------------------------------------------------------------------------------------------


def test_packs_catalog(owner: Persona) -> None:
    response = owner.client.get("/v1/packs")
    assert response.status_code == 200
    catalog = response.json()
    assert catalog.keys() == {"data"}
    assert [pack["pack_type"] for pack in catalog["data"]] == ["decision", "url", "diagnostic"]
    for pack in catalog["data"]:
        assert pack.keys() == {"pack_type", "description", "input_schema", "pricing", "max_timebox_sec", "plan"}
        assert pack["description"]
        assert pack["input_schema"]["type"] == "object"
        assert pack["input_schema"]["$schema"].startswith("https://json-schema.org/")
        assert pack["max_timebox_sec"] == 90
        assert isinstance(pack["pricing"], dict)
    decision, url, diagnostic = catalog["data"]
    assert set(decision["input_schema"]["required"]) == {"question", "options", "criteria", "scores"}
    assert decision["pricing"]["base_usd"] == "0.0050"
    assert decision["pricing"]["per_cell_usd"] == "0.0001"
    assert url["pricing"]["floor_usd"] == "0.0021"
    assert "url" in url["input_schema"]["properties"]
    assert set(diagnostic["input_schema"]["properties"]) == {"sleep_ms", "cost_usd", "outcome"}
    # What the caller's plan (starter) says of each: diagnostic is not on it.
    assert [pack["plan"] for pack in catalog["data"]] == [
        {"code": "starter", "allowed": True, "max_cost_usd": "1.0000"},
        {"code": "starter", "allowed": True, "max_cost_usd": "1.0000"},
        {"code": "starter", "allowed": False, "max_cost_usd": None},
    ]


def test_packs_catalog_on_the_unlimited_plan(unlimited: Persona) -> None:
    plans = [pack["plan"] for pack in unlimited.client.get("/v1/packs").json()["data"]]
    assert plans == [{"code": "unlimited", "allowed": True, "max_cost_usd": "10000.0000"}] * 3


def test_every_run_in_the_usage_range_is_counted_once(unlimited: Persona) -> None:
    """Usage counts runs by their row; a run list of the same days has the same number of runs."""
    for moment in ("2026-04-01T00:00:00Z", "2026-04-01T23:00:00Z", "2026-04-02T01:00:00Z"):
        _accepted_at(unlimited, moment)
    days = unlimited.client.get("/v1/usage", {"from": "2026-04-01", "to": "2026-04-02"}).json()["days"]
    assert [(d["date"], d["runs"]) for d in days] == [("2026-04-01", 2), ("2026-04-02", 1)]
    assert sum(d["runs"] for d in days) == Run.objects.filter(tenant=unlimited.tenant).count()
