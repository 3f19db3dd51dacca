import secrets
from typing import Any

from django.core.management.base import CommandParser

from billing.selectors import balances_get, plan_get
from billing.services import ledger_topup, tenant_onboard
from dpp.management.base import DppCommand
from dpp.models import Tenant
from dpp.money import format_usd
from dpp.services import api_key_issue

DEMO_CREDIT_MICROS = 25_000_000


class Command(DppCommand):
    help = "A demo tenant with credit and a fresh API key, for the quick start (safe to run again)."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--tenant", default="demo")
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    def run(self, **options: Any) -> None:
        tenant = Tenant.objects.filter(pk=options["tenant"]).first()
        if tenant is None:
            tenant = tenant_onboard(
                tenant_id=options["tenant"], name="Demo tenant", plan_code="starter", actor="cli:seed_demo"
            )
            ledger_topup(tenant=tenant, amount_micros=DEMO_CREDIT_MICROS, actor="cli:seed_demo", reason="demo credit")
        issued = api_key_issue(tenant=tenant, label="seed_demo", can_manage_keys=True)
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
