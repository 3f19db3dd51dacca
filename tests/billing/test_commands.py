"""The ops commands of SPEC §6 that open tenants, keys and credit: their --json shapes, refusals, exit status."""

from __future__ import annotations

import json
import re
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from billing.models import Account, LedgerTransaction
from billing.selectors import balances_get, plan_get
from billing.services import MAX_MANUAL_MICROS
from dpp.models import ApiKey, Tenant
from dpp.money import format_usd
from runs.submission import IDEMPOTENCY_KEY_RE
from tests.helpers.money import USD
from tests.helpers.personas import Persona, unique_tenant_id

pytestmark = pytest.mark.django_db


def _json(command: str, *args: str) -> dict[str, Any]:
    out = StringIO()
    call_command(command, *args, "--json", stdout=out)
    body: dict[str, Any] = json.loads(out.getvalue())
    return body


def _refused(command: str, *args: str) -> tuple[int, str]:
    """The command fails: its exit status (non-zero) and what it printed."""
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command(command, *args, stdout=out)
    assert raised.value.returncode != 0
    return raised.value.returncode, f"{out.getvalue()} {raised.value}"


def _account(api_key: str) -> Any:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    return client.get("/v1/account")


class TestCreateTenant:
    def test_json_has_exactly_the_spec_keys_and_the_key_works(self) -> None:
        tenant_id = unique_tenant_id()
        body = _json("create_tenant", tenant_id)
        assert set(body) == {"tenant_id", "api_key", "plan"}
        assert (body["tenant_id"], body["plan"]) == (tenant_id, "starter")
        assert body["api_key"].startswith("dpp_live_")
        assert set(Account.objects.filter(tenant_id=tenant_id).values_list("kind", flat=True)) == {"AVAILABLE", "HELD"}
        response = _account(body["api_key"])
        assert response.status_code == 200
        assert response.json() == {
            "tenant_id": tenant_id,
            "plan": "starter",
            "available_usd": "0.0000",
            "held_usd": "0.0000",
            "currency": "USD",
        }

    def test_plan_and_name(self) -> None:
        tenant_id = unique_tenant_id()
        body = _json("create_tenant", tenant_id, "--plan", "unlimited", "--name", "Acme Agents")
        assert body["plan"] == "unlimited"
        assert plan_get(tenant_id=tenant_id).code == "unlimited"
        assert Tenant.objects.get(pk=tenant_id).name == "Acme Agents"

    def test_an_unknown_plan_is_refused_listing_the_plans_as_set_plan_does(self) -> None:
        tenant_id = unique_tenant_id()
        _, text = _refused("create_tenant", tenant_id, "--plan", "gold")
        assert "no plan 'gold' (plans: starter, unlimited)" in text
        assert not Tenant.objects.filter(pk=tenant_id).exists()

    def test_text_output_shows_the_key_once(self) -> None:
        out = StringIO()
        call_command("create_tenant", unique_tenant_id(), stdout=out)
        (key,) = [word for word in out.getvalue().split() if word.startswith("dpp_live_")]
        assert _account(key).status_code == 200

    @pytest.mark.parametrize("tenant_id", ["ab", "Upper-Case", "has space", "x" * 65, "émile", "a/b"])
    def test_bad_tenant_id_is_refused(self, tenant_id: str) -> None:
        status, text = _refused("create_tenant", tenant_id)
        assert status == 1
        assert "3-64 characters" in text
        assert not Tenant.objects.filter(pk=tenant_id).exists()

    def test_existing_tenant_is_refused(self, owner: Persona) -> None:
        _, text = _refused("create_tenant", owner.tenant.pk)
        assert "already exists" in text
        assert ApiKey.objects.filter(tenant=owner.tenant).count() == 1

    def test_json_error_is_one_object(self) -> None:
        out = StringIO()
        with pytest.raises(CommandError):
            call_command("create_tenant", "NO", "--json", stdout=out)
        assert set(json.loads(out.getvalue())) == {"error"}


class TestKeys:
    def test_issue_api_key(self, owner: Persona) -> None:
        body = _json("issue_api_key", owner.tenant.pk, "--label", "ci")
        assert set(body) >= {"tenant_id", "api_key", "plan"}
        assert (body["tenant_id"], body["plan"]) == (owner.tenant.pk, "starter")
        assert body["api_key"] != owner.api_key
        assert ApiKey.objects.get(prefix=body["api_key"][:16], tenant=owner.tenant).label == "ci"
        assert _account(body["api_key"]).json()["tenant_id"] == owner.tenant.pk

    def test_issue_api_key_with_limits_below_a_parent(self, owner: Persona) -> None:
        parent = _json(
            "issue_api_key", owner.tenant.pk, "--can-manage-keys", "--spend-limit", "5.0000", "--window", "month"
        )
        args = ["--parent", parent["key_prefix"], "--spend-limit", "1.5000", "--window", "day"]
        args += ["--max-cost-per-run", "0.2500", "--packs", "decision", "--expires", "2099-01-01T00:00:00Z"]
        child = _json("issue_api_key", owner.tenant.pk, *args)
        assert child["parent_prefix"] == parent["key_prefix"]
        row = ApiKey.objects.get(prefix=child["key_prefix"])
        assert row.parent is not None
        assert row.expires_at is not None
        assert (row.parent.prefix, row.depth, row.can_manage_keys) == (parent["key_prefix"], 1, False)
        assert (row.spend_limit_micros, row.spend_window, row.max_cost_per_run_micros) == (1_500_000, "day", 250_000)
        assert (row.allowed_packs, row.expires_at.isoformat()) == (["decision"], "2099-01-01T00:00:00+00:00")
        assert ApiKey.objects.get(prefix=parent["key_prefix"]).can_manage_keys
        _, text = _refused(
            "issue_api_key",
            owner.tenant.pk,
            "--parent",
            parent["key_prefix"],
            "--spend-limit",
            "6.0000",
            "--window",
            "day",
        )
        assert "at most 5.0000" in text
        _, text = _refused("issue_api_key", owner.tenant.pk, "--packs", "diagnostic")
        assert "not in plan 'starter'" in text

    def test_the_key_of_create_tenant_may_manage_keys(self) -> None:
        body = _json("create_tenant", unique_tenant_id())
        assert ApiKey.objects.get(prefix=body["api_key"][:16]).can_manage_keys

    def test_issue_api_key_for_unknown_tenant(self) -> None:
        _, text = _refused("issue_api_key", "nobody-here")
        assert "no tenant" in text

    def test_revoked_key_gets_401(self, owner: Persona) -> None:
        assert _account(owner.api_key).status_code == 200
        body = _json("revoke_api_key", owner.api_key[:16])
        assert (body["tenant_id"], body["key_prefix"]) == (owner.tenant.pk, owner.api_key[:16])
        assert body["revoked_at"]
        response = _account(owner.api_key)
        assert response.status_code == 401
        assert response.json()["reason_code"] == "UNAUTHENTICATED"

    def test_revoking_twice_or_an_unknown_prefix_is_refused(self, owner: Persona) -> None:
        call_command("revoke_api_key", owner.api_key[:16], stdout=StringIO())
        _refused("revoke_api_key", owner.api_key[:16])
        _refused("revoke_api_key", "dpp_live_XXXXXXX")
        _refused("revoke_api_key", "short")


class TestTopup:
    def test_json_has_exactly_the_spec_keys(self, owner: Persona) -> None:
        body = _json("topup", owner.tenant.pk, "2.5", "--reason", "invoice 42", "--actor", "finance:ann")
        assert set(body) == {"tenant_id", "transaction_id", "amount_usd", "available_usd"}
        assert (body["tenant_id"], body["amount_usd"], body["available_usd"]) == (owner.tenant.pk, "2.5000", "12.5000")
        txn = LedgerTransaction.objects.get(pk=body["transaction_id"])
        assert (txn.kind, txn.reason, txn.actor) == ("TOPUP", "invoice 42", "finance:ann")
        assert balances_get(tenant_id=owner.tenant.pk).available_micros == 12 * USD + 500_000

    def test_without_actor_the_login_name_is_recorded(self, owner: Persona, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LOGNAME", "ann")  # getpass reads LOGNAME first, as a shell sets it
        body = _json("topup", owner.tenant.pk, "1", "--reason", "invoice 43")
        assert LedgerTransaction.objects.get(pk=body["transaction_id"]).actor == "cli:ann"
        _json("set_plan", owner.tenant.pk, "unlimited", "--reason", "contract 13")
        assert owner.tenant.plan_history.order_by("-started_at").values_list("actor", flat=True)[0] == "cli:ann"

    def test_an_empty_actor_is_refused(self, owner: Persona) -> None:
        with pytest.raises(CommandError):
            call_command("topup", owner.tenant.pk, "1", "--reason", "r", "--actor", "", stdout=StringIO())
        assert balances_get(tenant_id=owner.tenant.pk).available_micros == 10 * USD

    def test_reason_is_required(self, owner: Persona) -> None:
        with pytest.raises(CommandError, match="--reason"):
            call_command("topup", owner.tenant.pk, "1.0000", stdout=StringIO(), stderr=StringIO())
        for empty in ("", "  "):
            _, text = _refused("topup", owner.tenant.pk, "1.0000", "--reason", empty)
            assert "A reason is needed" in text
            assert "actor" not in text  # the command fills the actor in: it was "needs an actor and a reason"
        assert balances_get(tenant_id=owner.tenant.pk).available_micros == 10 * USD

    @pytest.mark.parametrize("amount", ["0", "0.0000", "-1", "1.00001", "abc", "1e3", "1,5", "", "١٠"])
    def test_bad_amounts_are_refused(self, owner: Persona, amount: str) -> None:
        before = LedgerTransaction.objects.count()
        status, _ = _refused("topup", owner.tenant.pk, amount, "--reason", "r")
        assert status == 1
        assert LedgerTransaction.objects.count() == before
        assert balances_get(tenant_id=owner.tenant.pk).available_micros == 10 * USD

    @pytest.mark.parametrize("amount", ["-5", "abc", "1,5", "1e3"])
    def test_a_malformed_amount_is_explained_in_words_as_in_the_admin(self, owner: Persona, amount: str) -> None:
        _, text = _refused("topup", owner.tenant.pk, amount, "--reason", "r")
        assert "Type the amount in USD with digits and up to 4 decimals" in text
        assert "no sign" in text
        assert "^" not in text  # it was "amount_usd must match ^\\d+(\\.\\d{1,4})?$"

    def test_too_many_decimals_are_explained_in_words(self, owner: Persona) -> None:
        assert (
            'At most 4 decimals, e.g. "25.1234".' in _refused("topup", owner.tenant.pk, "1.00001", "--reason", "r")[1]
        )

    def test_unknown_tenant(self) -> None:
        _, text = _refused("topup", "nobody-here", "1", "--reason", "r")
        assert "no tenant" in text

    @pytest.mark.parametrize("amount", ["1000000.0001", "999999999999.9999"])
    def test_more_than_the_admins_typo_guard_is_refused(self, owner: Persona, amount: str) -> None:
        before = LedgerTransaction.objects.count()
        out = StringIO()
        with pytest.raises(CommandError) as raised:
            call_command("topup", owner.tenant.pk, amount, "--reason", "big", "--json", stdout=out)
        assert raised.value.returncode == 1
        assert str(raised.value) == f"At most {format_usd(MAX_MANUAL_MICROS)} USD at a time."
        assert json.loads(out.getvalue()) == {"error": "At most 1000000.0000 USD at a time."}
        assert LedgerTransaction.objects.count() == before
        assert balances_get(tenant_id=owner.tenant.pk).available_micros == 10 * USD

    def test_the_typo_guard_itself_is_allowed(self, owner: Persona) -> None:
        body = _json("topup", owner.tenant.pk, "1000000", "--reason", "a large invoice")
        assert (body["amount_usd"], body["available_usd"]) == ("1000000.0000", "1000010.0000")
        assert balances_get(tenant_id=owner.tenant.pk).available_micros == MAX_MANUAL_MICROS + 10 * USD

    def test_a_balance_overflow_is_one_line_not_a_traceback(self, owner: Persona) -> None:
        near_max = (2**63 - 1) // 100 * 100  # the stored balance as large as bigint holds
        Account.objects.filter(tenant_id=owner.tenant.pk, kind="AVAILABLE").update(balance_micros=near_max)
        before = LedgerTransaction.objects.count()
        out = StringIO()
        with pytest.raises(CommandError) as raised:
            call_command("topup", owner.tenant.pk, "1", "--reason", "r", "--json", stdout=out)
        message = "the database refused the command (DataError): bigint out of range"
        assert (raised.value.returncode, str(raised.value)) == (1, message)
        assert json.loads(out.getvalue()) == {"error": message}
        assert LedgerTransaction.objects.count() == before
        assert balances_get(tenant_id=owner.tenant.pk).available_micros == near_max


class TestSeedDemo:
    def test_seed_demo_is_idempotent_and_its_key_authenticates(self) -> None:
        first = _json("seed_demo")
        second = _json("seed_demo")
        assert set(first) >= {"tenant_id", "api_key", "plan"}
        assert first["tenant_id"] == second["tenant_id"] == "demo"
        assert first["api_key"] != second["api_key"]
        keys = [re.search(r"Idempotency-Key: (\S+)'", body["curl"]) for body in (first, second)]
        assert all(key and IDEMPOTENCY_KEY_RE.fullmatch(key.group(1)) for key in keys)
        assert keys[0].group(1) != keys[1].group(1)  # type: ignore[union-attr]  # a rerun's curl submits a new run
        assert Tenant.objects.filter(pk="demo").count() == 1
        assert LedgerTransaction.objects.filter(tenant_id="demo", kind="TOPUP").count() == 1  # credit not doubled
        assert balances_get(tenant_id="demo").available_micros == 25 * USD
        response = _account(second["api_key"])
        assert response.status_code == 200
        assert (response.json()["tenant_id"], response.json()["available_usd"]) == ("demo", "25.0000")
        # The earlier key is revoked: two runs leave one active demo key, not two.
        assert _account(first["api_key"]).status_code == 401
        active = ApiKey.objects.filter(tenant_id="demo", revoked_at__isnull=True)
        assert list(active.values_list("prefix", flat=True)) == [second["api_key"][:16]]

    def test_a_key_issued_by_hand_for_the_demo_tenant_is_left_alone(self) -> None:
        _json("seed_demo")
        by_hand = _json("issue_api_key", "demo", "--label", "mine")
        _json("seed_demo")
        assert _account(by_hand["api_key"]).status_code == 200

    def test_the_printed_address_is_the_one_make_run_binds(self) -> None:
        procfile = (Path(settings.BASE_DIR) / "Procfile").read_text()
        web = next(line for line in procfile.splitlines() if line.startswith("web:"))
        bind = re.search(r"--bind (\S+)", web)
        assert bind is not None
        assert _json("seed_demo")["curl"].split()[4] == f"http://{bind.group(1)}/v1/runs"

    def test_text_output_prints_a_working_key(self) -> None:
        out = StringIO()
        call_command("seed_demo", stdout=out)
        keys = {word.strip("'") for word in out.getvalue().split() if word.strip("'").startswith("dpp_live_")}
        assert len(keys) == 1
        assert _account(keys.pop()).status_code == 200


class TestSetPlan:
    def test_moves_the_tenant_and_keeps_the_history(self, owner: Persona) -> None:
        body = _json("set_plan", owner.tenant.pk, "unlimited", "--reason", "contract 12", "--actor", "ops:kim")
        assert body == {"tenant_id": owner.tenant.pk, "plan": "unlimited", "previous_plan": "starter", "changed": True}
        assert plan_get(tenant_id=owner.tenant.pk).code == "unlimited"
        assert _account(owner.api_key).json()["plan"] == "unlimited"
        history = list(owner.tenant.plan_history.order_by("started_at").values_list("plan__code", "actor", "reason"))
        assert history == [("starter", "test", "onboarding"), ("unlimited", "ops:kim", "contract 12")]

    def test_the_same_plan_changes_nothing(self, owner: Persona) -> None:
        body = _json("set_plan", owner.tenant.pk, "starter", "--reason", "no-op")
        assert (body["changed"], body["plan"]) == (False, "starter")
        assert owner.tenant.plan_history.count() == 1

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["nobody-here", "unlimited", "--reason", "r"], "no tenant"),
            (["{owner}", "gold", "--reason", "r"], "no plan 'gold' (plans: starter, unlimited)"),
            (["{owner}", "unlimited", "--reason", "  "], "A reason is needed: say why"),
        ],
    )
    def test_refusals(self, owner: Persona, args: list[str], message: str) -> None:
        _, text = _refused("set_plan", *[a.replace("{owner}", owner.tenant.pk) for a in args])
        assert message in text
        assert plan_get(tenant_id=owner.tenant.pk).code == "starter"
