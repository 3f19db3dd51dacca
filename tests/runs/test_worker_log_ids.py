"""The lines that explain a worker's or a publisher's failure carry the run's ids (operations.md §7): following a
run by its trace id shows the cause, not only `leased` and, minutes later, the reaper's verdict.

Nothing is mocked: the execute task runs through Celery's own tracer (eager `apply`, the tracer a worker builds
too, with the same task_prerun / task_postrun signals), the result storage is really unreadable, and the broker
really refuses connections (the app's broker URL points at a port nobody listens on).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dpp.observability import run_id_var, trace_id_var
from runs import executor
from runs.dispatch import publish_run
from runs.models import Run
from runs.tasks import execute_run
from tests.helpers.logs import ids
from tests.helpers.outages import broker_down, unreadable_storage
from tests.helpers.personas import Persona, make_persona
from tests.helpers.states import queued_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def tenant() -> Persona:
    return make_persona(plan="unlimited")


def test_celery_logs_a_failed_execute_task_with_the_runs_ids(
    tenant: Persona, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = queued_run(tenant)
    monkeypatch.setattr(executor, "UPLOAD_RETRY_PAUSES_S", ())  # one upload attempt, no pauses
    # The pack succeeds; uploading its envelope fails, and the exception leaves the task function (as an S3
    # outage does): Celery's tracer logs it after run_execute's own log context has ended.
    bound_before = (trace_id_var.get(), run_id_var.get())  # whatever an earlier test of this thread left
    with unreadable_storage(tmp_path), caplog.at_level(logging.ERROR, logger="celery.app.trace"):
        result = execute_run.apply(args=[str(run.pk)], headers={"trace_id": run.trace_id}, throw=False)
    assert result.failed()
    [line] = [r for r in caplog.records if r.name == "celery.app.trace"]
    assert "raised unexpected" in line.getMessage()
    assert ids(line) == (run.trace_id, str(run.pk))
    # task_postrun unbinds them: nothing after the task is attributed to the run.
    assert (trace_id_var.get(), run_id_var.get()) == bound_before


def test_a_failed_publish_is_logged_with_the_runs_ids(tenant: Persona, caplog: pytest.LogCaptureFixture) -> None:
    run = Run.objects.get(pk=queued_run(tenant).pk)
    bound_before = (trace_id_var.get(), run_id_var.get())
    with broker_down(), caplog.at_level(logging.ERROR, logger="dpp.runs.dispatch"):
        assert publish_run(run) is False
    [line] = [r for r in caplog.records if r.name == "dpp.runs.dispatch"]
    assert line.getMessage().startswith(f"could not publish run {run.pk}")
    assert ids(line) == (run.trace_id, str(run.pk))
    assert (trace_id_var.get(), run_id_var.get()) == bound_before
