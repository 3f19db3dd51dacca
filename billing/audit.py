"""The ledger audit (SPEC §2.1): every invariant checked from the ledger alone, by aggregate SQL.

How it stays cheap on a large ledger: the entries are read twice in all, whatever the number of checks.
1. `audit_txn_legs` (a temporary table): one row per transaction — its entry count, its sum, and its legs per
   account kind (available, held, revenue, funding) — built by one join of the entries and one GROUP BY;
2. `audit_run_legs`: one row per run — its RESERVE and SETTLE counts and legs — a GROUP BY over (1);
3. the per-account sums of the entries (one GROUP BY account, for "balance = sum of entries").
Every check is then one set-based query (joins, GROUP BY / HAVING) over these; no row of the ledger goes
through Python. Only the first `EXAMPLES_PER_INVARIANT` violations of each invariant are fetched; the total
is counted by the same query (a window count). The cost is linear in the size of the ledger and CPU-bound in
one PostgreSQL backend: about 11 s for 1M runs (2M transactions, 4.3M entries) on 2 cores — see
docs/BENCHMARKS.md, "Ledger audit".

Everything is read in one snapshot: on PostgreSQL a REPEATABLE READ transaction, so a money movement that
commits while the audit runs is seen either whole or not at all, and the audit never reports a race as a
violation. The temporary tables are dropped before the transaction ends.

`runs.audit` adds the run-side checks (SPEC §3.3) to the same snapshot: billing does not import runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper

from dpp.money import format_usd

EXAMPLES_PER_INVARIANT = 20

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Violation:
    invariant: str
    detail: str
    subject: str = ""  # the transaction, account, run or tenant it is about

    def as_dict(self) -> dict[str, str]:
        return {"invariant": self.invariant, "detail": self.detail, "subject": self.subject}


@dataclass
class AuditReport:
    transactions: int
    entries: int
    accounts: int
    violations: list[Violation] = field(default_factory=list)  # at most EXAMPLES_PER_INVARIANT per invariant
    checkpoint: dict[str, Any] = field(default_factory=dict)  # incremental audits: the watermarks it went between
    violation_counts: dict[str, int] = field(default_factory=dict)  # invariant → total number of violations
    seconds: dict[str, float] = field(default_factory=dict)  # each working table, each invariant, "total"

    @property
    def ok(self) -> bool:
        return not self.violation_counts

    @property
    def violations_total(self) -> int:
        return sum(self.violation_counts.values())

    def as_dict(self) -> dict[str, Any]:
        """The `audit_ledger --json` object of SPEC §6, with the totals per invariant and timings added."""
        return {
            "ok": self.ok,
            "transactions": self.transactions,
            "entries": self.entries,
            "accounts": self.accounts,
            "violations": [violation.as_dict() for violation in self.violations],
            "violations_total": self.violations_total,
            "violation_counts": self.violation_counts,
            "audit_seconds": round(self.seconds.get("total", 0.0), 3),
            "seconds": {step: round(seconds, 3) for step, seconds in self.seconds.items()},
            **({"checkpoint": self.checkpoint} if self.checkpoint else {}),
        }


@dataclass(frozen=True)
class Check:
    """One invariant: a query whose rows are its violations (first column: the subject), and their wording."""

    invariant: str
    sql: str
    describe: Callable[[Row], str]


def usd(micros: int | None) -> str:
    """An amount for a human; tolerant of what a tampered database may hold (NULL, a non-granular amount)."""
    if micros is None:
        return "none"
    try:
        return f"{format_usd(int(micros))} USD"
    except ValueError:  # off the 100-micro granule: show what is stored
        return f"{int(micros)} micros"


# --- the snapshot and its working tables ----------------------------------------------------------------------


@dataclass(frozen=True)
class WorkTable:
    """A temporary table built once per audit from a SELECT, for the checks to read."""

    name: str
    select: str
    # Temporary tables are never auto-analyzed; a table that is only scanned (and grouped) needs no statistics.
    analyze: bool = True


# Pass 1, over the entries (a merge join of two index scans, streamed into GroupAggregate: no hash table of
# millions of groups). One row per transaction, a LEFT JOIN keeping those without entries (legs = 0).
# A leg is classified by its account's id, a natural key (`<tenant>/available`, `@revenue/07`; the
# `account_naming` check proves every id is the one its kind and tenant imply): only the transaction's own
# tenant's accounts count as its available and held legs, so a leg on another tenant's account is counted in
# `legs` but in no kind, and fails the shape check. A revenue (funding) leg is one on any account of the kind,
# a shard or the pre-shard one: two of them in one transaction are two legs of one kind, a shape violation.
# Per kind the amount is MAX (NULL when absent), not SUM: a by-value aggregate, several times cheaper than
# SUM(bigint)'s 128-bit state; a transaction has at most one entry per account — a second one shows as `legs` >
# the kinds present, a shape violation. `total` is the exact SUM of all the entries.
TXN_KEY_COLUMNS = "t.id AS transaction_id, t.kind AS kind, t.tenant_id AS tenant_id, t.run_id AS run_id"
TXN_LEG_AGGREGATES = """COUNT(e.id) AS legs,
       COALESCE(SUM(e.amount_micros), 0) AS total,
       MAX(e.amount_micros) FILTER (WHERE e.account_id = t.tenant_id || '/available') AS available,
       MAX(e.amount_micros) FILTER (WHERE e.account_id = t.tenant_id || '/held') AS held,
       MAX(e.amount_micros) FILTER (WHERE e.account_id LIKE '@revenue%') AS revenue,
       MAX(e.amount_micros) FILTER (WHERE e.account_id LIKE '@funding%') AS funding"""
TXN_LEG_COLUMNS = f"{TXN_KEY_COLUMNS},\n       {TXN_LEG_AGGREGATES}"
TXN_LEGS = WorkTable(
    "audit_txn_legs",
    f"""
SELECT {TXN_LEG_COLUMNS}
  FROM billing_ledgertransaction t
  LEFT JOIN billing_ledgerentry e ON e.transaction_id = t.id
 GROUP BY t.id
""",  # noqa: S608 - constants
    analyze=False,  # only ever scanned: ANALYZE would cost more than it saves
)

# Pass 2, over pass 1: one row per run — how many RESERVE and SETTLE it has, what was reserved (the RESERVE's
# held leg), and how the SETTLE split it: `unheld` taken from held, `charged` to revenue, `released` back to
# available. With more than one RESERVE or SETTLE (an `once_per_run` violation) the amounts are those of one.
RUN_LEGS = WorkTable(
    "audit_run_legs",
    """
SELECT run_id,
       MIN(tenant_id) AS tenant_id,
       MAX(tenant_id) AS tenant_id_max,
       COUNT(CASE WHEN kind = 'RESERVE' THEN 1 END) AS reserves,
       COUNT(CASE WHEN kind = 'SETTLE' THEN 1 END) AS settles,
       COALESCE(MAX(CASE WHEN kind = 'RESERVE' THEN held END), 0) AS reserved,
       COALESCE(-MIN(CASE WHEN kind = 'SETTLE' THEN held END), 0) AS unheld,
       COALESCE(MAX(CASE WHEN kind = 'SETTLE' THEN revenue END), 0) AS charged,
       COALESCE(MAX(CASE WHEN kind = 'SETTLE' THEN available END), 0) AS released
  FROM audit_txn_legs
 WHERE run_id IS NOT NULL
 GROUP BY run_id
""",
)

LEDGER_TABLES = (TXN_LEGS, RUN_LEGS)

_COUNTS = """
SELECT COUNT(*), COALESCE(SUM(legs), 0), (SELECT COUNT(*) FROM billing_account) FROM audit_txn_legs
"""


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def _drop(cursor: CursorWrapper, tables: Sequence[WorkTable]) -> None:
    for table in reversed(tables):
        cursor.execute(f"DROP TABLE IF EXISTS {table.name}")


@contextmanager
def audit_snapshot(
    tables: Sequence[WorkTable] = (),
    *,
    seconds: dict[str, float] | None = None,
    ledger_tables: Sequence[WorkTable] = LEDGER_TABLES,
) -> Iterator[CursorWrapper]:
    """A cursor on one consistent snapshot of the database, with the ledger's working tables and `tables` built.

    `seconds`, if given, receives how long each table took to build. `ledger_tables`: the working tables of the
    whole ledger, or (the incremental audit) of what was written since its checkpoint.
    """
    tables = (*ledger_tables, *tables)
    seconds = {} if seconds is None else seconds
    outermost = not connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        if _postgres():
            if outermost:  # only the first statement of a transaction may set its isolation level
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            # Big one-off aggregates: room to hash in memory, and no JIT (compiling each query costs more than
            # it saves on these).
            cursor.execute("SET LOCAL work_mem = '256MB'")
            cursor.execute("SET LOCAL jit = off")
        _drop(cursor, tables)
        try:
            for table in tables:
                started = time.perf_counter()
                cursor.execute(f"CREATE TEMPORARY TABLE {table.name} AS {table.select}")
                if table.analyze and _postgres():  # give the planner the row counts and values of the joins
                    cursor.execute(f"ANALYZE {table.name}")
                seconds[table.name] = time.perf_counter() - started
            yield cursor
        finally:
            _drop(cursor, tables)


def run_checks(cursor: CursorWrapper, checks: Sequence[Check], report: AuditReport) -> None:
    """Run each check; keep its first examples (in subject order) and its total count in the report."""
    for check in checks:
        started = time.perf_counter()
        # The window count is taken before LIMIT: the exact total comes with the capped examples. MATERIALIZED
        # keeps ORDER BY … LIMIT from steering the check's own plan towards an ordered index scan (3× slower).
        cursor.execute(
            f"WITH v AS MATERIALIZED ({check.sql}) SELECT v.*, COUNT(*) OVER () FROM v ORDER BY 1 LIMIT %s",  # noqa: S608
            [EXAMPLES_PER_INVARIANT],
        )
        rows = cursor.fetchall()
        report.seconds[check.invariant] = time.perf_counter() - started
        if rows:
            report.violation_counts[check.invariant] = int(rows[0][-1])
            report.violations.extend(
                Violation(invariant=check.invariant, detail=check.describe(row[:-1]), subject=str(row[0]))
                for row in rows
            )


def audit(checks: Sequence[Check], *, tables: Sequence[WorkTable] = ()) -> AuditReport:
    """Run `checks` on one snapshot of the database (with `tables` built for them); what held and what did not."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    with audit_snapshot(tables, seconds=seconds) as cursor:
        cursor.execute(_COUNTS)
        transactions, entries, accounts = cursor.fetchone()
        report = AuditReport(transactions=int(transactions), entries=int(entries), accounts=int(accounts))
        report.seconds.update(seconds)
        run_checks(cursor, checks, report)
    report.seconds["total"] = time.perf_counter() - started
    return report


# --- the invariants of SPEC §2.1 -------------------------------------------------------------------------------


def _describe_unbalanced(row: Row) -> str:
    txn_id, kind, legs, total = row
    return f"{kind} transaction {txn_id} has {legs} entries summing to {usd(total)} (needs ≥ 2 summing to 0)"


def _describe_total(row: Row) -> str:
    what, total = row
    return f"the {what} of the whole ledger sum to {usd(total)}, not 0"


def _describe_balance(row: Row) -> str:
    account_id, stored, entries = row
    return f"account {account_id} stores {usd(stored)} but its entries sum to {usd(entries)}"


def _describe_negative(row: Row) -> str:
    account_id, balance = row
    return f"tenant account {account_id} is negative: {usd(balance)}"


def _describe_held(row: Row) -> str:
    account_id, held, open_micros, open_runs, counted = row
    return (
        f"{account_id} is {usd(held)} and counts {counted} open reservations, but its {open_runs} open"
        f" reservations (RESERVE, no SETTLE) sum to {usd(open_micros)}"
    )


def _describe_settle(row: Row) -> str:
    run_id, reserved, unheld, charged, released = row
    return (
        f"run {run_id}: reserved {usd(reserved)}, its SETTLE took {usd(unheld)} from held, charged {usd(charged)}"
        f" and released {usd(released)} (needs 0 ≤ charge ≤ reserved, charge + released = taken = reserved)"
    )


def _describe_once(row: Row) -> str:
    run_id, reserves, settles, tenant_id, tenant_id_max = row
    tenants = tenant_id if tenant_id == tenant_id_max else f"{tenant_id} and {tenant_id_max}"
    return (
        f"run {run_id} has {reserves} RESERVE and {settles} SETTLE (of tenant {tenants}); "
        "needs exactly one RESERVE and at most one SETTLE, of one tenant"
    )


def _describe_shape(row: Row) -> str:
    txn_id, kind, legs, available, held, revenue, funding = row
    moves = ", ".join(
        f"{name} {usd(amount)}"
        for name, amount in (("available", available), ("held", held), ("revenue", revenue), ("funding", funding))
        if amount is not None
    )
    return (
        f"{kind} transaction {txn_id} has {legs} entries moving {moves or 'none of its accounts'}:"
        f" not the shape of a {kind} (another tenant's account, a repeated account, or the wrong accounts)"
    )


def _describe_naming(row: Row) -> str:
    account_id, kind, tenant_id = row
    return f"account {account_id!r} ({kind} of {tenant_id or 'the platform'}) is not named after its kind and owner"


# The shapes of SPEC §2.1's table of kinds, on a balanced transaction (amounts signed as entries: + into the
# account; an absent leg is NULL). Every comparison is COALESCEd so that the predicate is never NULL.
_LEGS_ARE_KINDS = """legs = (CASE WHEN available IS NULL THEN 0 ELSE 1 END + CASE WHEN held IS NULL THEN 0 ELSE 1 END
        + CASE WHEN revenue IS NULL THEN 0 ELSE 1 END + CASE WHEN funding IS NULL THEN 0 ELSE 1 END)"""
_SHAPES = f"""{_LEGS_ARE_KINDS} AND (
    (kind = 'TOPUP' AND COALESCE(funding, 0) < 0 AND COALESCE(available, 0) > 0 AND legs = 2)
 OR (kind = 'RESERVE' AND COALESCE(available, 0) < 0 AND COALESCE(held, 0) > 0 AND legs = 2)
 OR (kind = 'SETTLE' AND COALESCE(held, 0) < 0 AND COALESCE(available, 1) > 0 AND COALESCE(revenue, 1) > 0
     AND funding IS NULL)
 OR (kind = 'ADJUSTMENT' AND available IS NOT NULL AND held IS NULL AND legs = 2))"""

# What a misshapen transaction moves per account, for its description: the working table keeps one leg per
# account (MAX), and a repeated account is what may have made it misshapen. Read for the violations only.
_NET_LEGS = ", ".join(
    "(SELECT SUM(e.amount_micros) FROM billing_ledgerentry e WHERE e.transaction_id = l.transaction_id"  # noqa: S608
    f" AND e.account_id {account})"
    for account in (
        "= l.tenant_id || '/available'",
        "= l.tenant_id || '/held'",
        "LIKE '@revenue%%'",
        "LIKE '@funding%%'",
    )
)

# A platform account is a shard (`@revenue/07`) or the kind's one account from before the sharding (`@revenue`).
_ACCOUNT_NAMES = """(tenant_id IS NOT NULL AND kind IN ('AVAILABLE', 'HELD') AND shard IS NULL
      AND id = tenant_id || '/' || LOWER(kind))
 OR (tenant_id IS NULL AND kind IN ('REVENUE', 'FUNDING') AND shard IS NULL AND id = '@' || LOWER(kind))
 OR (tenant_id IS NULL AND kind IN ('REVENUE', 'FUNDING') AND shard IS NOT NULL
      AND id = '@' || LOWER(kind) || '/' || CASE WHEN shard < 10 THEN '0' ELSE '' END || CAST(shard AS TEXT))"""

LEDGER_CHECKS: tuple[Check, ...] = (
    # 1. every transaction sums to zero, with at least two entries ...
    Check(
        "balanced_transaction",
        "SELECT transaction_id, kind, legs, total FROM audit_txn_legs WHERE legs < 2 OR total <> 0",
        _describe_unbalanced,
    ),
    # ... so the ledger as a whole sums to zero: the stored balances and the entries.
    Check(
        "ledger_sums_to_zero",
        """SELECT 'account balances', SUM(balance_micros) FROM billing_account HAVING SUM(balance_micros) <> 0
           UNION ALL
           SELECT 'entries', SUM(total) FROM audit_txn_legs HAVING SUM(total) <> 0""",
        _describe_total,
    ),
    # 2. each account's stored balance equals the sum of its entries.
    Check(
        "balance_equals_entries",
        """SELECT a.id, a.balance_micros, COALESCE(s.total, 0)
             FROM billing_account a
             LEFT JOIN (SELECT account_id, SUM(amount_micros) AS total FROM billing_ledgerentry GROUP BY account_id) s
               ON s.account_id = a.id
            WHERE a.balance_micros <> COALESCE(s.total, 0)""",
        _describe_balance,
    ),
    # 3. a tenant's available and held are never negative.
    Check(
        "tenant_balance_nonnegative",
        "SELECT id, balance_micros FROM billing_account WHERE tenant_id IS NOT NULL AND balance_micros < 0",
        _describe_negative,
    ),
    # 4. a tenant's held equals the reservations of its runs not yet settled.
    Check(
        "held_equals_open_reservations",
        """SELECT a.id, a.balance_micros, COALESCE(o.open_micros, 0), COALESCE(o.open_runs, 0),
                  a.open_reservations
             FROM billing_account a
             LEFT JOIN (SELECT tenant_id, SUM(reserved) AS open_micros, COUNT(*) AS open_runs
                          FROM audit_run_legs WHERE settles = 0 GROUP BY tenant_id) o
               ON o.tenant_id = a.tenant_id
            WHERE a.kind = 'HELD'
              AND (a.balance_micros <> COALESCE(o.open_micros, 0)
                   OR a.open_reservations <> COALESCE(o.open_runs, 0))""",
        _describe_held,
    ),
    # 5. a settled run: charge ≤ reserved, charge + released = reserved (= what the SETTLE took from held) ...
    Check(
        "settle_within_reservation",
        """SELECT run_id, reserved, unheld, charged, released FROM audit_run_legs
            WHERE settles > 0 AND reserves > 0
              AND (charged < 0 OR released < 0 OR charged > reserved OR charged + released <> reserved
                   OR unheld <> reserved)""",
        _describe_settle,
    ),
    # ... and exactly one RESERVE, at most one SETTLE (never without its RESERVE), all of one tenant.
    Check(
        "once_per_run",
        """SELECT run_id, reserves, settles, tenant_id, tenant_id_max FROM audit_run_legs
            WHERE reserves <> 1 OR settles > 1 OR tenant_id <> tenant_id_max""",
        _describe_once,
    ),
    # Each kind moves money between the accounts SPEC §2.1's table names, and only those.
    Check(
        "transaction_shape",
        f"""SELECT transaction_id, kind, legs, {_NET_LEGS} FROM audit_txn_legs l
             WHERE legs >= 2 AND total = 0 AND NOT ({_SHAPES})""",  # noqa: S608 - constants
        _describe_shape,
    ),
    # The working tables classify a leg by its account's id: every id must be the one its kind and tenant imply.
    Check(
        "account_naming",
        f"SELECT id, kind, tenant_id FROM billing_account WHERE NOT ({_ACCOUNT_NAMES})",  # noqa: S608 - constant
        _describe_naming,
    ),
)

LEDGER_INVARIANTS = tuple(check.invariant for check in LEDGER_CHECKS)


def ledger_audit(*, extra_checks: Sequence[Check] = (), extra_tables: Sequence[WorkTable] = ()) -> AuditReport:
    """Check every invariant of SPEC §2.1 (and `extra_checks`, e.g. the run side) on one snapshot."""
    return audit((*LEDGER_CHECKS, *extra_checks), tables=extra_tables)
