import uuid
from typing import Any

from django.core.management.base import CommandParser

from dpp.management.base import DppCommand
from reaper.services import reconcile_once

COUNTS = ("expired_leases", "rolled_forward", "rolled_back", "redriven", "expired_queued", "audit_flags")


class Command(DppCommand):
    help = "One reaper pass now: expire leases, roll finalizations forward or back, re-drive and expire queued runs."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--dry-run", action="store_true", help="say what would be done; change nothing")
        parser.add_argument("--run", dest="run_id", help="only this run")

    def run(self, **options: Any) -> None:
        run_id = None
        if options["run_id"]:
            try:
                run_id = uuid.UUID(options["run_id"])
            except ValueError:
                self.fail(f"--run {options['run_id']!r} is not a run id")
        report = reconcile_once(dry_run=options["dry_run"], run_id=run_id)
        payload = report.as_dict()
        verb = "would do" if report.dry_run else "did"
        lines = [
            f"reconcile ({'dry run' if report.dry_run else 'live'}): " + ", ".join(f"{k}={payload[k]}" for k in COUNTS)
        ]
        lines += [
            f"  {verb}: {a.get('action')} {a.get('run_id') or a.get('subject')} {a.get('outcome', a.get('detail', ''))}"
            for a in report.actions
        ]
        self.emit(payload, "\n".join(lines))
