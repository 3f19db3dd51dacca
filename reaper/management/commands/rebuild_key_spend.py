from typing import Any

from django.core.management.base import CommandParser

from dpp.management.base import DppCommand
from runs.key_spend import key_spend_rebuild_all


class Command(DppCommand):
    help = (
        "Recompute the API keys' spend counters (SPEC §8) from their runs: what to run when audit_ledger reports "
        "key_spend_equals_runs. Moves no money."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--tenant", help="only this tenant's keys")

    def run(self, **options: Any) -> None:
        written = key_spend_rebuild_all(tenant_id=options["tenant"])
        self.emit({"counters": written}, f"rebuilt the key spend counters: {written} window rows written")
