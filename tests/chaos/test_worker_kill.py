"""Issue 5, item 3: SIGKILL a real worker's process group mid-run, with no fault point at all.

- Redis and SQS: the run it was executing ends terminal through the reaper (its lease expires: FAILED /
  WORKER_TIMEOUT, minimum fee — the broker would redeliver it only after its visibility timeout, minutes away,
  and that copy would find nothing to lease); the run queued behind it is not lost: a new worker completes it.
- The filesystem broker (embedded mode): a task the worker had taken off the queue folder but not yet started
  dies with it — its file is gone and its run stays QUEUED. The reaper (here a real `celery beat`, executed by
  the new worker) re-drives it after DPP_REDRIVE_AFTER_S and the new worker completes it.
Money balances in every case.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dpp.money import minimum_fee
from runs.models import Run
from tests.e2e.harness import (
    E2E,
    TERMINAL,
    Stack,
    assert_money_balanced,
    embedded_stack,
    reconcile_until,
    redis_stack,
    settles_of,
    sqs_stack,
)
from tests.processes import celery_beat, child_pids, manage, procfile_process, wait_until

pytestmark = [*E2E, pytest.mark.chaos, pytest.mark.usefixtures("fast_reaper")]

RESERVED = 50_000  # every run here reserves "0.0500"
COST = 12_300  # and succeeds at "0.0123"


@pytest.fixture(params=["redis", "sqs"])
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with redis_stack() if request.param == "redis" else sqs_stack() as made:
        yield made


def test_sigkill_mid_run_is_finished_by_the_reaper(stack: Stack) -> None:
    tenant = stack.tenant()
    api = stack.api(tenant)
    with stack.worker(concurrency=1, name="doomed") as doomed:
        running = api.diagnostic(sleep_ms=5_000, cost_usd="0.0123")
        api.wait(running, frozenset({"PROCESSING"}), timeout=20)
        waiting = api.diagnostic(cost_usd="0.0123")  # queued behind it (one process, prefetch 1)
        doomed.kill()
        doomed.proc.wait(10)
    assert Run.objects.get(pk=running).status == "PROCESSING"

    with stack.worker(concurrency=1, name="survivor"):
        totals = reconcile_until(
            stack, lambda: not Run.objects.filter(pk__in=[running, waiting]).exclude(status__in=TERMINAL).exists()
        )
        killed, survived = api.wait(running, timeout=1), api.wait(waiting, timeout=1)

    assert totals["expired_leases"] == 1, totals
    assert (killed["status"], killed["error"]["reason_code"]) == ("FAILED", "WORKER_TIMEOUT")
    assert killed["cost"]["used_usd"] == killed["cost"]["minimum_fee_usd"] == "0.0050"
    assert (survived["status"], survived["cost"]["used_usd"]) == ("COMPLETED", "0.0123")
    assert settles_of(running) == settles_of(waiting) == 1
    assert_money_balanced(stack, tenant, minimum_fee(RESERVED) + COST)


def test_cancel_requested_then_worker_killed_ends_canceled_by_the_reaper() -> None:
    """The worker dies before its heartbeat could see the cancel: the reaper ends the run CANCELED, minimum fee."""
    with redis_stack() as stack:
        tenant = stack.tenant()
        api = stack.api(tenant)
        with stack.worker(concurrency=1, name="doomed") as doomed:
            run_id = api.diagnostic(sleep_ms=10_000, cost_usd="0.0123")
            api.wait(run_id, frozenset({"PROCESSING"}), timeout=20)
            doomed.kill()
            doomed.proc.wait(10)
        answer = api.session.post(api.url(f"/v1/runs/{run_id}/cancel"), timeout=10)
        assert answer.status_code == 202, answer.text  # its lease has not expired yet: the API cannot know
        totals = reconcile_until(stack, lambda: Run.objects.get(pk=run_id).is_terminal)
        body = api.wait(run_id, timeout=1)

        assert totals["expired_leases"] == 1, totals
        assert (body["status"], body["error"]["reason_code"]) == ("CANCELED", "CANCELED_BY_CLIENT")
        assert body["cost"]["used_usd"] == body["cost"]["minimum_fee_usd"] == "0.0050"
        assert settles_of(run_id) == 1
        assert_money_balanced(stack, tenant, minimum_fee(RESERVED))


def _queued_messages(stack: Stack) -> list[str]:
    """Message files of this stack's queue in the filesystem broker's folder (their text names the run)."""
    folder = Path(stack.env["DPP_BROKER_DIR"]) / "queue"
    suffix = f".{stack.env['DPP_TASK_QUEUE']}.msg"
    return [path.read_text() for path in folder.iterdir() if path.name.endswith(suffix)]


def _received(log: str) -> int:
    return sum('"message": "Task dpp.runs.execute[' in line and '] received"' in line for line in log.splitlines())


def test_filesystem_broker_loses_prefetched_tasks_and_the_reaper_redrives_them(tmp_path: Path) -> None:
    with embedded_stack(tmp_path / "var") as stack:
        tenant = stack.tenant()
        api = stack.api(tenant)
        with stack.worker(concurrency=1, name="doomed") as doomed:
            running = api.diagnostic(sleep_ms=8_000, cost_usd="0.0123")
            api.wait(running, frozenset({"PROCESSING"}), timeout=20)
            waiting = [api.diagnostic(cost_usd="0.0123") for _ in range(3)]
            # Its one pool process is busy: the worker takes one more task off the queue and holds it in memory
            # (celery's blocking loop then waits for a free process, so it holds no more than that).
            wait_until(lambda: _received(doomed.log()) == 2, 10, what="the worker prefetching a task")
            time.sleep(0.5)
            doomed.kill()
            doomed.proc.wait(10)
        assert [api.run(run_id)["status"] for run_id in waiting] == ["QUEUED"] * 3
        messages = _queued_messages(stack)
        lost = [run_id for run_id in waiting if not any(run_id in message for message in messages)]
        assert len(lost) == 1, messages  # the prefetched task died with the worker; the other two still wait
        assert len(messages) == 2

        with stack.worker(concurrency=1, name="survivor") as survivor, celery_beat(stack.env):
            bodies = {run_id: api.wait(run_id, timeout=40) for run_id in [running, *waiting]}
            log = survivor.log()
        report = json.loads(manage(["reconcile", "--json"], stack.env).stdout)

        killed = bodies[running]
        assert (killed["status"], killed["error"]["reason_code"]) == ("FAILED", "WORKER_TIMEOUT")
        assert killed["cost"]["used_usd"] == "0.0050"
        assert [(bodies[run_id]["status"], bodies[run_id]["cost"]["used_usd"]) for run_id in waiting] == [
            ("COMPLETED", "0.0123")
        ] * 3
        # The beat's reconcile, executed by the new worker, expired the lease and re-drove the lost task.
        assert f"reaper: redrive run {lost[0]}" in log
        assert f"reaper: expire_lease run {running}" in log
        assert [report[key] for key in ("expired_leases", "rolled_forward", "rolled_back", "audit_flags")] == [0] * 4
        assert_money_balanced(stack, tenant, minimum_fee(RESERVED) + 3 * COST)


def test_embedded_mode_a_hung_runs_worker_does_not_stop_the_reaper(tmp_path: Path) -> None:
    """Killing both pool processes of a worker on the filesystem broker can hang it for good: the transport makes
    celery use billiard's blocking pool, and the idle process dies holding the task queue's read lock (seen with
    gdb: the master blocked in apply_async, the new pool processes on that lock). The Procfile of `make run` gives
    the reaper's queue a worker of its own (solo pool), which still ends the run the dead process was executing."""
    with embedded_stack(tmp_path / "var") as stack:
        tenant = stack.tenant()
        api = stack.api(tenant)
        with (
            procfile_process("worker", stack.env, ready=" ready.") as worker,
            procfile_process("reaper", stack.env, ready=" ready."),
            celery_beat(stack.env),
        ):
            running = api.diagnostic(sleep_ms=60_000, cost_usd="0.0123")
            api.wait(running, frozenset({"PROCESSING"}), timeout=20)
            pool = child_pids(worker.pid)
            assert len(pool) == 2  # --concurrency 2: one executes the run, the other waits for a task
            for pid in pool:
                os.kill(pid, signal.SIGKILL)
            body = api.wait(running, timeout=30)

        assert (body["status"], body["error"]["reason_code"]) == ("FAILED", "WORKER_TIMEOUT")
        assert body["cost"]["used_usd"] == body["cost"]["minimum_fee_usd"] == "0.0050"
        assert_money_balanced(stack, tenant, minimum_fee(RESERVED))  # one SETTLE: the audit's once_per_run
