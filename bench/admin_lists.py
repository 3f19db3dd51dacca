"""Benchmark: every finance admin list at 1,000,000 runs (SPEC §13). Goal: each page ≤ 300 ms.

    .venv/bin/python bench/admin_lists.py [--runs 1000000] [--tenants 10000] [--repeat 3] [--keep | --reuse]

What it does:
1. creates a fresh PostgreSQL database (`dpp_bench_admin`, on the server of BENCH_ADMIN_URL, default
   postgres://postgres@127.0.0.1:5432/postgres), migrates it and seeds it with the set-based SQL of
   bench/ledger_audit.py (runs one second apart, ending now: about 86,400 a day over the last 11.6 days; a
   RESERVE and, for 99 in 100, a SETTLE each), then VACUUM ANALYZE; then closes the ended days of the activity page
   as beat's hourly pass does (runs.activity.close_days: idempotent, so also on a reused database);
2. logs a `finance` user in with Django's test client and times each admin page (the whole request: filters,
   sort, page query, count, totals, template), once to warm up, then `--repeat` times: the median is reported;
   the pages include sorted-by-charge and date-filtered (yesterday, a custom 3-day range, this month) variants;
3. prints the figures, ends with one line of JSON, and drops the database (unless --keep).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.ledger_audit import _seed, _table_sizes  # noqa: E402  (the same seeding, one source)

DB_NAME = os.environ.get("BENCH_DB_NAME", "dpp_bench_admin")  # another name for benchmarks side by side
GOAL_MS = 300.0


def _pages() -> dict[str, str]:
    """Name → admin URL. Column numbers of `o=` count list_display from 0, no action checkbox here (runs: 5 reserved,
    6 charged; ledger: 9 charged; tenants: 4 available)."""
    today = dt.datetime.now(dt.UTC).date()
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    three_days = f"created_at__range__gte={(today - dt.timedelta(days=4)).isoformat()}"
    three_days += f"&created_at__range__lte={(today - dt.timedelta(days=2)).isoformat()}"
    day = f"created_at__range__gte={yesterday}&created_at__range__lte={yesterday}"
    month = f"created_at__range__gte={today.replace(day=1).isoformat()}&created_at__range__lte={today.isoformat()}"
    runs, ledger = "/admin/runs/run/", "/admin/billing/ledgertransaction/"
    return {
        "index": "/admin/",
        "activity_30_days": f"{runs}activity/",
        "runs": runs,
        "runs_by_charge": f"{runs}?o=-6",
        "runs_by_charge_ascending": f"{runs}?o=6",
        "runs_by_reserved": f"{runs}?o=-5",
        "runs_yesterday": f"{runs}?{day}",
        "runs_yesterday_by_charge": f"{runs}?{day}&o=-6",
        "runs_custom_3_days_by_charge": f"{runs}?{three_days}&o=-6",
        "runs_this_month_by_charge": f"{runs}?{month}&o=-6",
        "runs_of_a_tenant_by_charge": f"{runs}?tenant=bench-000042&o=-6",
        "runs_past_their_lease": f"{runs}?lease=expired",
        "ledger": ledger,
        "ledger_by_charge": f"{ledger}?o=-9",
        "ledger_yesterday": f"{ledger}?{day}",
        "ledger_yesterday_by_charge": f"{ledger}?{day}&o=-9",
        "ledger_of_a_tenant_by_charge": f"{ledger}?tenant=bench-000042&o=-9",
        "ledger_entries": "/admin/billing/ledgerentry/",
        "accounts": "/admin/billing/account/",
        "tenants": "/admin/dpp/tenant/",
        "tenants_by_available": "/admin/dpp/tenant/?o=-4",
        "tenants_search": "/admin/dpp/tenant/?q=TENANT+4242",
        "audit_flags": "/admin/reaper/auditflag/",
        "api_keys": "/admin/dpp/apikey/",
    }


def _finance_client() -> Any:
    from django.contrib.auth.models import Group, User
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test client's host and response.context
    user, _ = User.objects.get_or_create(username="bench-finance", defaults={"is_staff": True})
    user.groups.add(Group.objects.get(name="finance"))
    client = Client()
    client.force_login(user)
    return client


def _time_page(client: Any, url: str, repeat: int) -> tuple[float, list[float]]:
    timings = []
    for attempt in range(repeat + 1):
        started = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"{url}: HTTP {response.status_code}")
        if attempt:  # the first one warms caches up
            timings.append(elapsed)
    return statistics.median(timings), timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help=f"keep the database {DB_NAME}")
    parser.add_argument("--reuse", action="store_true", help=f"time the pages on a kept {DB_NAME}, no re-seeding")
    parser.add_argument("--only", help="time only the pages whose name contains this")
    args = parser.parse_args()

    with common.django_database(DB_NAME, keep=args.keep, reuse=args.reuse):
        from django.core.management import call_command

        from runs.activity import close_days

        if not args.reuse:
            call_command("migrate", verbosity=0)
            seeded = _seed(args.runs, args.tenants)
            print(f"seeded {args.runs} runs over {args.tenants} tenants in {seeded['seed']:.1f} s; {_table_sizes()}")
        started = time.perf_counter()
        closed = close_days()  # what beat's hourly pass has done by now
        print(f"closed {closed} ended days of the activity page in {time.perf_counter() - started:.1f} s")
        client = _finance_client()
        load_before = os.getloadavg()[0]
        results: dict[str, float] = {}
        for name, url in _pages().items():
            if args.only and args.only not in name:
                continue
            median, timings = _time_page(client, url, args.repeat)
            results[name] = round(median, 1)
            flag = "ok" if median <= GOAL_MS else "OVER"
            print(f"{name:32} {median:8.1f} ms  ({', '.join(f'{t:.0f}' for t in timings)})  {flag}  {url}")
        summary = {
            "bench": "admin_lists",
            "runs": args.runs,
            "tenants": args.tenants,
            "median_ms": results,
            "slowest_ms": max(results.values(), default=0.0),
            "goal_ms": GOAL_MS,
            "ok": all(value <= GOAL_MS for value in results.values()),
            "load_average": round(load_before, 1),
            "cpus": os.cpu_count(),
            "postgresql": common.server_version(),
        }
        return common.report(summary)


if __name__ == "__main__":
    sys.exit(main())
