from typing import Any

from billing.models import TenantPlan
from billing.selectors import plan_get
from billing.services import plan_assign
from dpp.http.errors import ApplicationError
from dpp.management.base import Arg, TenantCommand, actor, actor_option
from dpp.models import Tenant


class Command(TenantCommand):
    """Move a tenant to another plan (SPEC §4.2); the previous one is closed and kept in its history."""

    arguments = (
        Arg("plan", help="a plan code, e.g. starter or unlimited"),
        Arg("--reason", required=True, help="recorded in the plan history (ticket, contract)"),
        actor_option(TenantPlan, "in the history"),
    )

    def run_for(self, tenant: Tenant, **options: Any) -> None:
        previous = plan_get(tenant_id=tenant.pk).code
        if previous == options["plan"]:
            payload = {"tenant_id": tenant.pk, "plan": previous, "previous_plan": previous, "changed": False}
            self.emit(payload, f"{tenant.pk} is already on plan {previous}; nothing changed")
            return
        try:
            plan_assign(
                tenant=tenant,
                plan_code=options["plan"],
                actor=actor(options["actor"]),
                reason=options["reason"],
            )
        except ApplicationError as exc:
            self.fail(exc.detail)
        self.emit(
            {"tenant_id": tenant.pk, "plan": options["plan"], "previous_plan": previous, "changed": True},
            f"{tenant.pk} moved from plan {previous} to {options['plan']}",
        )
