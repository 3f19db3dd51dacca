from typing import Any

from django.core.management.base import CommandParser

from billing.admin.forms import amount_error, validate_manual_amount
from billing.models import LedgerTransaction
from billing.selectors import balances_get
from billing.services import ledger_topup
from dpp.http.errors import ApplicationError
from dpp.management.base import DppCommand, actor, fits
from dpp.models import Tenant
from dpp.money import format_usd, parse_usd


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
            amount = parse_usd(options["amount_usd"], field="amount_usd")
        except ApplicationError as exc:  # its detail names a regular expression: say it in words, as the admin does
            self.fail(amount_error(options["amount_usd"].strip(), exc.reason_code))
        try:
            validate_manual_amount(amount)  # the admin's typo guard: a ValidationError, one line (DppCommand)
            txn = ledger_topup(
                tenant=tenant,
                amount_micros=amount,
                actor=actor(options["actor"]),
                reason=options["reason"],
            )
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
