from typing import Any

from dpp.management.base import Arg, DppCommand
from dpp.money import format_usd, parse_usd
from dpp.services import tenant_low_balance_set


class Command(DppCommand):
    """Set the available balance under which the tenant's webhooks get balance.low (0 turns it off)."""

    arguments = (
        Arg("tenant_id"),
        Arg("amount_usd", help='e.g. "5.0000"; 0 turns balance.low off'),
    )

    def run(self, **options: Any) -> None:
        micros = parse_usd(options["amount_usd"].strip(), field="amount_usd")
        tenant = tenant_low_balance_set(tenant_id=options["tenant_id"], threshold_micros=micros)
        threshold = format_usd(tenant.low_balance_threshold_micros)
        self.emit(
            {"tenant_id": tenant.pk, "low_balance_threshold_usd": threshold},
            f"balance.low for {tenant.pk} below {threshold} USD" if micros else f"balance.low off for {tenant.pk}",
        )
