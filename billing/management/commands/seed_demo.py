import secrets
from typing import Any

from django.db import transaction

from billing.selectors import balances_get, plan_get
from billing.services import ledger_topup, tenant_onboard
from dpp.management.base import Arg, DppCommand
from dpp.models import ApiKey, Tenant
from dpp.money import format_usd
from dpp.services import IssuedKey, api_key_issue, api_key_revoke_by_id

DEMO_CREDIT_MICROS = 25_000_000
DEMO_KEY_LABEL = "seed_demo"
# The address `make run` serves the API on: the Procfile's `web` binds it (tests/billing/test_commands.py checks
# that the two agree).
DEMO_BASE_URL = "http://127.0.0.1:8000"


@transaction.atomic
def _fresh_demo_key(tenant: Tenant) -> IssuedKey:
    """A new demo key, the earlier ones revoked: a key is never stored, so it cannot be shown again, and every
    `make run` would otherwise leave one more active key behind."""
    for earlier in ApiKey.objects.filter(tenant=tenant, label=DEMO_KEY_LABEL, revoked_at__isnull=True):
        api_key_revoke_by_id(api_key=earlier, actor="cli:seed_demo")
    return api_key_issue(tenant=tenant, label=DEMO_KEY_LABEL, can_manage_keys=True)


class Command(DppCommand):
    """A demo tenant with credit and a fresh API key, for the quick start (safe to run again: the previous demo
    key is revoked)."""

    arguments = (
        Arg("--tenant", default="demo"),
        Arg("--base-url", default=DEMO_BASE_URL, help=f"where the API answers (default {DEMO_BASE_URL})"),
    )

    def run(self, **options: Any) -> None:
        tenant = Tenant.objects.filter(pk=options["tenant"]).first()
        if tenant is None:
            tenant = tenant_onboard(
                tenant_id=options["tenant"], name="Demo tenant", plan_code="starter", actor="cli:seed_demo"
            )
            ledger_topup(tenant=tenant, amount_micros=DEMO_CREDIT_MICROS, actor="cli:seed_demo", reason="demo credit")
        issued = _fresh_demo_key(tenant)
        available = format_usd(balances_get(tenant_id=tenant.pk).available_micros)
        plan = plan_get(tenant_id=tenant.pk).code
        base = options["base_url"]
        # A new key each time: after a restart of `make run` the printed line submits a new run, where a fixed key
        # would answer the earlier run's receipt (Idempotent-Replayed: true).
        curl = (
            f"curl -s -X POST {base}/v1/runs -H 'Authorization: Bearer {issued.secret}' "
            f"-H 'Content-Type: application/json' -H 'Idempotency-Key: demo-{secrets.token_hex(6)}' "
            '-d \'{"pack_type":"decision","inputs":{"question":"Which laptop?","options":["A","B"],'
            '"criteria":[{"name":"price","weight":2,"direction":"cost"},{"name":"speed","weight":1,"direction":"benefit"}],'
            '"scores":{"A":{"price":900,"speed":7},"B":{"price":1200,"speed":9}}},'
            '"reservation":{"max_cost_usd":"0.0500"}}\''
        )
        self.emit(
            {
                "tenant_id": tenant.pk,
                "api_key": issued.secret,
                "plan": plan,
                "available_usd": available,
                "curl": curl,
            },
            f"Demo tenant: {tenant.pk} (available {available} USD)\nAPI key: {issued.secret}\nTry:\n  {curl}\n"
            f"Then poll: curl -s {base}/v1/runs/<run_id> -H 'Authorization: Bearer {issued.secret}'",
        )
