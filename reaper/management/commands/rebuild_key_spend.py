from typing import Any

from dpp.management.base import Arg, DppCommand
from runs.key_spend import key_spend_rebuild_all


class Command(DppCommand):
    """Recompute the API keys' spend counters (SPEC §8) from their runs: what to run when audit_ledger reports
    key_spend_equals_runs. Moves no money."""

    arguments = (Arg("--tenant", help="only this tenant's keys"),)

    def run(self, **options: Any) -> None:
        written = key_spend_rebuild_all(tenant_id=options["tenant"])
        self.emit({"counters": written}, f"rebuilt the key spend counters: {written} window rows written")
