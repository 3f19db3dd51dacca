"""Celery tasks of the runs app: thin, by id, with a stable explicit name."""

from __future__ import annotations

import uuid

from celery import shared_task

from runs.dispatch import EXECUTE_TASK
from runs.executor import run_execute


@shared_task(name=EXECUTE_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def execute_run(run_id: str) -> str:
    """Execute one delivery of a run. Safe to deliver twice: leasing is a compare-and-set."""
    return run_execute(run_id=uuid.UUID(run_id))
