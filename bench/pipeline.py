"""Benchmark: completed runs per second, end to end, through real celery workers (issue 5). Goal on Redis: ≥ 100/s.

    .venv/bin/python bench/pipeline.py [--brokers redis,sqs] [--runs-redis 2000] [--runs-sqs 500]
                                       [--workers 2] [--concurrency 1] [--prefetch N] [--keep]

What it does, per broker (each in a child process of its own, so that Django and Celery are set up for it):
1. a fresh PostgreSQL database per broker (`dpp_bench_pipeline` on the server of BENCH_ADMIN_URL, default
   postgres://postgres@127.0.0.1:5432/postgres), migrated; tenants on the `unlimited` plan with credit, one per
   500 runs (the plan allows 1,000 open runs per tenant; accepts go round-robin, as from many agents);
2. results: local files on Redis; S3 on moto's server on SQS (moto also serves SQS), as in production;
3. "drain": N diagnostic runs (sleep_ms 0, cost 0.0010) accepted through runs.services.run_accept (the API's own
   service, each publishing its task on commit) with no worker running, then `--workers` celery worker
   processes (`--concurrency` pool processes each) are started; throughput = N / (last completed_at − first
   started_at), from the database's own timestamps (worker start-up is not counted);
4. "live": with those workers running, N more runs are accepted as fast as one thread can; end to end =
   N / (last completed_at − first created_at): accept, publish, deliver, lease, execute, claim, upload, commit;
5. CPU: the workers' process groups (from /proc), the whole machine's busy share, and PostgreSQL commits per run.
Prints its figures and ends with one line of JSON. Other sessions may share the machine: load is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import common  # noqa: E402

DB_NAME = "dpp_bench_pipeline"
QUEUE = "dpp-bench-pipeline"
GOAL_REDIS_PER_S = 100.0
BUCKET = "dpp-bench-results"
REGION = "us-east-1"
RUN_BODY = {
    "pack_type": "diagnostic",
    "inputs": {"sleep_ms": 0, "cost_usd": "0.0010", "outcome": "succeed"},
    "reservation": {"max_cost_usd": "0.0100", "timebox_sec": 30},
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- measurements from /proc ----------------------------------------------------------------------------


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in process group `pgid`."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp … utime(11) stime(12)
                total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def pid_cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    return 0.0


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- one broker, in a child process with its environment ------------------------------------------------


def _pg_counters() -> tuple[int, int]:
    """(commits, sessions opened) of the benchmark database so far."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = current_database()")
        row = cursor.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _pg_backend_cpu() -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to the benchmark database (same machine)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        pids = [int(row[0]) for row in cursor.fetchall()]
    return {pid: pid_cpu_seconds(pid) for pid in pids}


RUNS_PER_TENANT = 500  # the `unlimited` plan allows 1,000 open runs per tenant


def _tenants(runs: int) -> list[tuple[Any, Any]]:
    """Enough tenants on the `unlimited` plan for `runs` open runs at once (like many agents), with credit."""
    return [_tenant() for _ in range(max(1, -(-runs // RUNS_PER_TENANT)))]


def _tenant() -> tuple[Any, Any]:
    from billing.selectors import plan_get
    from billing.services import ledger_topup, tenant_onboard

    tenant = tenant_onboard(tenant_id=f"bench-{uuid.uuid4().hex[:10]}", plan_code="unlimited", actor="bench")
    ledger_topup(tenant=tenant, amount_micros=1_000_000_000_000, actor="bench", reason="pipeline benchmark")
    return tenant, plan_get(tenant_id=tenant.pk)


def _submit(tenants: list[tuple[Any, Any]], count: int, batch: str, retries: dict[str, int]) -> float:
    """Accept `count` runs through runs.services (each publishes its task on commit); seconds taken.

    A database error (e.g. a deadlock) is retried with the same Idempotency-Key, as an agent would; counted.
    """
    from django.db import DatabaseError

    from runs.services import run_accept
    from runs.submission import submission_parse

    started = time.perf_counter()
    for i in range(count):
        tenant, plan = tenants[i % len(tenants)]
        submission = submission_parse(
            body=RUN_BODY,
            idempotency_key=f"bench-{batch}-{i:07d}",
            plan=plan,
            default_trace_id=uuid.uuid4().hex,
        )
        for attempt in range(5):
            try:
                run_accept(tenant=tenant, plan=plan, submission=submission)
                break
            except DatabaseError as exc:
                retries[str(exc).splitlines()[0]] = retries.get(str(exc).splitlines()[0], 0) + 1
                if attempt == 4:
                    raise
    return time.perf_counter() - started


def _wait_done(ids: set[str], timeout: float, reaper: dict[str, int]) -> None:
    """Until every run is COMPLETED. A reaper pass every 2 s, as beat would run it (counts kept in `reaper`)."""
    from reaper.services import reconcile_once
    from runs.models import Run, RunStatus

    deadline = time.monotonic() + timeout
    next_pass = time.monotonic() + 2
    while True:
        open_runs = Run.objects.filter(pk__in=ids).exclude(status=RunStatus.COMPLETED).count()
        if not open_runs:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{open_runs} of {len(ids)} runs not COMPLETED after {timeout} s")
        if time.monotonic() > next_pass:
            report = reconcile_once().as_dict()
            for key, value in report.items():
                if isinstance(value, int) and not isinstance(value, bool) and value:
                    reaper[key] = reaper.get(key, 0) + value
            next_pass = time.monotonic() + 2
        time.sleep(0.2)


def _batch_ids(batch: str) -> set[str]:
    from runs.models import Run

    keys = Run.objects.filter(idempotency_key__startswith=f"bench-{batch}-")
    return {str(pk) for pk in keys.values_list("pk", flat=True)}


def task_seconds(logs: list[str]) -> dict[str, float]:
    """Median and 90th percentile of the time a pool process spent in one task (celery's "succeeded in")."""
    times = sorted(
        float(line.split("succeeded in ", 1)[1].split("s:", 1)[0])
        for log in logs
        for line in log.splitlines()
        if "dpp.runs.execute[" in line and "succeeded in " in line
    )
    if not times:
        return {}
    return {
        "task_ms_p50": round(1000 * times[len(times) // 2], 2),
        "task_ms_p90": round(1000 * times[len(times) * 9 // 10], 2),
    }


def _window(ids: set[str]) -> dict[str, float]:
    from django.db.models import Max, Min

    from runs.models import Run

    agg = Run.objects.filter(pk__in=ids).aggregate(
        created=Min("created_at"), started=Min("started_at"), completed=Max("completed_at")
    )
    return {
        "from_created_s": (agg["completed"] - agg["created"]).total_seconds(),
        "from_started_s": (agg["completed"] - agg["started"]).total_seconds(),
    }


class Sampler:
    """CPU of the worker process groups and of the machine, and PostgreSQL commits, over a window."""

    def __init__(self, pgids: list[int]) -> None:
        self.pgids = pgids
        self.worker_cpu = sum(group_cpu_seconds(pgid) for pgid in pgids)
        self.machine = machine_cpu()
        self.commits, self.sessions = _pg_counters()
        self.pg_cpu = _pg_backend_cpu()
        self.started = time.perf_counter()

    def stop(self, runs: int) -> dict[str, float]:
        wall = time.perf_counter() - self.started
        worker_cpu = sum(group_cpu_seconds(pgid) for pgid in self.pgids) - self.worker_cpu
        busy, total = machine_cpu()
        machine_busy = (busy - self.machine[0]) / max(1, total - self.machine[1])
        # A backend born in the window counts whole (its life is mostly the window).
        commits, sessions = _pg_counters()
        pg_cpu = sum(cpu - self.pg_cpu.get(pid, 0.0) for pid, cpu in _pg_backend_cpu().items())
        return {
            "wall_s": round(wall, 2),
            "worker_cpu_s": round(worker_cpu, 2),
            "worker_cpu_ms_per_run": round(1000 * worker_cpu / runs, 2),
            "pg_cpu_ms_per_run": round(1000 * pg_cpu / runs, 2),
            "machine_busy_pct": round(100 * machine_busy, 1),
            "pg_commits_per_run": round((commits - self.commits) / runs, 2),
            "pg_sessions_opened": sessions - self.sessions,
        }


def __getattr__(name: str) -> Any:
    """`celery -A bench.pipeline worker`: the project's app with the settings of BENCH_CELERY_CONF on top.

    How a proposed change of config/celery.py is measured without editing it (e.g. {"CELERY_DB_REUSE_MAX": 100}).
    """
    if name == "app":
        from config.celery import app

        app.conf.update(json.loads(os.environ.get("BENCH_CELERY_CONF") or "{}"))
        return app
    raise AttributeError(name)


@contextlib.contextmanager
def _workers(count: int, concurrency: int, prefetch: int | None) -> Iterator[list[Any]]:
    from tests.processes import celery_worker

    extra = ("--prefetch-multiplier", str(prefetch)) if prefetch else ()
    app = "bench.pipeline" if os.environ.get("BENCH_CELERY_CONF") else "config"
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(
                celery_worker(dict(os.environ), concurrency=concurrency, name=f"bench{i}", extra_args=extra, app=app)
            )
            for i in range(count)
        ]
        yield procs


def phase(args: argparse.Namespace) -> dict[str, Any]:
    """Drain then live, for the broker this process was started for."""
    import django

    django.setup()
    from django.conf import settings
    from django.db.models import Sum

    from runs.models import Run

    tenants = _tenants(args.runs)
    runs = args.runs
    figures: dict[str, Any] = {"broker": args.phase, "runs": runs, "storage": settings.DPP_STORAGE}
    retries: dict[str, int] = {}
    reaper: dict[str, int] = {}
    figures["submit_s"] = round(_submit(tenants, runs, f"{args.phase}-drain", retries), 2)
    figures["submit_per_s"] = round(runs / figures["submit_s"], 1)
    drain_ids = _batch_ids(f"{args.phase}-drain")
    with _workers(args.workers, args.concurrency, args.prefetch) as procs:
        sampler = Sampler([proc.pid for proc in procs])
        _wait_done(drain_ids, args.timeout, reaper)
        figures["drain_cpu"] = sampler.stop(runs)
        window = _window(drain_ids)
        figures["drain_s"] = round(window["from_started_s"], 2)
        figures["drain_per_s"] = round(runs / window["from_started_s"], 1)

        sampler = Sampler([proc.pid for proc in procs])
        figures["live_submit_s"] = round(_submit(tenants, runs, f"{args.phase}-live", retries), 2)
        live_ids = _batch_ids(f"{args.phase}-live")
        _wait_done(live_ids, args.timeout, reaper)
        figures["live_cpu"] = sampler.stop(runs)
        window = _window(live_ids)
        figures["live_s"] = round(window["from_created_s"], 2)
        figures["live_per_s"] = round(runs / window["from_created_s"], 1)
        logs = [proc.log() for proc in procs]
        figures.update(task_seconds(logs))
        figures["worker_log_lines_deadlock"] = sum(
            "deadlock detected" in line for log in logs for line in log.splitlines()
        )
    figures["accept_retries"] = retries
    figures["reaper_actions"] = reaper
    charged = Run.objects.filter(tenant__in=[t for t, _ in tenants]).aggregate(total=Sum("charged_micros"))["total"]
    assert charged == 2 * runs * 1_000, charged  # every run charged exactly its 0.0010, once
    return figures


# --- the orchestrator ------------------------------------------------------------------------------------


def _env(broker: str, var_dir: Path, moto: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": common.db_url(common.admin_url(), DB_NAME),
        "DPP_TASK_QUEUE": QUEUE,
        "DPP_VAR_DIR": str(var_dir),
        "DPP_LOCAL_STORAGE_DIR": str(var_dir / "results"),
        "REDIS_URL": "",
        "DPP_LOG_LEVEL": "info",
        # A finalize stuck by a worker's failed commit is rolled forward by the bench's reaper passes soon.
        "DPP_FINALIZE_STALE_S": "2",
        "PYTHONUNBUFFERED": "1",
    }
    if broker == "redis":
        env["CELERY_BROKER_URL"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
        env["DPP_STORAGE"] = "local"
    else:
        assert moto is not None
        from tests.processes import moto_sqs_s3_env

        env.update(moto_sqs_s3_env(moto, bucket=BUCKET, region=REGION))
    return env


def _purge_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.delete(QUEUE)


@contextlib.contextmanager
def _moto(var_dir: Path) -> Iterator[str]:
    import boto3
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["DPP_VAR_DIR"] = str(var_dir)
    django.setup()  # tests.processes logs under settings.VAR_DIR
    from tests.processes import moto_server

    with moto_server() as url:
        boto3.client(
            "s3",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id="dummy",
            aws_secret_access_key="dummy",  # noqa: S106
        ).create_bucket(Bucket=BUCKET)
        yield url


def _run_broker(broker: str, args: argparse.Namespace, var_dir: Path) -> dict[str, Any]:
    runs = args.runs_redis if broker == "redis" else args.runs_sqs
    child = [sys.executable, __file__, "--phase", broker, "--runs", str(runs), "--workers", str(args.workers)]
    child += ["--concurrency", str(args.concurrency), "--timeout", str(args.timeout)]
    if args.prefetch:
        child += ["--prefetch", str(args.prefetch)]
    # A fresh database per broker: one broker's history must not weigh on the next one's reaper passes.
    common.migrated_database(DB_NAME, DPP_VAR_DIR=str(var_dir))
    with contextlib.ExitStack() as stack:
        moto = stack.enter_context(_moto(var_dir)) if broker == "sqs" else None
        env = _env(broker, var_dir, moto)
        env["BENCH_CELERY_CONF"] = args.celery_conf
        if broker == "redis":
            _purge_redis(env["CELERY_BROKER_URL"])
        done = subprocess.run(child, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{broker} phase failed:\n{done.stdout}\n{done.stderr[-5000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _print(figures: dict[str, Any]) -> None:
    b, drain, live = figures, figures["drain_cpu"], figures["live_cpu"]
    print(f"{b['broker']} ({b['storage']} results), {b['runs']} runs per phase; accept {b['submit_per_s']} runs/s")
    print(
        f"  drain: {b['drain_per_s']} completed/s ({b['drain_s']} s); CPU per run: workers "
        f"{drain['worker_cpu_ms_per_run']} ms, PostgreSQL backends {drain['pg_cpu_ms_per_run']} ms; machine "
        f"{drain['machine_busy_pct']} % busy; {drain['pg_commits_per_run']} PostgreSQL commits/run; "
        f"{drain['pg_sessions_opened']} PostgreSQL sessions opened"
    )
    print(
        f"  live (accept and execute at once): {b['live_per_s']} completed/s end to end ({b['live_s']} s); "
        f"machine {live['machine_busy_pct']} % busy; time in the pool per task p50 {b.get('task_ms_p50')} ms,"
        f" p90 {b.get('task_ms_p90')} ms"
    )
    if b["accept_retries"] or b["worker_log_lines_deadlock"] or b["reaper_actions"]:
        print(
            f"  trouble: accepts retried {b['accept_retries']}; worker log lines with a deadlock "
            f"{b['worker_log_lines_deadlock']}; reaper actions {b['reaper_actions']}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", default="redis,sqs")
    parser.add_argument("--runs-redis", type=int, default=2000)
    parser.add_argument("--runs-sqs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="celery worker processes")
    parser.add_argument("--concurrency", type=int, default=1, help="pool processes per worker")
    parser.add_argument("--prefetch", type=int, default=0, help="--prefetch-multiplier (0: config/celery.py's)")
    parser.add_argument(
        "--celery-conf",
        default="",
        help='JSON of Celery settings on top of config/celery.py, e.g. {"CELERY_DB_REUSE_MAX": 100}',
    )
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args)))
        return 0

    import tempfile

    print(f"load average before: {load_average()} (2 cores; other sessions may share the machine)")
    var_dir = Path(tempfile.mkdtemp(prefix="dpp-bench-pipeline-"))
    results: dict[str, Any] = {
        "bench": "pipeline",
        "workers": args.workers,
        "concurrency": args.concurrency,
        "prefetch_multiplier": args.prefetch or "config",
        "celery_conf": json.loads(args.celery_conf or "{}"),
    }
    try:
        for broker in args.brokers.split(","):
            figures = _run_broker(broker, args, var_dir)
            _print(figures)
            results[broker] = figures
    finally:
        if not args.keep:
            common.recreate_database(common.admin_url(), DB_NAME, drop_only=True)
    results["load_average_after"] = load_average()
    if "redis" in results:
        results["goal_redis_per_s"] = GOAL_REDIS_PER_S
        results["ok"] = results["redis"]["drain_per_s"] >= GOAL_REDIS_PER_S
    print(f"load average after: {results['load_average_after']}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
