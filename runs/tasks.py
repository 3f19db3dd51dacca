"""Celery tasks of the runs app: thin, by id, with a stable explicit name."""

from __future__ import annotations

import uuid

from celery import Task, shared_task

from runs.dispatch import EXECUTE_TASK
from runs.executor import run_execute


@shared_task(name=EXECUTE_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True, bind=True)
def execute_run(self: Task, run_id: str) -> str:
    """Execute one delivery of a run. Safe to deliver twice: leasing is a compare-and-set."""
    # publish_run sends the run's trace id as a message header; Celery exposes headers on the request.
    trace_id = getattr(self.request, "trace_id", None) or (self.request.headers or {}).get("trace_id")
    return run_execute(run_id=uuid.UUID(run_id), trace_id=trace_id)
