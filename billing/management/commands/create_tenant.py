from typing import Any

from billing.services import tenant_onboard
from dpp.management.base import Arg, DppCommand, fits
from dpp.models import Tenant
from dpp.services import api_key_issue


class Command(DppCommand):
    """Create a tenant with its ledger accounts and plan; prints a new API key once."""

    arguments = (
        Arg("tenant_id", help="3-64 characters of [a-z0-9_-]"),
        Arg("--name", default="", type=fits(Tenant, "name")),
        Arg("--plan", default="starter"),
    )

    def run(self, **options: Any) -> None:
        tenant = tenant_onboard(
            tenant_id=options["tenant_id"],
            name=options["name"],
            plan_code=options["plan"],
            actor="cli:create_tenant",
        )
        issued = api_key_issue(tenant=tenant, label="created with the tenant", can_manage_keys=True)
        self.emit(
            {"tenant_id": tenant.pk, "api_key": issued.secret, "plan": options["plan"]},
            f"tenant {tenant.pk} created on plan {options['plan']}\nAPI key (shown once): {issued.secret}",
        )
