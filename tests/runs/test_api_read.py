"""The read side of SPEC §4: a run's body in every state, the run list, and the cross-tenant rule."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time

from billing.models import Account, LedgerEntry
from dpp.http.pagination import encode_cursor
from runs import services
from tests.helpers.api import accepted, accepted_at, body
from tests.helpers.inputs import DIAGNOSTIC_FAIL
from tests.helpers.money import USD, balances
from tests.helpers.personas import Persona, Personas, make_persona
from tests.helpers.problems import assert_problem, field_errors, without_request_members
from tests.helpers.states import execute, lease, run_row

pytestmark = pytest.mark.django_db

RUN_KEYS = {"run_id", "pack_type", "status", "money_state", "cost", "result", "error", "meta"}
COST_KEYS = {"reserved_usd", "used_usd", "minimum_fee_usd", "budget_remaining_usd"}
META_KEYS = {"created_at", "updated_at", "completed_at", "cancel_requested_at", "trace_id", "profile_version"}


def get_run(persona: Persona, run_id: str) -> tuple[dict[str, Any], Any]:
    response = persona.client.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    run: dict[str, Any] = response.json()
    assert run.keys() == RUN_KEYS
    assert run["cost"].keys() == COST_KEYS
    assert run["meta"].keys() == META_KEYS
    assert run["run_id"] == run_id
    return run, response


# --- a run's body in each state ----------------------------------------------------------------------------


def test_queued_run(unlimited: Persona) -> None:
    receipt = accepted(unlimited.client, body(max_cost_usd="0.0500", trace_id="trace-q"))
    run, response = get_run(unlimited, receipt["run_id"])
    assert run["pack_type"] == "diagnostic"
    assert (run["status"], run["money_state"]) == ("QUEUED", "RESERVED")
    assert run["cost"] == {
        "reserved_usd": "0.0500",
        "used_usd": None,
        "minimum_fee_usd": "0.0050",
        "budget_remaining_usd": "9.9500",
    }
    assert run["result"] is None
    assert run["error"] is None
    assert run["meta"]["created_at"] == receipt["meta"]["created_at"]
    assert run["meta"]["completed_at"] is None
    assert run["meta"]["trace_id"] == "trace-q"
    assert run["meta"]["profile_version"] == "diagnostic@1.0.0"
    assert response["X-DPP-Cost-Reserved"] == "0.0500"
    assert response["X-DPP-Cost-Minimum-Fee"] == "0.0050"
    assert "X-DPP-Cost-Actual" not in response


def test_processing_run(unlimited: Persona) -> None:
    receipt = accepted(unlimited.client, body())
    lease(run_row(receipt["run_id"]))
    run, response = get_run(unlimited, receipt["run_id"])
    assert (run["status"], run["money_state"], run["cost"]["used_usd"]) == ("PROCESSING", "RESERVED", None)
    assert run["result"] is None
    assert run["error"] is None
    assert "X-DPP-Cost-Actual" not in response


@pytest.mark.django_db(transaction=True)
def test_completed_run(unlimited: Persona) -> None:
    receipt = accepted(unlimited.client, body(max_cost_usd="0.0500"))
    assert execute(receipt["run_id"]) == "completed"
    run, response = get_run(unlimited, receipt["run_id"])
    assert (run["status"], run["money_state"]) == ("COMPLETED", "SETTLED")
    assert run["cost"] == {
        "reserved_usd": "0.0500",
        "used_usd": "0.0300",
        "minimum_fee_usd": "0.0050",
        "budget_remaining_usd": "9.9700",
    }
    assert balances(unlimited) == (10 * USD - 30_000, 0)
    row = run_row(receipt["run_id"])
    assert row.completed_at is not None
    assert run["error"] is None
    result = run["result"]
    assert result.keys() == {"url", "sha256", "bytes", "expires_at"}
    assert result["url"] == f"http://testserver/v1/runs/{receipt['run_id']}/result"
    assert result["sha256"] == row.result_sha256
    assert len(result["sha256"]) == 64
    assert result["bytes"] == row.result_bytes
    assert result["bytes"] > 0
    assert datetime.fromisoformat(result["expires_at"]) == row.completed_at + timedelta(days=30)
    assert datetime.fromisoformat(run["meta"]["completed_at"]) == row.completed_at
    assert response["X-DPP-Cost-Reserved"] == "0.0500"
    assert response["X-DPP-Cost-Actual"] == "0.0300"


@pytest.mark.django_db(transaction=True)
def test_cost_above_the_reservation_is_charged_exactly_the_reservation(unlimited: Persona) -> None:
    receipt = accepted(unlimited.client, body(max_cost_usd="0.0100"))  # the pack reports 0.0300
    assert execute(receipt["run_id"]) == "completed"
    run, response = get_run(unlimited, receipt["run_id"])
    assert (run["status"], run["money_state"], run["cost"]["used_usd"]) == ("COMPLETED", "SETTLED", "0.0100")
    assert response["X-DPP-Cost-Actual"] == "0.0100"
    revenue_leg = LedgerEntry.objects.get(
        transaction__run_id=receipt["run_id"],
        transaction__kind="SETTLE",
        account__kind=Account.Kind.REVENUE,
    )
    assert revenue_leg.amount_micros == 10_000
    assert balances(unlimited) == (10 * USD - 10_000, 0)


@pytest.mark.django_db(transaction=True)
def test_failed_run_is_charged_the_minimum_fee(unlimited: Persona) -> None:
    receipt = accepted(unlimited.client, body("diagnostic", DIAGNOSTIC_FAIL, max_cost_usd="0.5000"))
    assert execute(receipt["run_id"]) == "failed:PACK_FAILED"
    run, response = get_run(unlimited, receipt["run_id"])
    assert (run["status"], run["money_state"]) == ("FAILED", "SETTLED")
    assert run["cost"]["used_usd"] == run["cost"]["minimum_fee_usd"] == "0.0100"
    assert run["error"] == {"reason_code": "PACK_FAILED", "detail": "diagnostic outcome fail requested"}
    assert run["result"] is None
    assert run["meta"]["completed_at"] is not None
    assert response["X-DPP-Cost-Actual"] == "0.0100"
    assert balances(unlimited) == (10 * USD - 10_000, 0)


def test_canceled_run(unlimited: Persona) -> None:
    receipt = accepted(unlimited.client, body())
    assert unlimited.client.post(f"/v1/runs/{receipt['run_id']}/cancel").status_code == 200
    run, response = get_run(unlimited, receipt["run_id"])
    assert (run["status"], run["money_state"], run["cost"]["used_usd"]) == ("CANCELED", "REFUNDED", "0.0000")
    assert run["error"]["reason_code"] == "CANCELED_BY_CLIENT"
    assert run["error"]["detail"]
    assert run["result"] is None
    assert response["X-DPP-Cost-Actual"] == "0.0000"


def test_expired_run(unlimited: Persona) -> None:
    receipt = accepted(unlimited.client, body())
    assert services.run_expire_queued(run=run_row(receipt["run_id"]))
    run, response = get_run(unlimited, receipt["run_id"])
    assert (run["status"], run["money_state"], run["cost"]["used_usd"]) == ("EXPIRED", "REFUNDED", "0.0000")
    assert run["error"]["reason_code"] == "QUEUE_TIMEOUT"
    assert run["error"]["detail"]
    assert response["X-DPP-Cost-Actual"] == "0.0000"
    assert balances(unlimited) == (10 * USD, 0)


# --- GET /v1/runs ------------------------------------------------------------------------------------------


def _ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    page = response.json()
    assert page.keys() == {"data", "next_cursor"}
    return [run["run_id"] for run in page["data"]]


def _submit_many(persona: Persona, count: int, **kwargs: Any) -> list[str]:
    return [accepted(persona.client, body(**kwargs))["run_id"] for _ in range(count)]


def test_list_newest_first_with_full_run_bodies(unlimited: Persona) -> None:
    ids = _submit_many(unlimited, 3)
    response = unlimited.client.get("/v1/runs")
    assert _ids(response) == ids[::-1]
    page = response.json()
    assert page["next_cursor"] is None
    for item in page["data"]:
        assert item.keys() == RUN_KEYS
        assert item["cost"]["budget_remaining_usd"] == "9.8500"
    single, _ = get_run(unlimited, ids[0])
    assert page["data"][-1] == single


def test_list_only_shows_the_tenants_own_runs(personas: Personas) -> None:
    mine = _submit_many(personas.owner, 2, pack_type="decision", max_cost_usd="0.0100")
    _submit_many(personas.other, 2, pack_type="decision", max_cost_usd="0.0100")
    assert _ids(personas.owner.client.get("/v1/runs")) == mine[::-1]
    assert _ids(personas.outsider.client.get("/v1/runs")) == []


def test_cursor_pagination_is_stable_while_new_runs_arrive(unlimited: Persona) -> None:
    old = _submit_many(unlimited, 5)[::-1]  # newest first
    first = unlimited.client.get("/v1/runs", {"limit": 2})
    assert _ids(first) == old[:2]
    newer = _submit_many(unlimited, 2)
    second = unlimited.client.get("/v1/runs", {"limit": 2, "cursor": first.json()["next_cursor"]})
    assert _ids(second) == old[2:4]
    _submit_many(unlimited, 1)
    third = unlimited.client.get("/v1/runs", {"limit": 2, "cursor": second.json()["next_cursor"]})
    assert _ids(third) == old[4:]
    assert third.json()["next_cursor"] is None
    assert _ids(unlimited.client.get("/v1/runs", {"limit": 3}))[1:3] == newer[::-1]


def test_cursor_breaks_ties_on_created_at_by_id(unlimited: Persona) -> None:
    with freeze_time(datetime(2026, 5, 1, tzinfo=UTC)):  # five runs created at the same instant
        ids = _submit_many(unlimited, 5)
    seen: list[str] = []
    cursor = None
    for _ in range(6):
        params: dict[str, str | int] = {"limit": 1}
        if cursor:
            params["cursor"] = cursor
        response = unlimited.client.get("/v1/runs", params)
        seen += _ids(response)
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)


def test_limit_bounds(unlimited: Persona) -> None:
    ids = _submit_many(unlimited, 3)[::-1]
    assert _ids(unlimited.client.get("/v1/runs", {"limit": 1})) == ids[:1]
    assert _ids(unlimited.client.get("/v1/runs", {"limit": 100})) == ids
    for bad in ("0", "101", "-1", "abc", "1.5", "1e2"):
        problem = assert_problem(unlimited.client.get("/v1/runs", {"limit": bad}), 422, "VALIDATION_ERROR")
        assert field_errors(problem) == ["limit"]


def test_default_page_is_20(unlimited: Persona) -> None:
    ids = _submit_many(unlimited, 21)[::-1]
    first = unlimited.client.get("/v1/runs")
    assert _ids(first) == ids[:20]
    assert _ids(unlimited.client.get("/v1/runs", {"cursor": first.json()["next_cursor"]})) == ids[20:]


def test_filter_by_status(unlimited: Persona) -> None:
    ids = _submit_many(unlimited, 3)
    assert unlimited.client.post(f"/v1/runs/{ids[1]}/cancel").status_code == 200
    assert _ids(unlimited.client.get("/v1/runs", {"status": "CANCELED"})) == [ids[1]]
    assert _ids(unlimited.client.get("/v1/runs", {"status": "QUEUED"})) == [ids[2], ids[0]]
    assert _ids(unlimited.client.get("/v1/runs", {"status": "COMPLETED"})) == []


@pytest.mark.django_db(transaction=True)
def test_filter_by_several_statuses_repeated(unlimited: Persona) -> None:
    ids = _submit_many(unlimited, 1, pack_type="diagnostic", inputs=DIAGNOSTIC_FAIL) + _submit_many(unlimited, 2)
    assert execute(ids[0]) == "failed:PACK_FAILED"
    assert unlimited.client.post(f"/v1/runs/{ids[1]}/cancel").status_code == 200
    # Both values count (the last one alone used to win silently), once each when repeated.
    either = unlimited.client.get("/v1/runs", {"status": ["CANCELED", "FAILED"]})
    assert _ids(either) == [ids[1], ids[0]]
    assert _ids(unlimited.client.get("/v1/runs", {"status": ["QUEUED", "QUEUED"]})) == [ids[2]]
    assert _ids(unlimited.client.get("/v1/runs", {"status": ["CANCELED", ""]})) == [ids[1]]
    problem = assert_problem(unlimited.client.get("/v1/runs", {"status": ["QUEUED", "BOGUS"]}), 422, "VALIDATION_ERROR")
    assert field_errors(problem) == ["status"]


def test_filter_by_pack_type(unlimited: Persona) -> None:
    diagnostic = _submit_many(unlimited, 2)
    decision = _submit_many(unlimited, 1, pack_type="decision", max_cost_usd="0.0100")
    assert _ids(unlimited.client.get("/v1/runs", {"pack_type": "decision"})) == decision
    assert _ids(unlimited.client.get("/v1/runs", {"pack_type": "diagnostic"})) == diagnostic[::-1]
    assert _ids(unlimited.client.get("/v1/runs", {"pack_type": "url"})) == []
    both = unlimited.client.get("/v1/runs", {"pack_type": "diagnostic", "status": "QUEUED", "limit": "1"})
    assert _ids(both) == [diagnostic[1]]


def test_filter_by_creation_time(unlimited: Persona) -> None:
    ids = [accepted_at(unlimited.client, datetime(2026, month, 1, tzinfo=UTC), body()) for month in (1, 2, 3)]
    jan, feb, mar = ids

    def listed(**params: str) -> list[str]:
        return _ids(unlimited.client.get("/v1/runs", params))

    assert listed(created_after="2026-01-15T00:00:00Z") == [mar, feb]
    assert listed(created_before="2026-02-15T00:00:00Z") == [feb, jan]
    assert listed(created_after="2026-01-15T00:00:00Z", created_before="2026-02-15T00:00:00Z") == [feb]
    assert listed(created_after="2026-02-01T00:00:00Z") == [mar]  # strictly after
    assert listed(created_before="2026-02-01T00:00:00Z") == [jan]  # strictly before
    assert listed(created_after="2026-01-31T20:00:00-05:00") == [mar]  # = 2026-02-01T01:00Z
    assert listed(created_after="2026-01-31T20:00:00+01:00") == [mar, feb]
    assert listed(created_after="2026-02-01T15:59:00+15:59") == [mar]  # = 2026-02-01T00:00:00Z
    assert listed(created_after="2026-02-01T15:58:59+15:59") == [mar, feb]
    # Offsets PostgreSQL itself refuses (beyond ±15:59) are converted to UTC first (they were 500s).
    assert listed(created_before="0300-10-02T08:09:47.25072+19:51") == []
    assert listed(created_after="2026-02-01T19:51:00+19:51") == [mar]
    # RFC 3339 forms beyond the usual: lower-case t and z, -00:00, a fraction longer than microseconds.
    assert listed(created_after="2026-01-31t23:59:59z") == [mar, feb]
    assert listed(created_after="2026-02-01T00:00:00-00:00") == [mar]
    assert listed(created_after="2026-01-31T23:59:59.999999999Z") == [mar, feb]
    stale = encode_cursor({"t": "2026-03-02T19:51:00+19:51", "id": str(uuid.uuid4())})
    assert listed(cursor=stale) == [mar, feb, jan]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "BOGUS"}, "status"),
        ({"status": "queued"}, "status"),
        ({"status": "COMPLETED,FAILED"}, "status"),  # repeat the parameter instead
        ({"pack_type": "bogus"}, "pack_type"),  # was a 200 with an empty list
        ({"pack_type": "DECISION"}, "pack_type"),
        ({"pack_type": ["decision", "url"]}, "pack_type"),  # one filter would be dropped silently
        # ISO 8601 forms Python reads but RFC 3339 does not have (the week date was read as 2026-11-23).
        ({"created_after": "20261126T000000Z"}, "created_after"),
        ({"created_after": "2026-W48-1T00:00:00Z"}, "created_after"),
        ({"created_after": "2026-11-26 00:00:00Z"}, "created_after"),
        ({"created_after": "2026-11-26T00:00Z"}, "created_after"),
        ({"created_after": "2026-11-26T00Z"}, "created_after"),
        ({"created_after": "2026-11-26T00:00:00+0100"}, "created_after"),
        ({"created_after": "2026-11-26T00:00:00+01"}, "created_after"),
        ({"created_after": "2026-11-26T00:00:00,5Z"}, "created_after"),
        ({"created_after": "2026-11-26T00:00:00.Z"}, "created_after"),
        ({"created_after": "2026-11-26T00:00:00+01:00:30"}, "created_after"),
        ({"created_before": "2026-11-26T00:00:00 01:00"}, "created_before"),  # an unencoded + read as a space
        ({"created_before": "2026-11-26T00:00:00Z\n"}, "created_before"),
        ({"created_before": "٢٠٢٦-١١-٢٦T00:00:00Z"}, "created_before"),
        ({"created_before": "2026-11-26T00:00:60Z"}, "created_before"),
        ({"created_after": "2026-01-01"}, "created_after"),
        ({"created_after": "2026-01-01T00:00:00"}, "created_after"),
        ({"created_before": "yesterday"}, "created_before"),
        ({"created_before": "2026-13-01T00:00:00Z"}, "created_before"),
        # Aware date-times that do not exist in UTC (they were 500s, found by schemathesis).
        ({"created_after": "0001-01-01T00:00:00+01:00"}, "created_after"),
        ({"created_after": "9999-12-31T23:59:59-01:00"}, "created_after"),
        ({"cursor": "!!!"}, "cursor"),
        ({"cursor": "bm90IGpzb24"}, "cursor"),  # "not json"
        ({"cursor": encode_cursor({"x": 1})}, "cursor"),
        ({"cursor": encode_cursor({"t": "x", "id": "y"})}, "cursor"),
        ({"cursor": encode_cursor({"t": 5, "id": 5})}, "cursor"),
        ({"cursor": "WzFd"}, "cursor"),  # [1]
        ({"cursor": encode_cursor({"t": "2026-01-01T00:00:00", "id": str(uuid.uuid4())})}, "cursor"),  # naive
        ({"cursor": encode_cursor({"t": "0001-01-01T00:00:00+01:00", "id": str(uuid.uuid4())})}, "cursor"),
        ({"cursor": encode_cursor({"t": "2026-01-01T00:00:00+00:00", "id": 5})}, "cursor"),
    ],
)
def test_bad_list_parameters(unlimited: Persona, params: dict[str, str], field: str) -> None:
    problem = assert_problem(unlimited.client.get("/v1/runs", params), 422, "VALIDATION_ERROR")
    assert field_errors(problem) == [field]


def test_unknown_pack_type_filter_is_refused_like_an_unknown_status(unlimited: Persona) -> None:
    status = assert_problem(unlimited.client.get("/v1/runs", {"status": "BOGUS"}), 422, "VALIDATION_ERROR")
    pack = assert_problem(unlimited.client.get("/v1/runs", {"pack_type": "bogus"}), 422, "VALIDATION_ERROR")
    assert pack["errors"] == [{"field": "pack_type", "message": "must be one of decision, url, diagnostic"}]
    assert pack["detail"] == "pack_type: must be one of decision, url, diagnostic"
    assert status["errors"][0]["message"].startswith("must be one of QUEUED, ")
    # A pack the plan does not include is still a pack: the tenant may have run it under another plan.
    starter = make_persona()
    assert starter.client.get("/v1/runs", {"pack_type": "diagnostic"}).json() == {"data": [], "next_cursor": None}


# --- cross-tenant: owner only, and indistinguishable from a run that does not exist ------------------------


@pytest.mark.parametrize(
    ("method", "suffix"), [("get", ""), ("post", "/cancel"), ("get", "/result")], ids=["get", "cancel", "result"]
)
def test_another_tenants_run_is_a_404_like_a_missing_one(personas: Personas, method: str, suffix: str) -> None:
    owner, other = personas.owner, personas.other
    run_id = accepted(owner.client, body("decision", max_cost_usd="0.0100"))["run_id"]
    before = run_row(run_id)
    answers = {
        "other tenant's run": getattr(other.client, method)(f"/v1/runs/{run_id}{suffix}"),
        "random uuid": getattr(other.client, method)(f"/v1/runs/{uuid.uuid4()}{suffix}"),
        "owner, random uuid": getattr(owner.client, method)(f"/v1/runs/{uuid.uuid4()}{suffix}"),
        "not a uuid": getattr(other.client, method)(f"/v1/runs/not-a-uuid{suffix}"),
        "uuid-ish": getattr(other.client, method)(f"/v1/runs/{run_id[:-1]}{suffix}"),
    }
    problems = {name: assert_problem(response, 404, "NOT_FOUND") for name, response in answers.items()}
    reference = without_request_members(problems["random uuid"])
    for name, problem in problems.items():
        assert without_request_members(problem) == reference, name
        assert run_id not in problem["detail"]
    for name in ("other tenant's run", "random uuid"):
        assert answers[name].headers.keys() - {"X-Request-ID", "X-Trace-Id"} == (
            answers["random uuid"].headers.keys() - {"X-Request-ID", "X-Trace-Id"}
        )
    after = run_row(run_id)
    assert (after.status, after.version, after.cancel_requested_at) == (before.status, before.version, None)
    assert balances(owner) == (10 * USD - 10_000, 10_000)


def test_other_tenants_see_nothing_of_the_owners_money(personas: Personas) -> None:
    owner, other = personas.owner, personas.other
    run_id = accepted(owner.client, body("decision", max_cost_usd="0.0100"))["run_id"]
    ledger = other.client.get("/v1/ledger").json()["data"]
    assert [item["run_id"] for item in ledger] == [None]  # its own TOPUP only
    today = datetime.now(tz=UTC).date().isoformat()
    assert other.client.get("/v1/usage", {"from": today, "to": today}).json()["days"] == []
    assert other.client.get("/v1/account").json()["tenant_id"] == other.tenant.pk
    assert run_id not in str(other.client.get("/v1/runs").content)


def test_a_new_tenant_sees_an_empty_account() -> None:
    fresh = make_persona(credit_micros=0)
    assert _ids(fresh.client.get("/v1/runs")) == []
    assert fresh.client.get("/v1/ledger").json() == {"data": [], "next_cursor": None}


# --- 401 and 405 on every /v1 endpoint ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/runs"),
        ("post", "/v1/runs"),
        ("get", "/v1/runs/{id}"),
        ("post", "/v1/runs/{id}/cancel"),
        ("get", "/v1/runs/{id}/result"),
        ("get", "/v1/account"),
        ("get", "/v1/ledger"),
        ("get", "/v1/usage"),
        ("get", "/v1/packs"),
    ],
)
def test_every_endpoint_needs_a_key(personas: Personas, method: str, path: str) -> None:
    run_id = accepted(personas.owner.client, body("decision", max_cost_usd="0.0100"))["run_id"]
    anonymous = type(personas.owner.client)()
    response = getattr(anonymous, method)(path.format(id=run_id))
    assert_problem(response, 401, "UNAUTHENTICATED")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert run_row(run_id).status == "QUEUED"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("put", "/v1/runs", {"GET", "POST"}),
        ("delete", "/v1/runs", {"GET", "POST"}),
        ("patch", "/v1/runs/{id}", {"GET"}),
        ("delete", "/v1/runs/{id}", {"GET"}),
        ("post", "/v1/runs/{id}", {"GET"}),
        ("get", "/v1/runs/{id}/cancel", {"POST"}),
        ("delete", "/v1/runs/{id}/cancel", {"POST"}),
        ("post", "/v1/runs/{id}/result", {"GET"}),
        ("post", "/v1/account", {"GET"}),
        ("put", "/v1/ledger", {"GET"}),
        ("post", "/v1/usage", {"GET"}),
        ("delete", "/v1/packs", {"GET"}),
    ],
)
def test_method_not_allowed_names_the_allowed_ones(
    personas: Personas, method: str, path: str, allowed: set[str]
) -> None:
    run_id = accepted(personas.owner.client, body("decision", max_cost_usd="0.0100"))["run_id"]
    response = getattr(personas.owner.client, method)(path.format(id=run_id))
    problem = assert_problem(response, 405, "METHOD_NOT_ALLOWED")
    offered = {name.strip() for name in response["Allow"].split(",")}
    assert allowed <= offered
    assert method.upper() not in offered
    assert method.upper() in problem["detail"]
    after = run_row(run_id)
    assert (after.status, after.version) == ("QUEUED", 0)
