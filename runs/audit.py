"""The run side of the audit (SPEC §2.1 "per run", §3.3 last row): do the runs and the ledger tell one story?

The runs table is read once: joined (one hash join) to the per-run ledger summary `audit_run_legs` that
`billing.audit` builds, into the working table `audit_runs`; each check is then one set-based query over it.
billing does not import runs, so the checks and their table live here and are handed to the billing audit,
which builds and runs them in the same snapshot as the ledger's.
"""

from __future__ import annotations

from billing.audit import AuditReport, Check, Row, Violation, WorkTable, audit, ledger_audit, usd
from runs.key_spend import KEY_SPEND_CHECKS
from runs.models import OPEN_STATUSES, TERMINAL_STATUSES


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


_TERMINAL = _sql_list(TERMINAL_STATUSES)
_OPEN = _sql_list(OPEN_STATUSES)


def _describe_terminal(row: Row) -> str:
    run_id, tenant_id, status = row
    return f"run {run_id} of {tenant_id} is {status} but has no SETTLE"


def _describe_settle(row: Row) -> str:
    run_id, tenant_id, status = row
    state = "does not exist" if status is None else f"is {status}"
    return f"run {run_id} of {tenant_id} has a SETTLE but {state}"


def _describe_reserve(row: Row) -> str:
    run_id, tenant_id, reserved, reserves, reserve_micros, reserve_tenant = row
    if not reserves:
        return f"run {run_id} of {tenant_id} reserves {usd(reserved)} but has no RESERVE"
    return (
        f"run {run_id} of {tenant_id} reserves {usd(reserved)} but its RESERVE ({reserves}) of {reserve_tenant}"
        f" holds {usd(reserve_micros)}"
    )


def _describe_orphan(row: Row) -> str:
    run_id, tenant_id, reserved = row
    return f"a RESERVE of {usd(reserved)} for {tenant_id} names run {run_id}, which does not exist"


def _describe_charge(row: Row) -> str:
    run_id, tenant_id, charged, revenue = row
    return f"run {run_id} of {tenant_id} records a charge of {usd(charged)} but its SETTLE took {usd(revenue)}"


def _describe_held(row: Row) -> str:
    account_id, held, open_micros, open_runs = row
    return f"{account_id} is {usd(held)} but its {open_runs} non-terminal runs reserve {usd(open_micros)}"


# One pass over the runs table (its narrow columns) against the per-run ledger summary: a FULL JOIN keeps the runs
# without ledger rows and the ledger rows without a run. Every check below is a scan of this table.
RUNS = WorkTable(
    "audit_runs",
    """
SELECT COALESCE(r.id, l.run_id) AS run_id,
       COALESCE(r.tenant_id, l.tenant_id) AS tenant_id,
       r.status AS status,
       r.reserved_micros AS reserved_micros,
       r.charged_micros AS charged_micros,
       l.tenant_id AS ledger_tenant_id,
       COALESCE(l.reserves, 0) AS reserves,
       COALESCE(l.settles, 0) AS settles,
       l.reserved AS reserved,
       l.charged AS charged
  FROM runs_run r
  FULL OUTER JOIN audit_run_legs l ON l.run_id = r.id
""",
)

RUN_CHECKS: tuple[Check, ...] = (
    Check(
        "terminal_run_without_settle",
        f"SELECT run_id, tenant_id, status FROM audit_runs WHERE status IN ({_TERMINAL}) AND settles = 0",  # noqa: S608
        _describe_terminal,
    ),
    Check(
        "settle_without_terminal_run",
        f"""SELECT run_id, tenant_id, status FROM audit_runs
             WHERE settles > 0 AND (status IS NULL OR status NOT IN ({_TERMINAL}))""",  # noqa: S608 - constants
        _describe_settle,
    ),
    Check(
        "run_reserve_mismatch",
        """SELECT run_id, tenant_id, reserved_micros, reserves, reserved, ledger_tenant_id FROM audit_runs
            WHERE status IS NOT NULL
              AND (reserves = 0 OR reserved <> reserved_micros OR ledger_tenant_id <> tenant_id)""",
        _describe_reserve,
    ),
    Check(
        "reserve_without_run",
        "SELECT run_id, tenant_id, reserved FROM audit_runs WHERE status IS NULL AND reserves > 0 AND settles = 0",
        _describe_orphan,
    ),
    Check(
        "run_charge_mismatch",
        f"""SELECT run_id, tenant_id, charged_micros, charged FROM audit_runs
             WHERE settles > 0 AND status IN ({_TERMINAL})
               AND (charged_micros IS NULL OR charged_micros <> charged)""",  # noqa: S608 - constants
        _describe_charge,
    ),
    Check(
        "held_equals_open_runs",
        f"""SELECT a.id, a.balance_micros, COALESCE(o.open_micros, 0), COALESCE(o.open_runs, 0)
              FROM billing_account a
              LEFT JOIN (SELECT tenant_id, SUM(reserved_micros) AS open_micros, COUNT(*) AS open_runs
                           FROM audit_runs WHERE status IN ({_OPEN}) GROUP BY tenant_id) o
                ON o.tenant_id = a.tenant_id
             WHERE a.kind = 'HELD' AND a.balance_micros <> COALESCE(o.open_micros, 0)""",  # noqa: S608 - constants
        _describe_held,
    ),
)

RUN_INVARIANTS = tuple(check.invariant for check in RUN_CHECKS)


def run_audit() -> list[Violation]:
    """The run-side checks alone, on one snapshot: their violations (at most 20 of each), none when all agree."""
    return audit(RUN_CHECKS, tables=(RUNS,)).violations


def full_audit() -> AuditReport:
    """Every invariant of SPEC §2.1 and §3.3 — ledger and runs — and the key spend counters of §8 against their
    runs, on one snapshot (what `audit_ledger` runs)."""
    return ledger_audit(extra_checks=(*RUN_CHECKS, *KEY_SPEND_CHECKS), extra_tables=(RUNS,))
