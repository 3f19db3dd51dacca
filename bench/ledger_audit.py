"""Benchmark: `audit_ledger` on a ledger of 1M runs (SPEC §2.1, §6), and the hourly incremental audit after
10,000 more (§3.3). Goals: the full audit ≤ 15 s; the incremental one ≤ 5 % of the full one's time.

    .venv/bin/python bench/ledger_audit.py [--runs 1000000] [--tenants 10000] [--new-runs 10000] [--repeat 2]
                                           [--keep | --reuse]

What it does:
1. creates a fresh PostgreSQL database (`dpp_bench_ledger`, on the server of BENCH_ADMIN_URL, default
   postgres://postgres@127.0.0.1:5432/postgres) and migrates it;
2. seeds it with set-based SQL (INSERT … SELECT generate_series, no Python loop): per tenant its accounts and a
   TOPUP (from funding shard i % 16); per run a Run row, a RESERVE (2 entries) and, for 99 runs in 100, a SETTLE
   — charge 0 (2 entries), partial (3 entries) or full (2 entries), in turn, charged to revenue shard r % 16 —
   the other runs stay QUEUED with their money held;
   the balances are then set to the sums of their entries, and each held account's count of open reservations to
   its tenant's runs still RESERVED. The two balance triggers (billing_entry_balanced,
   billing_transaction_balanced) are DISABLED while loading, because a deferred per-row trigger over millions of
   rows would dominate the load, and ENABLED again before the audit; foreign keys and CHECKs stay on;
3. VACUUM ANALYZE, then times `manage.py audit_ledger --json` (call_command: the command's own code path),
   prints its figures;
4. the incremental audit (billing.audit_incremental, what beat runs hourly): a first one, which reads everything
   and writes the first checkpoint; then `--new-runs` more runs are seeded the same way and the incremental audit
   is timed again (it reads only those, and every account); then one account's balance is tampered with, the
   incremental audit must name it, and the balance is put back; then an entry is appended to an old transaction
   (its account's balance moved to match) and the incremental audit must name that transaction — in a transaction
   rolled back after, the ledger being append-only. Ends with one line of JSON;
5. drops the database (unless --keep).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from io import StringIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import common  # noqa: E402

DB_NAME = "dpp_bench_ledger"
GOAL_SECONDS = 15.0
GOAL_INCREMENTAL_SHARE = 0.05  # of the full audit's time, in the same run
TOPUP_MICROS = 1_000_000_000  # 1000 USD per tenant: every reservation fits

# Run r (first..last: a first pass 1..R, then the new runs R+1..R+N) of tenant 1 + r % T: transaction ids
# T + 2r - 1 (RESERVE) and T + 2r (SETTLE); tenant i's TOPUP is i.
# reserved = 10_000 + (r % 50) × 1_000 micros; r % 100 = 0 → still QUEUED; else by r % 3: 0 → refunded (charge 0),
# 1 → partial (charge = minimum fee of 5_000), 2 → full (charge = reserved). The tenants, their accounts and
# TOPUPs are written by the first pass only (first = 1); the balances move by the sums of the pass's entries.
SEED_SQL = [
    """INSERT INTO dpp_tenant (id, name, status, created_at, low_balance_threshold_micros, low_balance_notified)
       SELECT 'bench-' || lpad(i::text, 6, '0'), 'bench tenant ' || i, 'ACTIVE', now(), 0, false
         FROM generate_series(1, %(tenants)s) i WHERE %(first)s = 1""",
    """INSERT INTO billing_account (id, tenant_id, kind, balance_micros, open_reservations, created_at)
       SELECT t.id || '/' || lower(k.kind), t.id, k.kind, 0, 0, now()
         FROM dpp_tenant t CROSS JOIN (VALUES ('AVAILABLE'), ('HELD')) k(kind) WHERE %(first)s = 1""",
    """CREATE TEMPORARY TABLE bench_runs AS
       SELECT r,
              md5('bench-run-' || r)::uuid AS run_id,
              'bench-' || lpad((1 + r %% %(tenants)s)::text, 6, '0') AS tenant_id,
              (10000 + (r %% 50) * 1000)::bigint AS reserved,
              CASE WHEN r %% 100 = 0 THEN NULL
                   WHEN r %% 3 = 0 THEN 0
                   WHEN r %% 3 = 1 THEN 5000
                   ELSE 10000 + (r %% 50) * 1000 END::bigint AS charge,
              now() - make_interval(secs => (%(last)s - r)) AS at
         FROM generate_series(%(first)s, %(last)s) r""",
    """INSERT INTO runs_run (id, tenant_id, pack_type, profile_version, status, money_state, finalize_stage, version,
                             idempotency_key, request_hash, inputs, timebox_sec, trace_id, reserved_micros,
                             minimum_fee_micros, charged_micros, reason_code, error_detail, result_key, result_sha256,
                             created_at, updated_at, completed_at, key_spend_counted)
       SELECT run_id, tenant_id, 'decision', 'bench',
              CASE WHEN charge IS NULL THEN 'QUEUED' WHEN charge = 0 THEN 'CANCELED' ELSE 'COMPLETED' END,
              CASE WHEN charge IS NULL THEN 'RESERVED' WHEN charge = 0 THEN 'REFUNDED' ELSE 'SETTLED' END,
              CASE WHEN charge IS NULL THEN NULL ELSE 'COMMITTED' END,
              CASE WHEN charge IS NULL THEN 0 ELSE 3 END,
              'bench-' || r, repeat('0', 64), '{}'::jsonb, 90, md5(r::text), reserved, 5000, charge,
              '', '', '', '', at, at, CASE WHEN charge IS NULL THEN NULL ELSE at END, false
         FROM bench_runs""",
    """INSERT INTO billing_ledgertransaction (id, kind, tenant_id, run_id, actor, reason, trace_id, created_at)
       SELECT id, 'TOPUP', 'bench-' || lpad(id::text, 6, '0'), NULL, 'bench', 'bench credit', '',
              now() - interval '400 days'
         FROM generate_series(1, %(tenants)s) id WHERE %(first)s = 1
       UNION ALL
       SELECT %(tenants)s + 2 * r - 1, 'RESERVE', tenant_id, run_id, '', '', md5(r::text), at FROM bench_runs
       UNION ALL
       SELECT %(tenants)s + 2 * r, 'SETTLE', tenant_id, run_id, '', '', md5(r::text), at
         FROM bench_runs WHERE charge IS NOT NULL
       ORDER BY 1""",
    """INSERT INTO billing_ledgerentry (transaction_id, account_id, amount_micros)
       SELECT id, account_id, amount FROM (
           SELECT i AS id, '@funding/' || lpad((i %% 16)::text, 2, '0') AS account_id, -%(topup)s::bigint AS amount,
                  1 AS leg
             FROM generate_series(1, %(tenants)s) i WHERE %(first)s = 1
           UNION ALL
           SELECT i, 'bench-' || lpad(i::text, 6, '0') || '/available', %(topup)s::bigint, 2
             FROM generate_series(1, %(tenants)s) i WHERE %(first)s = 1
           UNION ALL
           SELECT %(tenants)s + 2 * r - 1, leg.account_id, leg.amount, leg.n
             FROM bench_runs
            CROSS JOIN LATERAL (VALUES (tenant_id || '/available', -reserved, 1),
                                       (tenant_id || '/held', reserved, 2)) leg(account_id, amount, n)
           UNION ALL
           SELECT %(tenants)s + 2 * r, leg.account_id, leg.amount, leg.n
             FROM bench_runs
            CROSS JOIN LATERAL (VALUES (tenant_id || '/held', -reserved, 1),
                                       (tenant_id || '/available', reserved - charge, 2),
                                       ('@revenue/' || lpad((r %% 16)::text, 2, '0'), charge, 3))
                                       leg(account_id, amount, n)
            WHERE charge IS NOT NULL
       ) legs
       WHERE amount <> 0
       ORDER BY id, leg""",
    """UPDATE billing_account a SET balance_micros = a.balance_micros + s.total
         FROM (SELECT account_id, SUM(amount_micros) AS total FROM billing_ledgerentry
                WHERE transaction_id > %(floor)s GROUP BY account_id) s
        WHERE a.id = s.account_id""",
    """UPDATE billing_account a SET open_reservations = a.open_reservations + s.open
         FROM (SELECT tenant_id || '/held' AS id, COUNT(*) AS open FROM bench_runs
                WHERE charge IS NULL GROUP BY tenant_id) s
        WHERE a.id = s.id""",
    """SELECT setval(pg_get_serial_sequence('billing_ledgertransaction', 'id'),
                     (SELECT MAX(id) FROM billing_ledgertransaction))""",
    """SELECT setval(pg_get_serial_sequence('billing_ledgerentry', 'id'), (SELECT MAX(id) FROM billing_ledgerentry))""",
    "DROP TABLE bench_runs",
]

BALANCE_TRIGGERS = (
    ("billing_ledgerentry", "billing_entry_balanced"),
    ("billing_ledgertransaction", "billing_transaction_balanced"),
)


def _set_triggers(cursor: Any, *, enabled: bool) -> None:
    verb = "ENABLE" if enabled else "DISABLE"
    for table, trigger in BALANCE_TRIGGERS:
        cursor.execute(f"ALTER TABLE {table} {verb} TRIGGER {trigger}")


def _seed(runs: int, tenants: int, *, first: int = 1) -> dict[str, float]:
    """Runs `first` … `runs`; the first pass (first = 1) also the tenants, their accounts and credit."""
    from django.db import connection, transaction

    floor = 0 if first == 1 else tenants + 2 * (first - 1)  # the last transaction id of the runs before
    params = {"first": first, "last": runs, "tenants": tenants, "topup": TOPUP_MICROS, "floor": floor}
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with connection.cursor() as cursor:
        _set_triggers(cursor, enabled=False)
        try:
            with transaction.atomic():
                cursor.execute("SET LOCAL work_mem = '256MB'")
                for number, statement in enumerate(SEED_SQL, 1):
                    step = time.perf_counter()
                    cursor.execute(statement, params)
                    timings[f"seed_step_{number}"] = time.perf_counter() - step
        finally:
            _set_triggers(cursor, enabled=True)
        timings["seed"] = time.perf_counter() - started
        step = time.perf_counter()
        cursor.execute("VACUUM ANALYZE")
        timings["vacuum_analyze"] = time.perf_counter() - step
    return timings


def _table_sizes() -> dict[str, str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT relname, pg_size_pretty(pg_total_relation_size(oid)) FROM pg_class
                WHERE relname IN ('billing_ledgerentry', 'billing_ledgertransaction', 'billing_account', 'runs_run')
                ORDER BY relname"""
        )
        return dict(cursor.fetchall())


def _backend_cpu_seconds() -> float | None:
    """CPU time (user + system) of this connection's PostgreSQL backend, if the server runs on this machine.

    Unlike wall time it does not grow when other processes compete for the cores.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _audit() -> tuple[int, dict[str, Any], float, float | None]:
    """One `audit_ledger --json`: exit status, report, wall seconds, backend CPU seconds."""
    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = StringIO()
    cpu_before = _backend_cpu_seconds()
    started = time.perf_counter()
    try:
        call_command("audit_ledger", "--json", stdout=out)
        status = 0
    except CommandError as exc:
        status = exc.returncode
    elapsed = time.perf_counter() - started
    cpu_after = _backend_cpu_seconds()
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return status, json.loads(out.getvalue()), elapsed, cpu


def _incremental() -> tuple[dict[str, Any], float]:
    """One incremental audit (billing.audit_incremental): its report and wall seconds."""
    from billing.audit_incremental import ledger_audit_incremental

    started = time.perf_counter()
    report = ledger_audit_incremental()
    return report.as_dict(), time.perf_counter() - started


def _incremental_catches_a_tampered_balance() -> bool:
    from django.db import connection

    tampered = "UPDATE billing_account SET balance_micros = balance_micros + %s WHERE id = 'bench-000001/available'"
    with connection.cursor() as cursor:
        cursor.execute(tampered, [100])
    try:
        report, _ = _incremental()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(tampered, [-100])
    return report["violation_counts"].get("balance_equals_entries") == 1


def _incremental_catches_a_tampered_entry(tenants: int) -> bool:
    """An entry appended after the checkpoint to an old transaction (run 2's SETTLE, of the first history), its
    account's balance moved to match; all of it rolled back: the ledger refuses to delete an entry."""
    from django.db import connection, transaction

    settle = tenants + 4  # run 2: a full charge, on revenue shard 02
    with transaction.atomic(), connection.cursor() as cursor:
        _set_triggers(cursor, enabled=False)  # rolled back with the rest
        cursor.execute(
            "INSERT INTO billing_ledgerentry (transaction_id, account_id, amount_micros) VALUES (%s, %s, 100)",
            [settle, "@revenue/02"],
        )
        cursor.execute("UPDATE billing_account SET balance_micros = balance_micros + 100 WHERE id = '@revenue/02'")
        report, _ = _incremental()
        transaction.set_rollback(True)
    unbalanced = [v["subject"] for v in report["violations"] if v["invariant"] == "balanced_transaction"]
    return unbalanced == [str(settle)]


def _incremental_case(runs: int, tenants: int, new_runs: int) -> dict[str, Any]:
    first, first_seconds = _incremental()
    print(f"incremental audit, first (reads everything, writes the checkpoint): {first_seconds:.2f} s")
    timings = _seed(runs + new_runs, tenants, first=runs + 1)
    print(f"seeded {new_runs} new runs in {timings['seed']:.1f} s (VACUUM ANALYZE {timings['vacuum_analyze']:.1f} s)")
    report, seconds = _incremental()
    steps = ", ".join(f"{name} {value:.3f}" for name, value in report["seconds"].items())
    print(
        f"incremental audit after {new_runs} new runs: ok={report['ok']}, {report['transactions']} transactions, "
        f"{report['entries']} entries, {report['accounts']} accounts, {seconds:.3f} s; steps (s): {steps}"
    )
    caught = _incremental_catches_a_tampered_balance()
    print(f"incremental audit names a tampered balance: {caught}")
    caught_entry = _incremental_catches_a_tampered_entry(tenants)
    print(f"incremental audit names an entry appended to an old transaction after the checkpoint: {caught_entry}")
    return {
        "incremental_first_seconds": round(first_seconds, 2),
        "incremental_seconds": round(seconds, 3),
        "incremental_transactions": report["transactions"],
        "incremental_ok": report["ok"] and first["ok"] and caught and caught_entry,
        "incremental_catches_tampered_balance": caught,
        "incremental_catches_tampered_entry": caught_entry,
    }


def _load_average() -> float:
    return os.getloadavg()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--new-runs", type=int, default=10_000, help="runs added before the incremental audit")
    parser.add_argument("--repeat", type=int, default=2, help="audits to time (the first is reported)")
    parser.add_argument("--keep", action="store_true", help=f"keep the database {DB_NAME}")
    parser.add_argument("--reuse", action="store_true", help=f"time the audit on a kept {DB_NAME}, no re-seeding")
    args = parser.parse_args()

    with common.django_database(DB_NAME, keep=args.keep, reuse=args.reuse):
        from django.core.management import call_command

        if not args.reuse:
            step = time.perf_counter()
            call_command("migrate", verbosity=0)
            print(f"migrated {DB_NAME} in {time.perf_counter() - step:.1f} s")
            seed_timings = _seed(args.runs, args.tenants)
            print(
                f"seeded {args.runs} runs over {args.tenants} tenants in {seed_timings['seed']:.1f} s "
                f"(VACUUM ANALYZE {seed_timings['vacuum_analyze']:.1f} s); sizes: {_table_sizes()}"
            )

        load_before = _load_average()
        audits = [_audit() for _ in range(max(1, args.repeat))]
        status, report, seconds, cpu = audits[0]
        for number, (_, body, elapsed, backend_cpu) in enumerate(audits, 1):
            steps = ", ".join(f"{name} {value:.2f}" for name, value in body.get("seconds", {}).items())
            cpu_text = "" if backend_cpu is None else f", PostgreSQL backend CPU {backend_cpu:.2f} s"
            print(f"audit {number}: {elapsed:.2f} s wall{cpu_text}; steps (s): {steps}")
        print(
            f"audit_ledger: exit {status}, ok={report['ok']}, {report['transactions']} transactions, "
            f"{report['entries']} entries, {report['accounts']} accounts, {seconds:.2f} s (goal ≤ {GOAL_SECONDS:.0f} s)"
            f"; load average {load_before:.1f} before, {_load_average():.1f} after, on {os.cpu_count()} CPUs"
        )
        # A kept database is timed as it is: adding runs to it would change what --reuse times next.
        incremental: dict[str, Any] = {"incremental_seconds": 0.0, "incremental_ok": True}
        if not args.reuse:
            incremental = _incremental_case(args.runs, args.tenants, args.new_runs)
        share = incremental["incremental_seconds"] / seconds
        print(f"incremental / full: {100 * share:.2f} % (goal ≤ {100 * GOAL_INCREMENTAL_SHARE:.0f} %)")
        result = {
            "bench": "ledger_audit",
            "runs": args.runs,
            "tenants": args.tenants,
            "transactions": report["transactions"],
            "entries": report["entries"],
            "accounts": report["accounts"],
            "audit_seconds": round(seconds, 2),
            "audit_seconds_repeat": [round(elapsed, 2) for _, _, elapsed, _ in audits[1:]],
            "backend_cpu_seconds": None if cpu is None else round(cpu, 2),
            "load_average": round(load_before, 1),
            "goal_seconds": GOAL_SECONDS,
            "new_runs": args.new_runs,
            **incremental,
            "incremental_share": round(share, 4),
            "goal_incremental_share": GOAL_INCREMENTAL_SHARE,
            "ok": report["ok"] and status == 0 and incremental["incremental_ok"],
            "postgresql": common.server_version(),
            "cpus": os.cpu_count(),
        }
        return common.report(result)


if __name__ == "__main__":
    sys.exit(main())
