"""The hourly ledger audit, incremental (SPEC §3.3: its cost grows with what was written, not with history).

`manage.py audit_ledger` (billing.audit) reads the whole ledger every time. This audit reads what was written
since its last checkpoint, and keeps, per account, the sums of the entries up to that checkpoint (its
watermarks: a ledger transaction id and an entry id) in `AccountCheckpoint`:
- every transaction after the watermark, every transaction with an entry after the entry watermark (an entry
  appended to an old transaction is new too), and every other transaction of the runs they touch, is checked as
  the full audit checks it (balanced, its shape, once per run, the settle within its reservation);
- every account, whatever it was last touched: its stored balance must equal its checkpoint sum plus its entries
  after the watermark (so a tampered balance is caught however old its account), its open reservations likewise;
  the balances sum to zero; tenant balances are ≥ 0; ids name their kind and owner.
Cost: the new transactions (an index range scan), the runs they touch and their entries (index lookups), the
checkpoint rows of the accounts touched (HOT updates), and one hash join of the accounts with their checkpoint
rows — not the history. That last pass grows with the number of accounts (two per tenant), not with the runs:
about 0.06 s for 20,000 accounts, the price of seeing a balance changed without an entry on an account nothing
else touched (docs/decisions.md, "The incremental audit", every account every hour).

The new watermarks must be ids that no database transaction still open can commit at or below, or the
checkpoint sums would miss it forever. Ids are drawn from sequences before their transaction commits, so the
audit reads the sequences' last values L (of transactions and of entries) and the clock T, and waits (briefly:
money moves in transactions of milliseconds) until no session of this database is in a transaction started at
or before T: every id ≤ L was drawn by such a transaction, which has now committed or rolled back. Only then does
it take its snapshot. If one stays open (a stuck session), the checkpoint stays where it was this time; the
checks still hold, they just read more next time (docs/decisions.md, "The incremental audit").
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from django.db import connection
from django.db.backends.utils import CursorWrapper

from billing.audit import (
    LEDGER_CHECKS,
    RUN_LEGS,
    TXN_KEY_COLUMNS,
    TXN_LEG_AGGREGATES,
    TXN_LEG_COLUMNS,
    AuditReport,
    Check,
    WorkTable,
    _describe_balance,
    _describe_held,
    audit_snapshot,
    ledger_audit,
    run_checks,
)

WAIT_FOR_OPEN_SECONDS = 10.0
AUDIT_LOCK = "dpp-ledger-audit-incremental"  # one incremental audit at a time (a session advisory lock)

# The checks of the full audit that read only the working tables or the accounts: the same SQL, on what is new.
_REUSED = frozenset(
    {
        "balanced_transaction",
        "ledger_sums_to_zero",
        "tenant_balance_nonnegative",
        "settle_within_reservation",
        "once_per_run",
        "transaction_shape",
        "account_naming",
    }
)

_OLDER_OPEN = """SELECT COUNT(*) FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
   AND xact_start <= %s"""


Marks = tuple[int, int]  # (ledger transaction id, ledger entry id)

_RUN_LEGS = replace(RUN_LEGS, analyze=False)  # of what is new: a few thousand rows (see _fresh_tables)
_TXN_KEYS = "t.id, t.kind, t.tenant_id, t.run_id"  # what the checks read of a transaction's own row

_LAST_IDS = """SELECT COALESCE(pg_sequence_last_value(pg_get_serial_sequence('billing_ledgertransaction', 'id')), 0),
       COALESCE(pg_sequence_last_value(pg_get_serial_sequence('billing_ledgerentry', 'id')), 0), clock_timestamp()"""


def _safe_watermarks(cursor: CursorWrapper) -> Marks | None:
    """The last transaction and entry ids drawn, once no transaction that could hold an id ≤ them is still open;
    or None if one stays open longer than WAIT_FOR_OPEN_SECONDS."""
    cursor.execute(_LAST_IDS)
    last_txn, last_entry, read_at = cursor.fetchone()
    deadline = time.monotonic() + WAIT_FOR_OPEN_SECONDS
    while True:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # pg_stat_activity is cached per transaction otherwise
        cursor.execute(_OLDER_OPEN, [read_at])
        if not cursor.fetchone()[0]:
            return int(last_txn), int(last_entry)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def _tables(old: Marks, new: Marks) -> tuple[WorkTable, ...]:
    """The working tables of what is new since the watermarks `old` (ints, formatted into the SQL)."""
    delta = _delta_table(old, new)
    if old == (0, 0):  # the first audit (no checkpoint yet) reads every transaction, as the full audit does
        everything = f"""
SELECT {TXN_LEG_COLUMNS}, TRUE AS is_new
  FROM billing_ledgertransaction t
  LEFT JOIN billing_ledgerentry e ON e.transaction_id = t.id
 GROUP BY t.id"""  # noqa: S608 - constants
        return (WorkTable("audit_txn_legs", everything, analyze=False), RUN_LEGS, delta)
    return (*_fresh_tables(old), _RUN_LEGS, delta)


def _fresh_tables(old: Marks) -> tuple[WorkTable, WorkTable, WorkTable]:
    """The transactions written or appended to after the watermarks `old`, with the other legs of their runs."""
    old_txn, old_entry = old
    # New: the transactions after the watermark, older ones with an entry after the entry watermark, and the other
    # transactions of the runs they touch. Each lookup into the history is a LATERAL by an indexed key fenced by
    # OFFSET 0, so that PostgreSQL cannot flatten it into a hash join of the whole table (docs/BENCHMARKS.md).
    fresh = WorkTable(
        "audit_fresh",
        f"""
SELECT {_TXN_KEYS} FROM billing_ledgertransaction t WHERE t.id > {old_txn:d}
UNION ALL
SELECT {_TXN_KEYS}
  FROM (SELECT DISTINCT transaction_id FROM billing_ledgerentry
         WHERE id > {old_entry:d} AND transaction_id <= {old_txn:d}) e
 CROSS JOIN LATERAL (SELECT * FROM billing_ledgertransaction WHERE id = e.transaction_id OFFSET 0) t""",  # noqa: S608
        analyze=False,
    )
    touched = WorkTable(
        "audit_touched",
        f"""
SELECT id, kind, tenant_id, run_id FROM audit_fresh
UNION ALL
SELECT {_TXN_KEYS}
  FROM (SELECT DISTINCT run_id FROM audit_fresh WHERE run_id IS NOT NULL) f
 CROSS JOIN LATERAL (SELECT * FROM billing_ledgertransaction
                      WHERE run_id = f.run_id AND kind IN ('RESERVE', 'SETTLE') AND id <= {old_txn:d} OFFSET 0) t
 WHERE t.id NOT IN (SELECT id FROM audit_fresh WHERE id <= {old_txn:d})""",  # noqa: S608
        analyze=False,
    )
    txn_legs = WorkTable(
        "audit_txn_legs",
        f"""
SELECT {TXN_KEY_COLUMNS}, legs.*, t.id > {old_txn:d} AS is_new
  FROM audit_touched t
 CROSS JOIN LATERAL (SELECT {TXN_LEG_AGGREGATES}
                       FROM billing_ledgerentry e WHERE e.transaction_id = t.id) legs""",  # noqa: S608
        analyze=False,
    )
    return fresh, touched, txn_legs


def _delta_table(old: Marks, new: Marks) -> WorkTable:
    """Per account touched after the checkpoint `old`, what moved: in total, and up to the next checkpoint `new`."""
    (_, old_entry), (new_txn, new_entry) = old, new
    # Its entries after the checkpoint (all of them, and those the next checkpoint will hold), and for a held
    # account the reservations opened (+) and closed (−) after the checkpoint, in number and micros.
    return WorkTable(
        "audit_account_delta",
        f"""
SELECT COALESCE(d.account_id, o.account_id) AS account_id,
       COALESCE(d.total, 0) AS total, COALESCE(d.total_kept, 0) AS total_kept,
       COALESCE(o.opened, 0) AS opened, COALESCE(o.opened_micros, 0) AS opened_micros,
       COALESCE(o.opened_kept, 0) AS opened_kept, COALESCE(o.opened_micros_kept, 0) AS opened_micros_kept
  FROM (SELECT e.account_id, SUM(e.amount_micros) AS total,
               COALESCE(SUM(e.amount_micros) FILTER (WHERE e.id <= {new_entry:d}), 0) AS total_kept
          FROM billing_ledgerentry e
         WHERE e.id > {old_entry:d}
         GROUP BY e.account_id) d
  FULL JOIN (
        SELECT l.tenant_id || '/held' AS account_id,
               SUM(CASE WHEN l.kind = 'RESERVE' THEN 1 ELSE -1 END) AS opened,
               SUM(CASE WHEN l.kind = 'RESERVE' THEN COALESCE(l.held, 0) ELSE -r.reserved END) AS opened_micros,
               COALESCE(SUM(CASE WHEN l.kind = 'RESERVE' THEN 1 ELSE -1 END)
                        FILTER (WHERE l.transaction_id <= {new_txn:d}), 0) AS opened_kept,
               COALESCE(SUM(CASE WHEN l.kind = 'RESERVE' THEN COALESCE(l.held, 0) ELSE -r.reserved END)
                        FILTER (WHERE l.transaction_id <= {new_txn:d}), 0) AS opened_micros_kept
          FROM audit_txn_legs l JOIN audit_run_legs r ON r.run_id = l.run_id
         WHERE l.is_new AND l.kind IN ('RESERVE', 'SETTLE')
         GROUP BY l.tenant_id) o
    ON o.account_id = d.account_id""",  # noqa: S608
        analyze=False,
    )


# Every account, touched or not: its checkpoint sums, and what moved since (zero for an untouched account).
_AT_CHECKPOINT = """FROM billing_account a
  LEFT JOIN billing_accountcheckpoint c ON c.account_id = a.id
  LEFT JOIN audit_account_delta d ON d.account_id = a.id"""

INCREMENTAL_CHECKS: tuple[Check, ...] = (
    *(check for check in LEDGER_CHECKS if check.invariant in _REUSED),
    Check(
        "balance_equals_entries",
        f"""SELECT a.id, a.balance_micros, COALESCE(c.entries_micros, 0) + COALESCE(d.total, 0) {_AT_CHECKPOINT}
             WHERE a.balance_micros <> COALESCE(c.entries_micros, 0) + COALESCE(d.total, 0)""",
        _describe_balance,
    ),
    Check(
        "held_equals_open_reservations",
        f"""SELECT a.id, a.balance_micros, COALESCE(c.open_micros, 0) + COALESCE(d.opened_micros, 0),
                  COALESCE(c.open_reservations, 0) + COALESCE(d.opened, 0), a.open_reservations {_AT_CHECKPOINT}
             WHERE a.kind = 'HELD'
               AND (a.balance_micros <> COALESCE(c.open_micros, 0) + COALESCE(d.opened_micros, 0)
                    OR a.open_reservations <> COALESCE(c.open_reservations, 0) + COALESCE(d.opened, 0))""",
        _describe_held,
    ),
)

# The checkpoint moves by what the next one holds, for the accounts touched only: an UPDATE of the rows there are
# (HOT, in place: the table keeps room in its pages, migration billing 0013), then the rows of accounts new since.
# In this order: the INSERT's rows must not be added to again.
_KEEP = (
    """UPDATE billing_accountcheckpoint c
   SET entries_micros = c.entries_micros + d.total_kept, open_reservations = c.open_reservations + d.opened_kept,
       open_micros = c.open_micros + d.opened_micros_kept
  FROM audit_account_delta d
 WHERE c.account_id = d.account_id""",
    """INSERT INTO billing_accountcheckpoint (account_id, entries_micros, open_reservations, open_micros)
SELECT d.account_id, d.total_kept, d.opened_kept, d.opened_micros_kept FROM audit_account_delta d
 WHERE NOT EXISTS (SELECT FROM billing_accountcheckpoint c WHERE c.account_id = d.account_id)""",
)


def _checkpoint_watermarks(cursor: CursorWrapper) -> Marks:
    cursor.execute("SELECT watermark, entry_watermark FROM billing_auditcheckpoint ORDER BY id DESC LIMIT 1")
    row = cursor.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _audit_from(old: Marks, new: Marks, checks: Sequence[Check]) -> AuditReport:
    """Check what is new since `old` on one snapshot, and move the checkpoint to `new` in the same transaction."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    with audit_snapshot(seconds=seconds, ledger_tables=_tables(old, new)) as cursor:
        if _checkpoint_watermarks(cursor) != old:
            raise RuntimeError("the ledger checkpoint moved while this audit waited: another audit ran")
        cursor.execute(
            "SELECT COUNT(*), COALESCE(SUM(legs), 0), (SELECT COUNT(*) FROM billing_account) FROM audit_txn_legs"
        )
        transactions, entries, accounts = cursor.fetchone()
        report = AuditReport(transactions=int(transactions), entries=int(entries), accounts=int(accounts))
        report.seconds.update(seconds)
        run_checks(cursor, checks, report)
        step = time.perf_counter()
        if new != old:
            for statement in _KEEP:
                cursor.execute(statement)
            cursor.execute(
                "INSERT INTO billing_auditcheckpoint (watermark, entry_watermark, created_at, transactions_checked)"
                " VALUES (%s, %s, now(), %s)",
                [*new, transactions],
            )
        report.seconds["checkpoint"] = time.perf_counter() - step
    report.seconds["total"] = time.perf_counter() - started
    report.checkpoint = {"from": list(old), "to": list(new), "advanced": new != old}
    return report


def ledger_audit_incremental() -> AuditReport:
    """Every invariant of SPEC §2.1 over what was written since the last checkpoint, and every account's balance
    against its checkpoint; then the checkpoint moves up. On SQLite (no sessions to wait for), the full audit."""
    if connection.vendor != "postgresql":
        return ledger_audit()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [AUDIT_LOCK])
        if not cursor.fetchone()[0]:
            raise RuntimeError("another incremental ledger audit is running")
        try:
            old = _checkpoint_watermarks(cursor)
            safe = _safe_watermarks(cursor)
            new = old if safe is None else (max(old[0], safe[0]), max(old[1], safe[1]))
            return _audit_from(old, new, INCREMENTAL_CHECKS)
        finally:
            cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [AUDIT_LOCK])
