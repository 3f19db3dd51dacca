from typing import Any

from billing.models import LedgerTransaction
from billing.selectors import balances_get
from billing.services import ledger_manual_post, manual_amount_parse
from dpp.http.errors import ApplicationError
from dpp.management.base import Arg, TenantCommand, actor, actor_option
from dpp.models import Tenant
from dpp.money import format_usd


class Command(TenantCommand):
    """Add credit to a tenant (a TOPUP transaction: funding → available)."""

    arguments = (
        Arg("amount_usd", help='e.g. "25.0000" (up to 4 decimals)'),
        Arg("--reason", required=True),
        actor_option(LedgerTransaction, "on the transaction"),
    )

    def run_for(self, tenant: Tenant, **options: Any) -> None:
        try:
            amount = manual_amount_parse(options["amount_usd"])
            txn = ledger_manual_post(
                tenant=tenant,
                kind=LedgerTransaction.Kind.TOPUP,
                amount_micros=amount,
                actor=actor(options["actor"]),
                reason=options["reason"],
            ).transaction
        except (ApplicationError, ValueError) as exc:
            self.fail(getattr(exc, "detail", str(exc)))
            return
        available = format_usd(balances_get(tenant_id=tenant.pk).available_micros)
        self.emit(
            {
                "tenant_id": tenant.pk,
                "transaction_id": txn.pk,
                "amount_usd": format_usd(amount),
                "available_usd": available,
            },
            f"topped up {tenant.pk} by {format_usd(amount)} USD (transaction {txn.pk}); available {available} USD",
        )
