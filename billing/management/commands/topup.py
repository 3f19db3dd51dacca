from typing import Any

from django.core.management.base import CommandParser

from billing.models import LedgerTransaction
from billing.selectors import balances_get
from billing.services import ledger_manual_post, manual_amount_parse
from dpp.http.errors import ApplicationError
from dpp.management.base import DppCommand, actor, fits
from dpp.models import Tenant
from dpp.money import format_usd


class Command(DppCommand):
    help = "Add credit to a tenant (a TOPUP transaction: funding → available)."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("tenant_id")
        parser.add_argument("amount_usd", help='e.g. "25.0000" (up to 4 decimals)')
        parser.add_argument("--reason", required=True)
        parser.add_argument(
            "--actor",
            type=fits(LedgerTransaction, "actor"),
            help="who asks for it, recorded on the transaction (default: cli:<your login name>)",
        )

    def run(self, **options: Any) -> None:
        tenant = Tenant.objects.filter(pk=options["tenant_id"]).first()
        if tenant is None:
            self.fail(f"no tenant {options['tenant_id']!r}")
            return
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
