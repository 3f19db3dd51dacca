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
from typing import Any

import pytest
from django.db import connection

from runs.models import Run
from tests.e2e.harness import E2E, purge_queues
from tests.helpers.money import USD
from tests.helpers.personas import make_persona
from tests.helpers.states import fail, lease, queued_run

pytestmark = [*E2E, pytest.mark.chaos]

HOT_RUN: dict[str, Any] = {
    "inputs": {"sleep_ms": 0, "cost_usd": "0.0010"},
    "max_cost_usd": "0.0100",
    "timebox_sec": 30,
}
SECONDS = 6.0
THREADS = 4


def test_concurrent_accepts_and_settles_of_one_tenant_never_deadlock() -> None:
    persona = make_persona(plan="unlimited", credit_micros=100 * USD, prefix="hot")
    accepted: queue.Queue[Run] = queue.Queue()
    errors: collections.Counter[str] = collections.Counter()
    stop = time.monotonic() + SECONDS

    def accept() -> None:  # what POST /v1/runs does
        try:
            while time.monotonic() < stop:
                try:
                    accepted.put(queued_run(persona, **HOT_RUN))
                except Exception as exc:
                    errors[f"accept: {str(exc).splitlines()[0]}"] += 1
        finally:
            connection.close()

    def settle() -> None:  # what a worker does with a run that fails: lease, then FAILED with the minimum fee
        try:
            while time.monotonic() < stop or not accepted.empty():
                try:
                    run = accepted.get(timeout=0.2)
                except queue.Empty:
                    continue
                try:
                    fail(lease(run), detail="hot path")
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

    runs = Run.objects.filter(tenant=persona.tenant)
    assert runs.count() > 20, "the threads hardly ran"
    assert dict(errors) == {}, f"{sum(errors.values())} statements failed under contention: {dict(errors)}"
    assert runs.exclude(status="FAILED").count() == 0
