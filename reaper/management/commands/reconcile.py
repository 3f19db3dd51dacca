import uuid
from typing import Any

from django.core.management.base import CommandError

from dpp.management.base import Arg, DppCommand
from reaper.models import AuditFlag
from reaper.services import reconcile_once
from runs.models import Run

COUNTS = ("expired_leases", "rolled_forward", "rolled_back", "redriven", "expired_queued", "audit_flags")


class Command(DppCommand):
    """One reaper pass now: expire leases, roll finalizations forward or back, re-drive and expire queued runs."""

    arguments = (
        Arg("--dry-run", action="store_true", help="say what would be done; change nothing"),
        Arg("--run", dest="run_id", help="only this run"),
    )

    def run(self, **options: Any) -> None:
        run_id = None
        if options["run_id"]:
            try:
                run_id = uuid.UUID(options["run_id"])
            except ValueError:
                self.fail(f"--run {options['run_id']!r} is not a run id")
            if not Run.objects.filter(pk=run_id).exists():
                self.fail(f"--run {run_id}: there is no such run")
        report = reconcile_once(dry_run=options["dry_run"], run_id=run_id)
        payload = report.as_dict()
        # `audit_flags` counts the flags this pass raised; a finding already flagged stays open, not raised again.
        payload["audit_flags_open"] = AuditFlag.objects.filter(resolved_at__isnull=True).count()
        lines = [
            f"reconcile ({'dry run' if report.dry_run else 'live'}): "
            + ", ".join(
                f"{k}={payload[k]}"
                for k in (*COUNTS, "storage_unavailable", "redrive_failed", "actions_failed", "audit_flags_open")
            )
        ]
        lines += [_describe(action) for action in report.actions]
        self.emit(payload, "\n".join(lines))
        if report.unfinished:
            # The report above is the answer; the exit status tells a script that some runs were left as they were.
            raise CommandError(f"{report.unfinished} run(s) could not be finished in this pass", returncode=1)


def _describe(action: dict[str, Any]) -> str:
    """One line per action: `expire_lease run <id>: would do | done | lost the race` (or a deferral or failure,
    e.g. `redrive run <id>: publish failed: …`), or an audit flag."""
    if action["action"] == "audit_flag":
        return f"  audit flag {action['kind']} on {action['subject']}: {action['detail']}"
    return f"  {action['action']} run {action['run_id']}: {action['outcome']}"
