"""Benchmark: settles per second with revenue in 16 shard accounts vs one shared row (SPEC §12). Goal: ≥ 4×.

    .venv/bin/python bench/hot_rows.py [--clients 32] [--processes 8] [--tenants 64] [--seconds 10]

What it does:
1. creates a fresh PostgreSQL database (`dpp_bench_hot_rows`, on the server of BENCH_ADMIN_URL, default
   postgres://postgres@127.0.0.1:5432/postgres; superuser needed), migrates it, and sets for that database only
   `commit_delay = 2000` (2 ms before each commit's WAL flush, the latency of a database across a network) and
   `commit_siblings = 1` (the delay applies whenever another transaction is open: always, at 32 clients);
2. onboards the tenants (plan unlimited) with credit, and reserves each client's runs beforehand with
   `ledger_reserve` (in batches; the sessions doing this are not the timed ones), each run of a random tenant;
3. for each variant — `sharded` (DPP_PLATFORM_SHARDS = 16) and `shared` (DPP_PLATFORM_SHARDS = 1: every settle
   on `@revenue/00`, the one hot row of before) — starts `--clients` clients (threads spread over `--processes`
   forked processes, each thread its own connection) that settle their runs with `ledger_settle`, one run per
   database transaction (the project's settle path), until `--seconds` have passed or their runs are settled;
4. checks the ledger with the audit (every invariant of §2.1), prints the figures, and ends with one JSON line
   holding "ratio" (sharded settles per second / shared); drops the database (unless --keep).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import common  # noqa: E402

DB_NAME = "dpp_bench_hot_rows"
GOAL_RATIO = 4.0
CHARGE_MICROS = 10_000  # each run reserves and is charged 0.0100
CREDIT_MICROS = 1_000_000 * 1_000_000  # 1M USD per tenant: every reservation fits
VARIANTS = (("sharded", 16), ("shared", 1))
# For the bench's database only, every session opened on it: a commit as slow as a replicated database's.
DATABASE_SETTINGS = {"commit_delay": "2000", "commit_siblings": "1"}

Job = tuple[str, uuid.UUID]  # (tenant id, run id) of a reserved run


def _onboard(tenants: int) -> list[str]:
    from billing.services import ledger_topup, tenant_onboard

    ids = []
    for number in range(tenants):
        tenant = tenant_onboard(tenant_id=f"hot-{number:03d}", plan_code="unlimited", actor="bench")
        ledger_topup(tenant=tenant, amount_micros=CREDIT_MICROS, actor="bench", reason="bench credit")
        ids.append(tenant.pk)
    return ids


def _reserve(tenant_ids: list[str], count: int, rng: random.Random) -> list[Job]:
    """`count` reserved runs of random tenants, reserved in batches (one transaction per 500)."""
    from django.db import transaction

    from billing.services import ledger_reserve

    jobs: list[Job] = [(rng.choice(tenant_ids), uuid.uuid4()) for _ in range(count)]
    for start in range(0, count, 500):
        with transaction.atomic():
            for tenant_id, run_id in jobs[start : start + 500]:
                ledger_reserve(tenant_id=tenant_id, run_id=run_id, amount_micros=CHARGE_MICROS, trace_id="bench")
    return jobs


def _settle_all(jobs: list[Job], start_at: float, deadline: float, out: list[Any]) -> None:
    """One client: settle its runs, one per transaction, from `start_at` until `deadline`."""
    from django.db import connection, transaction

    from billing.services import ledger_settle

    connection.ensure_connection()  # connect before the clock starts
    while time.time() < start_at:
        time.sleep(0.001)
    done, last = 0, start_at
    for tenant_id, run_id in jobs:
        if time.time() >= deadline:
            break
        with transaction.atomic():
            ledger_settle(
                tenant_id=tenant_id,
                run_id=run_id,
                reserved_micros=CHARGE_MICROS,
                charge_micros=CHARGE_MICROS,
                trace_id="bench",
            )
        done, last = done + 1, time.time()
    connection.close()
    out.append((done, last))


def _process(shards: int, client_jobs: list[list[Job]], start_at: float, seconds: float, queue: Any) -> None:
    """A forked process running one thread per client; reports (settled, time of its last settle) per client."""
    from django.conf import settings

    settings.DPP_PLATFORM_SHARDS = shards
    out: list[Any] = []
    threads = [
        threading.Thread(target=_settle_all, args=(jobs, start_at, start_at + seconds, out)) for jobs in client_jobs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put(out)


def _run_variant(shards: int, jobs: list[list[Job]], processes: int, seconds: float) -> dict[str, float]:
    from django.db import connections

    connections.close_all()  # no connection is inherited by the forked processes
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    start_at = time.time() + 2.0  # every client connected and waiting by then
    workers = [
        context.Process(target=_process, args=(shards, jobs[number::processes], start_at, seconds, queue))
        for number in range(processes)
    ]
    for worker in workers:
        worker.start()
    results = [item for _ in workers for item in queue.get()]
    for worker in workers:
        worker.join()
    settled = sum(done for done, _ in results)
    elapsed = max(last for _, last in results) - start_at
    return {"settled": settled, "seconds": round(elapsed, 2), "per_second": round(settled / elapsed, 1)}


def _revenue_rows() -> dict[str, int]:
    from billing.models import Account

    rows = Account.objects.filter(kind=Account.Kind.REVENUE).values_list("id", "balance_micros")
    return {pk: balance for pk, balance in rows if balance}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--processes", type=int, default=8, help="processes the clients' threads are spread over")
    parser.add_argument("--tenants", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="timed settling per variant")
    parser.add_argument("--runs-per-client", type=int, default=1000, help="runs reserved per client (sharded)")
    parser.add_argument("--keep", action="store_true", help=f"keep the database {DB_NAME}")
    args = parser.parse_args()

    admin_url = common.admin_url()
    common.recreate_database(admin_url, DB_NAME, settings=DATABASE_SETTINGS)
    try:
        return _bench(args, common.db_url(admin_url, DB_NAME))
    finally:
        if not args.keep:
            common.recreate_database(admin_url, DB_NAME, drop_only=True)


def _bench(args: argparse.Namespace, url: str) -> int:
    common.setup_django(url)
    from django.core.management import call_command
    from django.db import connection

    from billing.audit import ledger_audit

    step = time.perf_counter()
    call_command("migrate", verbosity=0)
    tenant_ids = _onboard(args.tenants)
    rng = random.Random(22)
    figures: dict[str, dict[str, float]] = {}
    for name, shards in VARIANTS:
        # The shared row settles a few hundred a second: reserving for it as much as for the shards is waste.
        per_client = args.runs_per_client if shards > 1 else max(1, args.runs_per_client // 3)
        runs = _reserve(tenant_ids, args.clients * per_client, rng)
        print(f"{name}: {len(runs)} runs reserved ({time.perf_counter() - step:.1f} s since start)")
        client_jobs = [runs[client :: args.clients] for client in range(args.clients)]
        figures[name] = _run_variant(shards, client_jobs, args.processes, args.seconds)
        print(f"{name} (DPP_PLATFORM_SHARDS={shards}): {figures[name]}; revenue rows moved: {len(_revenue_rows())}")
        step = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SHOW commit_delay")
        (commit_delay,) = cursor.fetchone()
        cursor.execute("SELECT current_setting('server_version')")
        (server_version,) = cursor.fetchone()
    report = ledger_audit()
    print(f"audit: ok={report.ok}, {report.transactions} transactions; commit_delay={commit_delay} (this database)")
    connection.close()
    ratio = figures["sharded"]["per_second"] / figures["shared"]["per_second"]
    result = {
        "bench": "hot_rows",
        "clients": args.clients,
        "processes": args.processes,
        "tenants": args.tenants,
        "commit_delay_us": int(commit_delay),
        "sharded_settles_per_s": figures["sharded"]["per_second"],
        "shared_settles_per_s": figures["shared"]["per_second"],
        "figures": figures,
        "audit_ok": report.ok,
        "goal_ratio": GOAL_RATIO,
        "load_average": round(os.getloadavg()[0], 1),
        "cpus": os.cpu_count(),
        "postgresql": server_version,
        "ratio": round(ratio, 2),
    }
    print(json.dumps(result))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
