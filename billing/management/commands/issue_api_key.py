from typing import Any

from django.core.management.base import CommandParser

from billing.selectors import plan_get
from dpp.management.base import DppCommand, fits
from dpp.models import ApiKey, Tenant
from dpp.services import api_key_issue


class Command(DppCommand):
    help = "Issue a new API key for a tenant; prints it once."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("tenant_id")
        parser.add_argument("--label", default="", type=fits(ApiKey, "label"))
        parser.add_argument("--test", action="store_true", help="a dpp_test_ key instead of dpp_live_")

    def run(self, **options: Any) -> None:
        tenant = Tenant.objects.filter(pk=options["tenant_id"]).first()
        if tenant is None:
            self.fail(f"no tenant {options['tenant_id']!r}")
            return
        issued = api_key_issue(tenant=tenant, label=options["label"], environment="test" if options["test"] else "live")
        plan = plan_get(tenant_id=tenant.pk).code
        self.emit(
            {
                "tenant_id": tenant.pk,
                "api_key": issued.secret,
                "plan": plan,
                "key_prefix": issued.api_key.prefix,
            },
            f"API key for {tenant.pk} (shown once): {issued.secret}",
        )
