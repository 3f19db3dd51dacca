"""Benchmark: webhook deliveries (SPEC §10). Goals: ≥ 200 deliveries/s with 2 worker processes on the webhooks
queue, and p50 from a run's commit to its delivery arriving ≤ 50 ms at low load.

    .venv/bin/python bench/webhooks.py [--deliveries 2000] [--latency-runs 200] [--workers 2] [--concurrency 1]

What it does:
1. a fresh PostgreSQL database (`dpp_bench_webhooks` on the server of BENCH_ADMIN_URL), migrated; the Redis broker
   of BENCH_REDIS_URL (default redis://127.0.0.1:6379/15) with queues of the bench's own; a tenant on the
   `unlimited` plan with one endpoint for `run.completed` at a local threaded receiver on 127.0.0.1 (allowed by
   DPP_URL_EXTRA_ALLOWED_NETWORKS; http by DPP_URL_ALLOW_HTTP), answering 200 at once;
2. "drain": `--deliveries` events written through the outbox (`webhook_event_record`, each in its own
   transaction, as a run's end writes it, published on commit) with no worker running; then `--workers` celery
   worker processes (`--concurrency` pool processes each) on the webhooks queue only start; deliveries/s =
   N / (last arrival − first arrival) at the receiver (worker start-up is not counted);
3. "latency": with those workers up, `--latency-runs` runs one after the other, each accepted, leased, claimed
   and committed through the runs services (the event and its delivery rows written in the commit's
   transaction); the time from the event's `created_at` (stamped inside that transaction, so the commit itself
   is counted) to the request's arrival at the receiver; the next run starts once the delivery arrived (low load).
Prints its figures and ends with one line of JSON. Other sessions may share the machine: load is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: `bench` and the project
from bench import common
from bench.pipeline import group_cpu_seconds, load_average

DB_NAME = "dpp_bench_webhooks"
QUEUE = "dpp-bench-webhooks"
GOAL_P50_MS = 50
GOAL_PER_S = 200


def _environment(var_dir: Path) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DPP_TASK_QUEUE": QUEUE,
        "DPP_WEBHOOK_QUEUE": f"{QUEUE}-webhooks",
        "CELERY_BROKER_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
        "REDIS_URL": "",
        "DPP_VAR_DIR": str(var_dir),
        "DPP_LOCAL_STORAGE_DIR": str(var_dir / "results"),
        "DPP_STORAGE": "local",
        "DPP_URL_ALLOW_HTTP": "1",
        "DPP_URL_EXTRA_ALLOWED_NETWORKS": "127.0.0.1/32",
        "DPP_LOG_LEVEL": "info",  # the workers' "ready" line is at info
        "PYTHONUNBUFFERED": "1",
    }


def _purge() -> None:
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(settings.DPP_TASK_QUEUE, settings.DPP_WEBHOOK_QUEUE)


@contextlib.contextmanager
def _workers(count: int, concurrency: int, pool: str) -> Iterator[list[Any]]:
    from django.conf import settings

    from tests.processes import celery_worker

    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                celery_worker(
                    dict(os.environ),
                    concurrency=concurrency,
                    name=f"bench-webhooks{i}",
                    queues=(settings.DPP_WEBHOOK_QUEUE,),
                    extra_args=("--pool", pool),
                )
            )
            for i in range(count)
        ]


def _wait_arrivals(receiver: Any, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(receiver.received) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(receiver.received)} of {count} deliveries arrived within {timeout} s")
        time.sleep(0.001)


def _drain_events(tenant_id: str, count: int, data: dict[str, Any]) -> float:
    """`count` events through the outbox, each in its own transaction; seconds taken."""
    from django.db import transaction

    from dpp.webhooks.outbox import webhook_event_record

    started = time.perf_counter()
    for _ in range(count):
        with transaction.atomic():
            webhook_event_record(tenant_id=tenant_id, event_type="run.completed", data=data)
    return time.perf_counter() - started


def _latencies_ms(persona: Any, receiver: Any, runs: int) -> list[float]:
    """Commit → arrival of each run's delivery, one run at a time."""
    from dpp.models import WebhookEvent
    from runs.services import run_commit
    from tests.helpers.states import claimed_run, store_envelope

    latencies = []
    for _ in range(runs):
        claimed, _ = claimed_run(persona)
        stored = store_envelope(claimed, cost_micros=1_000)
        before = len(receiver.received)
        assert run_commit(run=claimed, stored=stored)
        _wait_arrivals(receiver, before + 1, timeout=30)
        arrived = receiver.received[before]
        event = WebhookEvent.objects.get(pk=arrived.headers["webhook-id"])
        latencies.append(1000 * (arrived.at - event.created_at.timestamp()))
    return latencies


def _pct(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0], 2)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Drain, then latency, on the configured database (Django set up)."""
    from dpp.models import WebhookDelivery
    from tests.dpp.webhook_receiver import Receiver
    from tests.helpers.personas import make_persona

    _purge()
    receiver = Receiver()
    try:
        persona = make_persona(plan="unlimited", credit_micros=10**12, prefix="bench")
        hook = {"url": receiver.url(), "events": ["run.completed"]}
        assert persona.client.post("/v1/webhook-endpoints", hook, format="json").status_code == 201
        data = {"run_id": "bench", "status": "COMPLETED", "padding": "x" * 600}  # about a run object's size
        figures: dict[str, Any] = {"deliveries": args.deliveries}
        figures["outbox_write_s"] = round(_drain_events(persona.tenant.pk, args.deliveries, data), 2)
        with _workers(args.workers, args.concurrency, args.pool) as procs:
            cpu = sum(group_cpu_seconds(proc.pid) for proc in procs)
            _wait_arrivals(receiver, args.deliveries, timeout=args.timeout)
            window = receiver.received[-1].at - receiver.received[0].at
            figures["drain_s"] = round(window, 2)
            figures["deliveries_per_s"] = round((args.deliveries - 1) / window, 1)
            figures["worker_cpu_ms_per_delivery"] = round(
                1000 * (sum(group_cpu_seconds(proc.pid) for proc in procs) - cpu) / args.deliveries, 2
            )
            latencies = _latencies_ms(persona, receiver, args.latency_runs)
        figures["latency_runs"] = args.latency_runs
        figures["commit_to_delivery_p50_ms"] = round(statistics.median(latencies), 2)
        figures["p90"] = _pct(latencies, 90)
        figures["p99"] = _pct(latencies, 99)
        figures["received"] = len(receiver.received)
        expected, delivered = args.deliveries + args.latency_runs, WebhookDelivery.objects.filter(status="delivered")
        deadline = time.monotonic() + 30  # the last arrival's outcome is recorded just after it arrived
        while delivered.count() < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        figures["delivered_rows"] = delivered.count()
    finally:
        receiver.close()
        _purge()
    assert figures["delivered_rows"] == figures["received"] == expected, figures  # every one, sent and recorded once
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2, help="celery worker processes on the webhooks queue")
    parser.add_argument("--concurrency", type=int, default=4, help="pool threads (or processes) per worker")
    parser.add_argument("--pool", default="threads", choices=("prefork", "threads"), help="the workers' pool")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args()
    print(f"load average before: {load_average()} ({os.cpu_count()} cores; other sessions may share the machine)")
    var_dir = Path(tempfile.mkdtemp(prefix="dpp-bench-webhooks-"))
    os.environ.update(_environment(var_dir))
    common.setup_django(common.migrated_database(DB_NAME))
    try:
        figures = measure(args)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            common.recreate_database(common.admin_url(), DB_NAME, drop_only=True)
    results = {"bench": "webhooks", "workers": args.workers, "pool": args.pool, "concurrency": args.concurrency}
    results |= figures
    results |= {"goal_p50_ms": GOAL_P50_MS, "goal_per_s": GOAL_PER_S, "load_average": load_average()}
    results["cpus"] = os.cpu_count()
    results["ok"] = results["commit_to_delivery_p50_ms"] <= GOAL_P50_MS and results["deliveries_per_s"] >= GOAL_PER_S
    for name, value in figures.items():
        print(f"{name:>28}: {value}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
