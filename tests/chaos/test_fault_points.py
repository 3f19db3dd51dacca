"""Issue 5, item 3: a worker that dies at each step of the 2-phase finalize leaves a state the reaper finishes.

A real worker with DPP_ENABLE_FAULTS=1 and DPP_FAULT_POINT=<point> dies at once at that point; the test then
SIGKILLs its whole process group (the machine is gone) and runs reaper passes until the run is terminal:
- after_lease: the lease expires unclaimed → FAILED / WORKER_TIMEOUT, minimum fee;
- after_claim: claimed, no envelope → FAILED / FINALIZE_ABORTED, minimum fee;
- after_upload, before_commit: claimed, envelope stored → COMPLETED, rolled forward with the envelope's cost.
Each time: one SETTLE, nothing held, the ledger audits clean, and later passes find nothing more to do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from dpp.money import minimum_fee
from runs import results
from runs.models import Run
from tests.e2e.harness import (
    E2E,
    Stack,
    assert_money_balanced,
    reconcile_until,
    redis_stack,
    s3_results_storage,
    settles_of,
    sqs_stack,
)
from tests.processes import wait_until

pytestmark = [*E2E, pytest.mark.chaos, pytest.mark.usefixtures("fast_reaper")]

RESERVED = 50_000  # "0.0500"
COST = 12_300  # "0.0123"
MIN_FEE = minimum_fee(RESERVED)

# point → (stage the crash leaves, envelope stored?, reaper counter, status, reason code, charge)
EXPECTED: dict[str, tuple[str | None, bool, str, str, str, int]] = {
    "after_lease": (None, False, "expired_leases", "FAILED", "WORKER_TIMEOUT", MIN_FEE),
    "after_claim": ("CLAIMED", False, "rolled_back", "FAILED", "FINALIZE_ABORTED", MIN_FEE),
    "after_upload": ("CLAIMED", True, "rolled_forward", "COMPLETED", "", COST),
    "before_commit": ("CLAIMED", True, "rolled_forward", "COMPLETED", "", COST),
}


def _crash_at(stack: Stack, point: str) -> tuple[Any, str]:
    """Submit one run to a worker that dies at `point`, then SIGKILL the worker's process group."""
    tenant = stack.tenant()
    api = stack.api(tenant)
    with stack.worker(concurrency=1, DPP_ENABLE_FAULTS="1", DPP_FAULT_POINT=point) as worker:
        run_id = api.diagnostic(cost_usd="0.0123", max_cost_usd="0.0500")
        wait_until(lambda: f"fault point {point}" in worker.log(), 30, what=f"worker reaching {point}")
        worker.kill()
        worker.proc.wait(10)
    return tenant, run_id


def _assert_crash_state(run: Run, point: str) -> None:
    stage, stored, *_ = EXPECTED[point]
    assert (run.status, run.finalize_stage) == ("PROCESSING", stage), point
    assert run.charged_micros is None
    assert settles_of(str(run.pk)) == 0
    if run.finalize_token is not None:
        envelope = results.envelope_read(results.envelope_key(run, run.finalize_token))
        assert (envelope is not None) == stored, point
    else:
        assert not stored


def _assert_reaped(stack: Stack, point: str, tenant: Any, run_id: str) -> None:
    _, _, counter, status, reason, charge = EXPECTED[point]
    totals = reconcile_until(stack, lambda: Run.objects.get(pk=run_id).is_terminal)
    assert totals.get(counter) == 1, totals
    assert totals.get("audit_flags", 0) == 0, totals
    body = stack.api(tenant).wait(run_id, timeout=1)
    assert body["status"] == status
    assert (body["error"] or {}).get("reason_code", "") == reason
    assert body["cost"]["used_usd"] == f"0.{charge // 100:04d}"
    if status == "COMPLETED":
        run = Run.objects.get(pk=run_id)
        assert run.finalize_token is not None
        content = results.envelope_read(results.envelope_key(run, run.finalize_token))
        assert content is not None
        assert hashlib.sha256(content).hexdigest() == body["result"]["sha256"] == run.result_sha256
        assert json.loads(content)["actual_cost_usd_micros"] == charge
    # Later passes find nothing: the run is finished once, its money settled once.
    again = stack.reconcile()
    assert [again[key] for key in ("expired_leases", "rolled_forward", "rolled_back", "audit_flags")] == [0, 0, 0, 0]
    assert settles_of(run_id) == 1
    assert_money_balanced(stack, tenant, charge)


@pytest.mark.parametrize("point", list(EXPECTED))
def test_worker_dies_at_fault_point_redis(point: str) -> None:
    with redis_stack() as stack:
        tenant, run_id = _crash_at(stack, point)
        _assert_crash_state(Run.objects.get(pk=run_id), point)
        _assert_reaped(stack, point, tenant, run_id)


@pytest.fixture
def s3_results(settings: Any) -> Iterator[Stack]:
    """An SQS + S3 stack whose S3 bucket this process's reaper reads too (to roll forward from S3)."""
    with sqs_stack() as stack:
        settings.STORAGES = {**settings.STORAGES, "results": s3_results_storage(stack.s3_endpoint)}
        yield stack


@pytest.mark.parametrize("point", ["after_lease", "after_upload"])
def test_worker_dies_at_fault_point_sqs(point: str, s3_results: Stack) -> None:
    stack = s3_results
    tenant, run_id = _crash_at(stack, point)
    _assert_crash_state(Run.objects.get(pk=run_id), point)
    _assert_reaped(stack, point, tenant, run_id)
