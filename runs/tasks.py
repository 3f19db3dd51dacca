"""Celery tasks of the runs app: thin, by id, with a stable explicit name."""

from __future__ import annotations

import uuid
from contextvars import Token
from typing import Any

from celery import Task, shared_task
from celery.signals import task_postrun, task_prerun, worker_init

from dpp.observability import run_id_var, trace_id_var
from runs.dispatch import EXECUTE_TASK
from runs.executor import run_execute
from runs.results import results_folder_mark

# Where the prerun handler keeps the tokens that its postrun handler resets (an attribute of the task's request).
_LOG_TOKENS = "dpp_log_tokens"


def _message_trace_id(request: Any) -> str | None:
    """The trace id that publish_run sends as a message header: a worker's request carries the message headers as
    attributes, an eager call (`apply(headers=…)`) under `headers`."""
    return getattr(request, "trace_id", None) or (getattr(request, "headers", None) or {}).get("trace_id")


@shared_task(name=EXECUTE_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def execute_run(run_id: str) -> str:
    """Execute one delivery of a run. Safe to deliver twice: leasing is a compare-and-set. Its log lines carry the
    run's ids from the start (_bind_run_ids)."""
    return run_execute(run_id=uuid.UUID(run_id))


@task_prerun.connect
def _bind_run_ids(*, task: Task, args: Any = None, **_: Any) -> None:
    """Bind the run's ids for the whole delivery of an execute task, not only inside run_execute: Celery logs a
    task that raised ("Task dpp.runs.execute[…] raised unexpected: …", logger celery.app.trace) after the task
    function returned and before task_postrun (celery/app/trace.py: on_error → handle_failure → _log_error)."""
    if task.name != EXECUTE_TASK or not args:
        return
    tokens = [(run_id_var, run_id_var.set(str(args[0])))]
    trace_id = _message_trace_id(task.request)
    if trace_id:
        tokens.append((trace_id_var, trace_id_var.set(trace_id)))
    setattr(task.request, _LOG_TOKENS, tokens)


@task_postrun.connect
def _unbind_run_ids(*, task: Task, **_: Any) -> None:
    tokens: list[tuple[Any, Token[str | None]]] = getattr(task.request, _LOG_TOKENS, None) or []
    for var, token in reversed(tokens):
        try:
            var.reset(token)
        except ValueError:  # postrun ran in another context than prerun: clear rather than leak the ids
            var.set(None)
    if tokens:
        setattr(task.request, _LOG_TOKENS, None)


@worker_init.connect
def _mark_results_folder(**_: Any) -> None:
    """A worker stores envelopes: its local results folder bears the mark from its start (runs.results.LOCAL_MARK),
    so that the reaper can tell an envelope never stored there even before the first save."""
    results_folder_mark()
