"""Publishing a run's task to the broker. The runs table is the outbox: a publish that fails is logged and
the reaper re-publishes the run later, so nothing here may raise into the caller."""

from __future__ import annotations

import logging

from celery import current_app

from runs.models import Run

logger = logging.getLogger("dpp.runs.dispatch")

EXECUTE_TASK = "dpp.runs.execute"
# Room after the timebox for claim, upload and commit before Celery's own limits strike.
SOFT_LIMIT_MARGIN_S = 15
HARD_LIMIT_MARGIN_S = 45


def publish_run(run: Run) -> bool:
    """Send execute_run(run_id); True if the broker took it."""
    run_id = str(run.pk)
    try:
        current_app.send_task(
            EXECUTE_TASK,
            args=[run_id],
            # Celery would otherwise build these with its safe repr on every publish: the same text, written
            # directly.
            argsrepr=repr([run_id]),
            kwargsrepr="{}",
            ignore_result=True,  # as configured (task_ignore_result): no result backend to notify
            # Celery sends a direct queue's task to kombu's anonymous exchange (the routing key is the queue), which
            # needs no binding: Redis and the filesystem transport write to the queue itself, SQS creates a
            # missing queue on the first send. Declaring the queue anew before every publish (kombu copies and
            # hashes it to find it already declared) was a twentieth of a submit's CPU.
            declare=[],
            add_to_parent=False,  # a re-drive from the reaper's task is not a child of it
            soft_time_limit=run.timebox_sec + SOFT_LIMIT_MARGIN_S,
            time_limit=run.timebox_sec + HARD_LIMIT_MARGIN_S,
            headers={"trace_id": run.trace_id},
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        )
    except Exception:  # the reaper re-drives a QUEUED run whose task was lost
        # With the run's ids: this line is the cause when following the run by its trace id (operations §7).
        with run.log_ids():
            logger.exception("could not publish run %s; the reaper will re-drive it", run.pk)
        return False
    return True
