"""POST /v1/quotes (SPEC §9): what a submit of the body would cost and get, checked as the submit checks it, with
no run, no money moved and no idempotency key stored; a refusal is the submit's very problem; the reads budget."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time

from billing.models import KeySpend, LedgerTransaction
from runs.models import Run
from tests.helpers.api import accepted, assert_rate_headers, body, new_key, submit
from tests.helpers.inputs import DECISION_INPUTS, URL_INPUTS
from tests.helpers.money import USD, balances
from tests.helpers.personas import Persona, make_persona, make_plan, persona_on_plan
from tests.helpers.problems import assert_problem, without_request_members
from tests.runs.keys_support import Key, child_key, root_key

pytestmark = pytest.mark.django_db

QUOTE_MEMBERS = {
    "pack_type",
    "price_floor_usd",
    "price_ceiling_usd",
    "price_exact",
    "suggested_max_cost_usd",
    "minimum_fee_usd",
    "available_usd",
    "key_spend_remaining_usd",
    "accepted",
}


def quote(caller: Persona | Key, payload: Any, **headers: Any) -> Any:
    return caller.client.post("/v1/quotes", data=json.dumps(payload), content_type="application/json", **headers)


def _without_reservation(payload: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in payload.items() if name != "reservation"}


def _state(persona: Persona) -> tuple[int, int, tuple[int, int]]:
    """(runs, ledger transactions, balances) of the tenant."""
    runs = Run.objects.filter(tenant=persona.tenant).count()
    return runs, LedgerTransaction.objects.filter(tenant=persona.tenant).count(), balances(persona)


def test_a_decision_quote_is_exact(owner: Persona) -> None:
    response = quote(owner, _without_reservation(body("decision")))
    assert response.status_code == 200, response.content
    assert response.json() == {
        "pack_type": "decision",
        "price_floor_usd": "0.0056",  # 5_000 + 100 × 3 options × 2 criteria
        "price_ceiling_usd": "0.0056",
        "price_exact": True,
        "suggested_max_cost_usd": "0.0056",
        "minimum_fee_usd": "0.0050",  # of the suggested max cost
        "available_usd": "10.0000",
        "key_spend_remaining_usd": None,
        "accepted": True,
    }


def test_a_url_quote_is_not_exact_and_its_ceiling_is_the_price_of_max_bytes(owner: Persona) -> None:
    default = quote(owner, _without_reservation(body("url", URL_INPUTS))).json()
    assert default.keys() == QUOTE_MEMBERS
    assert (default["price_floor_usd"], default["price_ceiling_usd"]) == ("0.0021", "0.0123")  # 1 MiB: 103 blocks
    assert default["price_exact"] is False
    assert default["suggested_max_cost_usd"] == "0.0123"
    small = quote(owner, body("url", {**URL_INPUTS, "max_bytes": 30_000}, max_cost_usd="0.5000")).json()
    assert small["price_ceiling_usd"] == "0.0023"  # 3 blocks
    assert small["minimum_fee_usd"] == "0.0100"  # of the given reservation: 2 % of 0.5


def test_a_diagnostic_quote_suggests_its_cost_and_never_less_than_the_least_reservation(unlimited: Persona) -> None:
    asked = quote(unlimited, _without_reservation(body())).json()
    assert (asked["price_floor_usd"], asked["price_ceiling_usd"], asked["suggested_max_cost_usd"]) == (
        "0.0000",
        "0.0300",
        "0.0300",
    )
    free = quote(unlimited, {"pack_type": "diagnostic", "inputs": {}}).json()
    assert (free["price_ceiling_usd"], free["suggested_max_cost_usd"]) == ("0.0000", "0.0001")


def test_a_quote_moves_no_money_creates_no_run_and_stores_no_key(unlimited: Persona) -> None:
    before = _state(unlimited)
    key = new_key()
    for _ in range(3):
        assert quote(unlimited, body(), HTTP_IDEMPOTENCY_KEY=key).status_code == 200
    assert quote(unlimited, body(), HTTP_IDEMPOTENCY_KEY="not a key").status_code == 200  # ignored
    assert _state(unlimited) == before
    response = submit(unlimited.client, body(max_cost_usd="0.0600"), key=key)  # another payload than quoted
    assert response.status_code == 202, response.content
    assert "Idempotent-Replayed" not in response  # a new run: the quote stored nothing under the key
    assert _state(unlimited)[0] == 1


def _refusals() -> list[tuple[str, Persona, dict[str, Any], int, str]]:
    """(name, persona, body, status, reason) of every refusal a quote shares with the submit."""
    poor = make_persona(plan="starter", credit_micros=5_000)
    starter = make_persona(plan="starter")
    busy = persona_on_plan(make_plan("one-at-once", max_concurrent_runs=1))
    accepted(busy.client, body())
    return [
        ("funds", poor, body("decision", max_cost_usd="0.0100"), 402, "INSUFFICIENT_FUNDS"),
        ("funds-suggested", poor, _without_reservation(body("decision")), 402, "INSUFFICIENT_FUNDS"),
        ("pack", starter, body(), 403, "PACK_NOT_ALLOWED"),
        ("plan", starter, body("decision", max_cost_usd="1.5000"), 422, "MAX_COST_OVER_PLAN_LIMIT"),
        ("floor", starter, body("decision", max_cost_usd="0.0055"), 422, "MAX_COST_TOO_LOW"),
        ("inputs", starter, body("decision", {**DECISION_INPUTS, "options": ["A"]}), 422, "INVALID_INPUTS"),
        ("pack type", starter, body("nope", {}), 422, "UNKNOWN_PACK_TYPE"),
        ("money", starter, body("decision", max_cost_usd=0.05), 422, "INVALID_MONEY"),
        ("scale", starter, body("decision", max_cost_usd="0.00001"), 422, "INVALID_MONEY_SCALE"),
        ("shape", starter, {**body("decision"), "extra": 1}, 422, "VALIDATION_ERROR"),
        ("busy", busy, body(), 429, "CONCURRENCY_LIMITED"),
    ]


def test_a_refused_quote_is_the_submits_very_problem() -> None:
    for name, persona, payload, status, reason in _refusals():
        before = _state(persona)
        quoted = quote(persona, payload)
        problem = assert_problem(quoted, status, reason)
        if "reservation" in payload:
            submitted = submit(persona.client, payload)
            assert without_request_members(assert_problem(submitted, status, reason)) == without_request_members(
                problem
            ), name
            if status == 429:
                assert quoted["Retry-After"] == submitted["Retry-After"], name
        assert _state(persona) == before, name
    poor_problem = json.loads(quote(make_persona(credit_micros=0), _without_reservation(body("decision"))).content)
    assert (poor_problem["available_usd"], poor_problem["required_usd"]) == ("0.0000", "0.0056")


def test_an_empty_quote_body_is_malformed_json(owner: Persona) -> None:
    response = owner.client.post("/v1/quotes", data="", content_type="application/json")
    assert_problem(response, 400, "MALFORMED_JSON")


def test_quotes_count_against_reads_never_submits() -> None:
    persona = persona_on_plan(make_plan("one-write", submits_per_min=1, reads_per_min=5))
    accepted(persona.client, body())
    assert_problem(submit(persona.client, body()), 429, "RATE_LIMITED")  # the submits are spent …
    response = quote(persona, body())
    assert response.status_code == 200, response.content  # … and a quote still answers, on the reads budget
    assert assert_rate_headers(response, "reads", 5)[0] == 4
    for _ in range(4):
        assert quote(persona, body()).status_code == 200
    assert_problem(quote(persona, body()), 429, "RATE_LIMITED")
    assert balances(persona)[1] == 50_000  # the one run's reservation, nothing more


# --- the API key's limits (SPEC §8), the submit's own -----------------------------------------------------------


@pytest.fixture
def root() -> Key:
    return root_key(make_persona(plan="unlimited", credit_micros=100 * USD))


def _remaining(key: Key, max_cost_usd: str = "0.0100") -> Any:
    response = quote(key, body(max_cost_usd=max_cost_usd))
    assert response.status_code == 200, response.content
    return json.loads(response.content)["key_spend_remaining_usd"]


def _spend(key: Key, max_cost_usd: str) -> None:
    assert submit(key.client, body(max_cost_usd=max_cost_usd)).status_code == 202


def test_the_quote_reports_the_least_room_along_the_keys_chain(root: Key) -> None:
    parent = child_key(root, can_manage_keys=True, spend_limit_micros=100_000, spend_window="total")
    key = child_key(parent, spend_limit_micros=100_000, spend_window="day")  # as much as its parent's, per day
    unlimited_child = child_key(parent)  # omits a spend limit: its parent's binds it
    sibling = child_key(parent)
    assert _remaining(root) is None  # no key of its chain has a spend limit
    assert _remaining(key) == _remaining(unlimited_child) == "0.1000"
    _spend(sibling, "0.0800")
    assert _remaining(key) == "0.0200"  # the parent's room, not the key's own 0.1000: the tighter one refuses
    assert _remaining(unlimited_child) == "0.0200"
    tight = child_key(parent, spend_limit_micros=50_000, spend_window="month")
    _spend(tight, "0.0100")
    assert _remaining(tight) == "0.0100"  # its own 0.0400 … but the parent now has 0.0100 left
    assert _remaining(key) == "0.0100"


def test_the_quote_reports_the_keys_own_room_when_it_is_the_tightest(root: Key) -> None:
    parent = child_key(root, can_manage_keys=True, spend_limit_micros=USD, spend_window="month")
    key = child_key(parent, spend_limit_micros=100_000, spend_window="day")
    with freeze_time("2026-12-06 15:00:00"):
        _spend(key, "0.0300")
        assert _remaining(key) == "0.0700"
    with freeze_time("2026-12-07 00:00:01"):  # a new UTC day: the key's window is empty, the parent's month is not
        assert _remaining(key) == "0.1000"
        assert _remaining(parent) == "0.9700"


def _key_refusals(root: Key) -> list[tuple[str, Key, dict[str, Any], int, str]]:
    """(name, key, body, status, reason) of every refusal by the key's limits that a quote shares with the submit."""
    parent = child_key(root, can_manage_keys=True, spend_limit_micros=100_000, spend_window="total")
    key = child_key(parent, spend_limit_micros=100_000, spend_window="day")
    _spend(child_key(parent), "0.0800")  # a sibling takes most of the parent's room
    own = child_key(root, spend_limit_micros=50_000, spend_window="month")
    _spend(own, "0.0400")
    capped = child_key(root, max_cost_per_run_micros=40_000)
    decision_only = child_key(root, allowed_packs=("decision",))
    return [
        ("own window", own, body(max_cost_usd="0.0200"), 402, "KEY_SPEND_LIMIT"),
        ("ancestor", key, body(max_cost_usd="0.0500"), 402, "KEY_SPEND_LIMIT"),
        ("over the limit itself", key, body(max_cost_usd="0.2000"), 402, "KEY_SPEND_LIMIT"),
        ("suggested", own, {"pack_type": "diagnostic", "inputs": {"cost_usd": "0.0200"}}, 402, "KEY_SPEND_LIMIT"),
        ("max cost", capped, body(max_cost_usd="0.0500"), 422, "MAX_COST_OVER_KEY_LIMIT"),
        ("pack", decision_only, body(), 403, "PACK_NOT_ALLOWED"),
    ]


def test_a_quote_refused_by_the_keys_limits_is_the_submits_very_problem(root: Key) -> None:
    problems: dict[str, dict[str, Any]] = {}
    with freeze_time("2026-12-06 15:00:00"):  # one UTC day and month: the same windows for quote and submit
        refusals = _key_refusals(root)
        for name, key, payload, status, reason in refusals:
            problems[name] = assert_problem(quote(key, payload), status, reason)
            submitted = submit(key.client, {"reservation": {"max_cost_usd": "0.0200"}, **payload})
            assert without_request_members(assert_problem(submitted, status, reason)) == without_request_members(
                problems[name]
            ), name
    keys = {name: key for name, key, _, _, _ in refusals}
    own, ancestor = problems["own window"], problems["ancestor"]
    assert {name: own[name] for name in ("limit_usd", "spent_usd", "required_usd", "window", "resets_at")} == {
        "limit_usd": "0.0500",
        "spent_usd": "0.0400",
        "required_usd": "0.0200",
        "window": "month",
        "resets_at": "2027-01-01T00:00:00Z",
    }
    assert own["key_prefix"] == keys["own window"].prefix
    parent = keys["ancestor"].row.parent
    assert parent is not None
    assert (ancestor["key_prefix"], ancestor["window"], ancestor["resets_at"]) == (parent.prefix, "total", None)
    assert (ancestor["limit_usd"], ancestor["spent_usd"], ancestor["required_usd"]) == ("0.1000", "0.0800", "0.0500")
    assert problems["over the limit itself"]["key_prefix"] == keys["ancestor"].prefix  # the nearest key first
    assert problems["suggested"]["required_usd"] == "0.0200"  # no reservation: the suggested one is checked


def test_an_expired_or_revoked_key_gets_the_same_401_from_a_quote(root: Key) -> None:
    now = datetime.now(tz=UTC)
    expiring = child_key(root, expires_at=now + timedelta(hours=1))
    revoked = child_key(root)
    assert root.client.post(f"/v1/keys/{revoked.prefix}/revoke").status_code == 200
    assert_problem(quote(revoked, body()), 401, "UNAUTHENTICATED")
    assert quote(expiring, body()).status_code == 200
    with freeze_time(now + timedelta(hours=1, seconds=1)):
        assert_problem(quote(expiring, body()), 401, "UNAUTHENTICATED")


def _counters() -> list[tuple[int, str, str, int]]:
    rows = KeySpend.objects.order_by("pk")
    return [(row.api_key_id, row.window_kind, f"{row.window_start:%Y-%m-%d}", row.spent_micros) for row in rows]


def test_a_quote_moves_no_counter_and_creates_no_row(root: Key) -> None:
    parent = child_key(root, can_manage_keys=True, spend_limit_micros=100_000, spend_window="total")
    counted = child_key(parent, spend_limit_micros=100_000, spend_window="day")
    fresh = child_key(root, spend_limit_micros=100_000, spend_window="month")  # no counter row yet
    _spend(counted, "0.0300")
    persona = Persona(tenant=root.row.tenant, api_key=root.secret, client=root.client)
    before, state = _counters(), _state(persona)
    assert len(before) == 2  # the key's day and its parent's total
    for key in (counted, fresh):
        for max_cost in ("0.0100", "0.0700", "0.5000"):  # accepted, then refused by the parent, by the limit itself
            quote(key, body(max_cost_usd=max_cost))
        quote(key, {"pack_type": "diagnostic", "inputs": {}})
    assert _counters() == before
    assert not KeySpend.objects.filter(api_key__prefix=fresh.prefix).exists()
    assert _state(persona) == state
