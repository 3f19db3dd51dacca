from typing import Any

from django.core.management.base import CommandError

from billing.audit import AuditReport
from dpp.management.base import DppCommand
from runs.audit import full_audit


def _text(report: AuditReport) -> str:
    head = (
        f"ledger audit: {report.transactions} transactions, {report.entries} entries, {report.accounts} accounts"
        f" ({report.seconds['total']:.2f} s)"
    )
    if report.ok:
        return f"{head}: every invariant holds"
    lines = [f"{head}: {report.violations_total} violations of {len(report.violation_counts)} invariants"]
    for invariant, total in report.violation_counts.items():
        shown = [v for v in report.violations if v.invariant == invariant]
        lines.append(f"  {invariant}: {total} (showing {len(shown)})")
        lines.extend(f"    - {violation.detail}" for violation in shown)
    return "\n".join(lines)


class Command(DppCommand):
    """Check every invariant of the ledger and the runs (SPEC §2.1, §3.3); exit status 0 only if all hold."""

    def run(self, **options: Any) -> None:
        report = full_audit()
        self.emit(report.as_dict(), _text(report))
        if not report.ok:
            # Not self.fail(): with --json the report above is already the one object on stdout.
            raise CommandError(
                f"{report.violations_total} violations: {', '.join(report.violation_counts)}", returncode=1
            )
