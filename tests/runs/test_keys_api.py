"""Agent keys (SPEC §8): the /v1/keys API, its rules, the submit's key limits, run visibility, revocation and
expiry, through the real HTTP stack on PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time

from billing.models import KeySpend
from dpp.models import ApiKey
from runs.audit import full_audit
from tests.helpers.api import body, submit
from tests.helpers.money import USD
from tests.helpers.personas import make_persona
from tests.helpers.problems import assert_problem, field_errors
from tests.runs.keys_support import Key, child_key, patch_key, post_key, root_key

pytestmark = pytest.mark.django_db

KEY_OBJECT = {
    "key_prefix",
    "label",
    "parent_prefix",
    "can_manage_keys",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
    "limits",
    "spend",
}


@pytest.fixture
def root() -> Key:
    return root_key(make_persona(plan="unlimited", credit_micros=100 * USD))


def _submit(key: Key, max_cost_usd: str = "0.0500", **options: Any) -> Any:
    return submit(key.client, body(max_cost_usd=max_cost_usd, **options))


# --- the API and its rules ------------------------------------------------------------------------------------


def test_a_managing_key_creates_a_key_below_it_shown_once(root: Key) -> None:
    response = post_key(
        root,
        {"label": "agent-7", "limits": {"spend_limit_usd": "5.0000", "spend_window": "day"}, "can_manage_keys": False},
    )
    assert response.status_code == 201, response.content
    created = json.loads(response.content)
    assert created.keys() == KEY_OBJECT | {"api_key"}
    assert created["parent_prefix"] == root.prefix
    assert created["key_prefix"] == created["api_key"][:16]
    assert created["limits"] == {
        "spend_limit_usd": "5.0000",
        "spend_window": "day",
        "max_cost_per_run_usd": None,
        "allowed_packs": None,
    }
    assert created["spend"]["window"] == "day"
    assert (created["spend"]["spent_usd"], created["spend"]["remaining_usd"]) == ("0.0000", "5.0000")
    assert created["spend"]["window_start"].endswith("T00:00:00Z")
    # The key works, and the GET of it never shows the secret again.
    shown = json.loads(root.client.get(f"/v1/keys/{created['key_prefix']}").content)
    assert "api_key" not in shown
    assert shown == {name: value for name, value in created.items() if name != "api_key"}
    child = Key(secret=created["api_key"], prefix=created["key_prefix"], client=root.client.__class__())
    child.client.credentials(HTTP_AUTHORIZATION=f"Bearer {child.secret}")
    assert child.client.get("/v1/account").status_code == 200


def test_spend_is_null_without_any_limit_and_the_nearest_limited_ancestors_otherwise(root: Key) -> None:
    free = json.loads(post_key(root, {"label": "free"}).content)
    assert free["spend"] is None
    assert free["limits"] == dict.fromkeys(("spend_limit_usd", "spend_window", "max_cost_per_run_usd", "allowed_packs"))
    parent = child_key(root, can_manage_keys=True, spend_limit_micros=2 * USD, spend_window="month")
    grandchild = json.loads(post_key(parent, {"label": "inherits"}).content)
    assert grandchild["limits"]["spend_limit_usd"] is None
    assert grandchild["spend"]["window"] == "month"  # the parent's window
    assert grandchild["spend"]["remaining_usd"] == "2.0000"
    assert grandchild["spend"]["window_start"].endswith("-01T00:00:00Z")


def test_every_write_needs_a_key_that_may_manage_keys(root: Key) -> None:
    plain = child_key(root)
    target = child_key(root).prefix
    assert_problem(post_key(plain, {"label": "x"}), 403, "KEY_CANNOT_MANAGE_KEYS")
    assert_problem(patch_key(plain, plain.prefix, {"label": "y"}), 403, "KEY_CANNOT_MANAGE_KEYS")
    assert_problem(plain.client.post(f"/v1/keys/{plain.prefix}/revoke"), 403, "KEY_CANNOT_MANAGE_KEYS")
    assert plain.client.get(f"/v1/keys/{plain.prefix}").status_code == 200  # reading itself is no write
    assert_problem(plain.client.get(f"/v1/keys/{target}"), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        ({"spend_limit_usd": "10.0001", "spend_window": "day"}, "limits.spend_limit_usd"),
        ({"spend_limit_usd": "1.0000", "spend_window": "month"}, "limits.spend_limit_usd"),  # a longer window
        ({"max_cost_per_run_usd": "0.5001"}, "limits.max_cost_per_run_usd"),
        ({"allowed_packs": ["decision", "url"]}, "limits.allowed_packs"),
    ],
)
def test_a_child_may_not_exceed_its_parent(root: Key, limits: dict[str, Any], field: str) -> None:
    parent = child_key(
        root,
        can_manage_keys=True,
        spend_limit_micros=10 * USD,
        spend_window="day",
        max_cost_per_run_micros=500_000,
        allowed_packs=("decision",),
    )
    problem = assert_problem(post_key(parent, {"label": "greedy", "limits": limits}), 422, "KEY_LIMIT_OVER_PARENT")
    assert field_errors(problem) == [field]
    # Within every limit: accepted.
    ok = {"spend_limit_usd": "10.0000", "spend_window": "day", "max_cost_per_run_usd": "0.5000"}
    assert post_key(parent, {"label": "fine", "limits": {**ok, "allowed_packs": ["decision"]}}).status_code == 201


def test_a_child_expires_no_later_than_its_parent(root: Key) -> None:
    soon = datetime.now(tz=UTC) + timedelta(days=1)
    parent = child_key(root, can_manage_keys=True, expires_at=soon)
    later = (soon + timedelta(seconds=1)).isoformat()
    problem = assert_problem(post_key(parent, {"label": "x", "expires_at": later}), 422, "KEY_LIMIT_OVER_PARENT")
    assert field_errors(problem) == ["expires_at"]
    assert post_key(parent, {"label": "x", "expires_at": soon.isoformat()}).status_code == 201


def test_at_most_three_levels_below_the_first_key(root: Key) -> None:
    level1 = child_key(root, can_manage_keys=True)
    level2 = child_key(level1, can_manage_keys=True)
    level3_body = json.loads(post_key(level2, {"label": "level 3", "can_manage_keys": True}).content)
    level3 = child_key(level2, can_manage_keys=True)
    assert level3_body["parent_prefix"] == level2.prefix
    problem = assert_problem(post_key(level3, {"label": "level 4"}), 422, "VALIDATION_ERROR")
    assert "at most 3 levels below the tenant's first key" in problem["detail"]
    assert field_errors(problem) == ["parent_prefix"]


def test_a_key_sees_only_itself_and_the_keys_below_it(root: Key) -> None:
    a = child_key(root, can_manage_keys=True)
    b = child_key(root, can_manage_keys=True)
    a1 = child_key(a)
    stranger = root_key(make_persona())
    listed = {item["key_prefix"] for item in json.loads(a.client.get("/v1/keys").content)["data"]}
    assert listed == {a.prefix, a1.prefix}
    everything = {item["key_prefix"] for item in json.loads(root.client.get("/v1/keys").content)["data"]}
    assert everything == {root.prefix, a.prefix, b.prefix, a1.prefix}
    for other in (b.prefix, root.prefix, stranger.prefix, "dpp_live_nothing"):
        assert_problem(a.client.get(f"/v1/keys/{other}"), 404, "NOT_FOUND")
        assert_problem(patch_key(a, other, {"label": "mine now"}), 404, "NOT_FOUND")
        assert_problem(a.client.post(f"/v1/keys/{other}/revoke"), 404, "NOT_FOUND")
    assert ApiKey.objects.get(prefix=b.prefix).revoked_at is None


def test_the_key_list_is_cursor_paged(root: Key) -> None:
    made = {child_key(root).prefix for _ in range(4)} | {root.prefix}
    seen: list[str] = []
    cursor = ""
    for _ in range(5):
        page = json.loads(root.client.get(f"/v1/keys?limit=2&cursor={cursor}").content)
        seen += [item["key_prefix"] for item in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made)
    assert len(seen) == 5


def test_revoking_a_key_revokes_everything_below_it_at_once(root: Key) -> None:
    mid = child_key(root, can_manage_keys=True)
    low = child_key(mid, can_manage_keys=True)
    lowest = child_key(low)
    sibling = child_key(root)
    for key in (mid, low, lowest, sibling):
        assert key.client.get("/v1/account").status_code == 200
    response = root.client.post(f"/v1/keys/{mid.prefix}/revoke")
    assert response.status_code == 200
    assert json.loads(response.content)["revoked_at"] is not None
    for key in (mid, low, lowest):
        assert_problem(key.client.get("/v1/account"), 401, "UNAUTHENTICATED")
    assert ApiKey.objects.filter(prefix__in=[mid.prefix, low.prefix, lowest.prefix], revoked_at=None).count() == 0
    assert sibling.client.get("/v1/account").status_code == 200
    assert root.client.get("/v1/account").status_code == 200
    assert root.client.post(f"/v1/keys/{mid.prefix}/revoke").status_code == 200  # again: the same answer


def test_a_revoked_ancestor_refuses_its_keys_even_if_their_rows_were_not_revoked(root: Key) -> None:
    mid = child_key(root)
    ApiKey.objects.filter(prefix=root.prefix).update(revoked_at=datetime.now(tz=UTC))  # the root row only
    assert_problem(mid.client.get("/v1/account"), 401, "UNAUTHENTICATED")


def test_an_expired_key_or_one_below_an_expired_key_is_refused(root: Key) -> None:
    now = datetime.now(tz=UTC)
    expiring = child_key(root, can_manage_keys=True, expires_at=now + timedelta(hours=1))
    below = child_key(expiring)
    assert below.client.get("/v1/account").status_code == 200
    with freeze_time(now + timedelta(hours=1, seconds=1)):
        assert_problem(expiring.client.get("/v1/account"), 401, "UNAUTHENTICATED")
        assert_problem(below.client.get("/v1/account"), 401, "UNAUTHENTICATED")
        assert root.client.get("/v1/account").status_code == 200


# --- the submit's key limits ------------------------------------------------------------------------------------


def test_max_cost_over_the_key_limit_is_422_with_the_tightest_along_the_path(root: Key) -> None:
    parent = child_key(root, can_manage_keys=True, max_cost_per_run_micros=40_000)
    key = child_key(parent)  # omits it: the parent's applies
    problem = assert_problem(_submit(key, "0.0500"), 422, "MAX_COST_OVER_KEY_LIMIT")
    assert problem["errors"] == [{"field": "reservation.max_cost_usd", "message": "at most 0.0400"}]
    assert _submit(key, "0.0400").status_code == 202


def test_a_pack_the_key_does_not_allow_is_403(root: Key) -> None:
    key = child_key(root, allowed_packs=("decision",))
    assert_problem(_submit(key), 403, "PACK_NOT_ALLOWED")
    assert submit(key.client, body("decision")).status_code == 202


def test_the_spend_limit_refusal_names_the_submitting_key_first(root: Key) -> None:
    parent = child_key(root, can_manage_keys=True, spend_limit_micros=1 * USD, spend_window="total")
    key = child_key(parent, spend_limit_micros=100_000, spend_window="day")
    with freeze_time("2026-12-06 15:00:00"):  # both in one UTC day
        assert _submit(key, "0.0600").status_code == 202
        problem = assert_problem(_submit(key, "0.0500"), 402, "KEY_SPEND_LIMIT")
    assert {name: problem[name] for name in ("limit_usd", "spent_usd", "required_usd", "window", "key_prefix")} == {
        "limit_usd": "0.1000",
        "spent_usd": "0.0600",
        "required_usd": "0.0500",
        "window": "day",
        "key_prefix": key.prefix,
    }
    assert problem["resets_at"] == "2026-12-07T00:00:00Z"


def test_the_spend_limit_refusal_names_the_ancestor_when_the_key_has_room(root: Key) -> None:
    parent = child_key(root, can_manage_keys=True, spend_limit_micros=100_000, spend_window="total")
    key = child_key(parent, spend_limit_micros=100_000, spend_window="day")
    sibling = child_key(parent)
    assert _submit(sibling, "0.0800").status_code == 202
    problem = assert_problem(_submit(key, "0.0500"), 402, "KEY_SPEND_LIMIT")
    assert (problem["key_prefix"], problem["window"], problem["resets_at"]) == (parent.prefix, "total", None)
    assert (problem["limit_usd"], problem["spent_usd"], problem["required_usd"]) == ("0.1000", "0.0800", "0.0500")
    # A reservation over the limit itself is refused the same way, the nearest key first.
    over = assert_problem(_submit(key, "0.2000"), 402, "KEY_SPEND_LIMIT")
    assert over["key_prefix"] == key.prefix
    assert KeySpend.objects.get(api_key__prefix=parent.prefix).spent_micros == 80_000  # refusals counted nothing


def test_lowering_a_limit_below_the_spend_is_allowed_and_refuses_new_submits(root: Key) -> None:
    key = child_key(root, spend_limit_micros=USD, spend_window="month")
    assert _submit(key, "0.3000").status_code == 202
    response = patch_key(root, key.prefix, {"limits": {"spend_limit_usd": "0.1000"}, "label": "tight"})
    assert response.status_code == 200, response.content
    changed = json.loads(response.content)
    assert (changed["label"], changed["limits"]["spend_limit_usd"], changed["limits"]["spend_window"]) == (
        "tight",
        "0.1000",
        "month",
    )
    assert (changed["spend"]["spent_usd"], changed["spend"]["remaining_usd"]) == ("0.3000", "0.0000")
    assert_problem(_submit(key, "0.0100"), 402, "KEY_SPEND_LIMIT")


def test_a_limit_given_later_counts_the_runs_already_in_its_window(root: Key) -> None:
    key = child_key(root)
    assert _submit(key, "0.0700").status_code == 202
    response = patch_key(root, key.prefix, {"limits": {"spend_limit_usd": "0.1000", "spend_window": "day"}})
    assert json.loads(response.content)["spend"]["spent_usd"] == "0.0700"
    assert_problem(_submit(key, "0.0400"), 402, "KEY_SPEND_LIMIT")
    assert _submit(key, "0.0300").status_code == 202
    assert full_audit().ok


# --- runs follow the tree ---------------------------------------------------------------------------------------


def _run_id(key: Key) -> str:
    response = _submit(key)
    assert response.status_code == 202
    return str(json.loads(response.content)["run_id"])


def test_a_key_with_a_parent_sees_only_the_runs_of_its_subtree(root: Key) -> None:
    a = child_key(root, can_manage_keys=True)
    b = child_key(root)
    a1 = child_key(a)
    runs = {name: _run_id(key) for name, key in (("root", root), ("a", a), ("b", b), ("a1", a1))}
    stranger = root_key(make_persona(plan="unlimited"))

    def listed(key: Key) -> set[str]:
        return {item["run_id"] for item in json.loads(key.client.get("/v1/runs").content)["data"]}

    assert listed(root) == set(runs.values())  # no parent: the whole tenant
    assert listed(a) == {runs["a"], runs["a1"]}
    assert listed(a1) == {runs["a1"]}
    assert listed(stranger) == set()
    for key, hidden in ((a, runs["b"]), (a, runs["root"]), (a1, runs["a"]), (b, runs["a1"]), (stranger, runs["a"])):
        assert_problem(key.client.get(f"/v1/runs/{hidden}"), 404, "NOT_FOUND")
        assert_problem(key.client.get(f"/v1/runs/{hidden}/result"), 404, "NOT_FOUND")
        assert_problem(key.client.post(f"/v1/runs/{hidden}/cancel"), 404, "NOT_FOUND")
    assert a.client.get(f"/v1/runs/{runs['a1']}").status_code == 200
    assert a.client.post(f"/v1/runs/{runs['a1']}/cancel").status_code == 200
    assert root.client.get(f"/v1/runs/{runs['b']}").status_code == 200
    # Money reads stay tenant-wide.
    assert json.loads(a1.client.get("/v1/account").content) == json.loads(root.client.get("/v1/account").content)


# --- the audit and the rebuild -------------------------------------------------------------------------------


def test_the_audit_catches_a_tampered_counter_and_the_rebuild_repairs_it(root: Key) -> None:
    from django.core.management import call_command

    parent = child_key(root, can_manage_keys=True, spend_limit_micros=USD, spend_window="total")
    key = child_key(parent, spend_limit_micros=USD, spend_window="day")
    for _ in range(3):
        assert _submit(key, "0.0500").status_code == 202
    assert full_audit().ok
    KeySpend.objects.filter(api_key__prefix=parent.prefix).update(spent_micros=100_000)
    report = full_audit()
    assert report.violation_counts == {"key_spend_equals_runs": 1}
    (violation,) = report.violations
    assert parent.prefix in violation.detail
    assert "0.1000 USD" in violation.detail
    assert "0.1500 USD" in violation.detail
    call_command("rebuild_key_spend", "--json")
    assert full_audit().ok
    assert KeySpend.objects.get(api_key__prefix=parent.prefix).spent_micros == 150_000
