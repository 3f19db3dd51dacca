from typing import Any

from django.core.management.base import CommandParser

from billing.models import TenantPlan
from billing.selectors import plan_get
from billing.services import plan_assign
from dpp.http.errors import ApplicationError
from dpp.management.base import DppCommand, actor, fits
from dpp.models import Tenant


class Command(DppCommand):
    help = "Move a tenant to another plan (SPEC §4.2); the previous one is closed and kept in its history."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("tenant_id")
        parser.add_argument("plan", help="a plan code, e.g. starter or unlimited")
        parser.add_argument("--reason", required=True, help="recorded in the plan history (ticket, contract)")
        parser.add_argument(
            "--actor",
            type=fits(TenantPlan, "actor"),
            help="who asks for it, recorded in the history (default: cli:<your login name>)",
        )

    def run(self, **options: Any) -> None:
        tenant = Tenant.objects.filter(pk=options["tenant_id"]).first()
        if tenant is None:
            self.fail(f"no tenant {options['tenant_id']!r}")
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
