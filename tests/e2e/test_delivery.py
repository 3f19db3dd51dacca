"""Issue 5, item 2: at-least-once delivery is harmless — the same task delivered twice executes once.

The API publishes the run on commit; this test publishes it again with runs.dispatch.publish_run while a real
worker (two pool processes) runs, so both deliveries race for the lease. Exactly one wins: one execution, one
SETTLE; the other delivery finds the run no longer QUEUED and acknowledges it quietly.
"""

from __future__ import annotations

import json

from billing.models import LedgerTransaction
from runs.dispatch import publish_run
from runs.models import Run
from tests.e2e.harness import E2E, assert_money_balanced, redis_stack, settles_of
from tests.processes import wait_until

pytestmark = [*E2E]


def _log_lines(log: str, run_id: str, needle: str) -> list[str]:
    """The worker's JSON log lines about `run_id` whose message contains `needle`."""
    lines = []
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if run_id in record.get("message", "") and needle in record["message"]:
            lines.append(line)
    return lines


def test_same_task_delivered_twice_executes_once() -> None:
    with redis_stack() as stack:
        tenant = stack.tenant()
        api = stack.api(tenant)
        with stack.worker(concurrency=2) as worker:
            run_id = api.diagnostic(cost_usd="0.0200", sleep_ms=300)
            assert publish_run(Run.objects.get(pk=run_id))  # the second delivery of the same task
            body = api.wait(run_id)
            wait_until(lambda: _log_lines(worker.log(), run_id, "not QUEUED"), 10, what="second delivery consumed")
            log = worker.log()

        assert (body["status"], body["cost"]["used_usd"]) == ("COMPLETED", "0.0200")
        assert len(_log_lines(log, run_id, "leased")) == 1, log
        assert len(_log_lines(log, run_id, ": completed")) == 1, log
        (duplicate,) = _log_lines(log, run_id, "not QUEUED")
        run = Run.objects.get(pk=run_id)
        # Like every worker line about a run, the duplicate's carries the run's ids (from the message header).
        assert (json.loads(duplicate)["trace_id"], json.loads(duplicate)["run_id"]) == (run.trace_id, run_id)
        assert settles_of(run_id) == 1
        assert LedgerTransaction.objects.filter(run_id=run_id, kind=LedgerTransaction.Kind.RESERVE).count() == 1
        assert Run.objects.get(pk=run_id).version == 3  # leased, claimed, committed: nothing else moved it
        assert_money_balanced(stack, tenant, 20_000)
