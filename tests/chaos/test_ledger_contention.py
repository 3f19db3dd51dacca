"""Chaos on the hot path of one tenant: accepts (the API) and settles (the workers) at once, on real PostgreSQL.

Both lock the tenant's two account rows (available, held). billing.services promises a lock order that keeps
PostgreSQL free of deadlocks; this test holds it to that: four threads accept runs as the API does while four
others lease and finish them as workers do, for a few seconds, and not one statement may die of a deadlock.
(Found by bench/pipeline.py: a deadlock there failed an accept while two workers settled the same tenant.)
"""

from __future__ import annotations

import collections
import queue
import threading
import time
import uuid

import pytest
from django.db import connection

from billing.selectors import plan_get
from runs.models import Run
from runs.services import run_accept, run_fail, run_lease
from runs.submission import request_hash, submission_parse
from tests.e2e.harness import E2E, purge_queues
from tests.helpers.money import USD
from tests.helpers.personas import make_persona

pytestmark = [*E2E, pytest.mark.chaos]

BODY = {
    "pack_type": "diagnostic",
    "inputs": {"sleep_ms": 0, "cost_usd": "0.0010"},
    "reservation": {"max_cost_usd": "0.0100", "timebox_sec": 30},
}
SECONDS = 6.0
THREADS = 4


def test_concurrent_accepts_and_settles_of_one_tenant_never_deadlock() -> None:
    persona = make_persona(plan="unlimited", credit_micros=100 * USD, prefix="hot")
    tenant, plan = persona.tenant, plan_get(tenant_id=persona.tenant.pk)
    digest = request_hash(BODY)
    accepted: queue.Queue[uuid.UUID] = queue.Queue()
    errors: collections.Counter[str] = collections.Counter()
    stop = time.monotonic() + SECONDS

    def accept() -> None:  # what POST /v1/runs does
        try:
            while time.monotonic() < stop:
                submission = submission_parse(
                    body=BODY,
                    idempotency_key=f"hot-{uuid.uuid4().hex}",
                    request_hash=digest,
                    plan=plan,
                    default_trace_id=uuid.uuid4().hex,
                )
                try:
                    accepted.put(run_accept(tenant=tenant, plan=plan, submission=submission).run.pk)
                except Exception as exc:
                    errors[f"accept: {str(exc).splitlines()[0]}"] += 1
        finally:
            connection.close()

    def settle() -> None:  # what a worker does with a run that fails: lease, then FAILED with the minimum fee
        try:
            while time.monotonic() < stop or not accepted.empty():
                try:
                    run_id = accepted.get(timeout=0.2)
                except queue.Empty:
                    continue
                try:
                    lease = run_lease(run_id=run_id)
                    assert lease is not None
                    run_fail(run=lease.run, lease_token=lease.token, reason_code="PACK_FAILED", detail="hot path")
                except Exception as exc:
                    errors[f"settle: {str(exc).splitlines()[0]}"] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=accept) for _ in range(THREADS)]
    threads += [threading.Thread(target=settle) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    purge_queues()  # the tasks run_accept published

    runs = Run.objects.filter(tenant=tenant)
    assert runs.count() > 20, "the threads hardly ran"
    assert dict(errors) == {}, f"{sum(errors.values())} statements failed under contention: {dict(errors)}"
    assert runs.exclude(status="FAILED").count() == 0
