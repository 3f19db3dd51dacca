"""The reaper running for real (`celery beat` every second) beside a healthy pipeline changes nothing.

Runs that last longer than their lease (DPP_LEASE_S=3, runs of 4.5 s) stay alive only because the heartbeat
extends the lease while the reaper keeps looking for expired ones; quick runs queued past DPP_REDRIVE_AFTER_S
may be re-published (a duplicate delivery) and must still execute once. In the end every run is COMPLETED
at exactly its cost, with one SETTLE each, and the reaper raised no audit flag.
"""

from __future__ import annotations

import time
from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext

from reaper.models import AuditFlag
from reaper.services import reconcile_once
from reaper.tasks import reconcile
from runs.models import Run
from tests.e2e.harness import E2E, assert_money_balanced, fast_env, purge_queues, redis_stack, settles_of
from tests.helpers.money import USD
from tests.helpers.personas import make_persona
from tests.helpers.states import ago, completed_run, expired_lease, queued_run
from tests.processes import celery_beat, celery_worker

pytestmark = [*E2E]


def test_reaper_beside_a_healthy_pipeline_changes_nothing() -> None:
    with redis_stack() as stack:
        tenant = stack.tenant()
        api = stack.api(tenant)
        with stack.worker(concurrency=3) as worker, celery_beat(stack.env):
            long_runs = [api.diagnostic(sleep_ms=4_500, cost_usd="0.0200") for _ in range(2)]
            quick_runs = [api.diagnostic(sleep_ms=200, cost_usd="0.0010") for _ in range(12)]
            bodies = [api.wait(run_id, timeout=40) for run_id in [*long_runs, *quick_runs]]
            log = worker.log()

        assert [(body["status"], body["cost"]["used_usd"]) for body in bodies] == [("COMPLETED", "0.0200")] * 2 + [
            ("COMPLETED", "0.0010")
        ] * 12
        reconciles = log.count("Task dpp.reaper.reconcile[") // 2  # "received" and "succeeded" lines
        assert reconciles >= 3, log[-3000:]  # the reaper ran while the long runs outlived their lease
        assert "reaper: expire_lease" not in log
        assert AuditFlag.objects.count() == 0
        for run in Run.objects.filter(tenant_id=tenant.tenant_id):
            assert settles_of(str(run.pk)) == 1
            assert run.version == 3, run  # leased, claimed, committed: no other transition won
        assert_money_balanced(stack, tenant, 2 * 20_000 + 12 * 1_000)


OLD_RUNS = 600
RECENT_RUNS = 20


def _rows_read_from(table: str, queries: list[dict[str, str]]) -> int:
    """The most rows any plan node read from `table`, over the SELECTs of `queries` (re-run under EXPLAIN ANALYZE)."""
    most = 0

    def walk(node: dict[str, Any]) -> None:
        nonlocal most
        if node.get("Relation Name") == table:
            most = max(most, int(node["Actual Rows"]) * int(node.get("Actual Loops", 1)))
        for child in node.get("Plans", []):
            walk(child)

    with connection.cursor() as cursor:
        for query in queries:
            if query["sql"].lstrip().upper().startswith("SELECT"):
                cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {query['sql']}")
                walk(cursor.fetchone()[0][0]["Plan"])
    return most


def test_a_reaper_pass_reads_no_settled_history() -> None:
    """SPEC §3.3: a pass costs what it acts on, not the size of history — old SETTLEs must not be read."""
    persona = make_persona(plan="unlimited", credit_micros=100 * USD, prefix="history")
    with ago(2 * 3600):
        for _ in range(OLD_RUNS):
            completed_run(persona, max_cost_usd="0.0100", cost_micros=1_000)
    for _ in range(RECENT_RUNS):  # what the pass must look at: runs settled in its window
        completed_run(persona, max_cost_usd="0.0100", cost_micros=1_000)
    purge_queues()  # the tasks run_accept published: no worker of this test consumes them
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE runs_run; ANALYZE billing_ledgertransaction")
    with CaptureQueriesContext(connection) as captured:
        report = reconcile_once()
    assert report.as_dict()["audit_flags"] == 0

    read = _rows_read_from("billing_ledgertransaction", captured.captured_queries)
    assert read <= 2 * RECENT_RUNS, f"one pass read {read} ledger transactions; {OLD_RUNS} of them are hours old"


def test_a_reaper_pass_is_not_held_behind_a_backlog_of_runs() -> None:
    """The reaper's tasks have their own queue, which the workers consume beside the runs'. Found from outside:
    with one queue, beat's pass waited behind every queued run (and expired unrun after its interval), so a run
    whose worker had died kept its money held until the whole backlog had drained."""
    env = fast_env(DPP_STORAGE="local")
    purge_queues()
    tenant = make_persona(plan="unlimited", credit_micros=10 * USD)
    orphan = expired_lease(tenant)  # its worker "died": leased, never finished
    backlog = [queued_run(tenant, inputs={"sleep_ms": 500, "cost_usd": "0.0010"}).pk for _ in range(20)]
    with celery_worker(env, concurrency=1, name="backlogged"):
        reconcile.apply_async()  # what beat sends: routed to the reaper's queue
        deadline = time.monotonic() + 60
        while Run.objects.get(pk=orphan.run.pk).status != "FAILED" and time.monotonic() < deadline:
            time.sleep(0.1)
        still_queued = Run.objects.filter(pk__in=backlog, status="QUEUED").count()
    assert Run.objects.get(pk=orphan.run.pk).reason_code == "WORKER_TIMEOUT"
    # Reaped while most of the 10 s backlog still waited (one pool process, 0.5 s a run), not after it drained.
    assert still_queued >= 10, still_queued
