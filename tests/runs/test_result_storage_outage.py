"""A result storage that cannot be read is an outage, not a missing result (SPEC §3.3, §4).

Rolling a stale claim back charges the minimum fee and discards the result, once and for all (one SETTLE per
run): the reaper may do it only when the storage says there is no valid envelope, never because it could not
ask. The API answers 503 UNAVAILABLE with Retry-After (410 RESULT_EXPIRED is for results past retention), and
the admin says so instead of failing.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.urls import reverse

from dpp.http.errors import DependencyUnavailableError
from reaper.services import reconcile_once
from runs import results
from runs.models import Run
from tests.helpers.admin import ensure_staff_groups, staff_client
from tests.helpers.api import accepted, body
from tests.helpers.outages import unreadable_storage
from tests.helpers.personas import Persona, make_persona
from tests.helpers.problems import assert_problem
from tests.helpers.states import execute, run_row, stale_claim, store_envelope
from tests.processes import celery_worker, process_env

pytestmark = pytest.mark.django_db(transaction=True)


def _stale_claim_with_a_valid_envelope(tenant: Persona, *, cost_micros: int) -> Run:
    claimed, _ = stale_claim(tenant, max_cost_usd="0.5000")
    store_envelope(claimed, cost_micros=cost_micros, data={})
    return claimed


def test_an_unreadable_envelope_is_unavailable(tmp_path: Path) -> None:
    with unreadable_storage(tmp_path), pytest.raises(DependencyUnavailableError):
        results.envelope_read("results/t/r/f.json")


def test_a_missing_envelope_reads_as_absent() -> None:
    assert results.envelope_read("results/nobody/nothing/none.json") is None


@contextlib.contextmanager
def another_folder(tmp_path: Path) -> Iterator[Path]:
    """The results storage pointed at a folder no worker stores in (a shell with another DPP_LOCAL_STORAGE_DIR)."""
    configured = cast(dict[str, Any], settings.STORAGES["results"])
    elsewhere = tmp_path / "results-elsewhere"
    other = {**configured, "OPTIONS": {**configured["OPTIONS"], "location": str(elsewhere)}}
    with override_settings(STORAGES={**settings.STORAGES, "results": other}):
        yield elsewhere


def test_a_folder_without_the_workers_mark_cannot_say_an_envelope_is_absent(tmp_path: Path) -> None:
    with another_folder(tmp_path) as elsewhere:
        with pytest.raises(DependencyUnavailableError):
            results.envelope_read("results/nobody/nothing/none.json")
        elsewhere.mkdir()  # a folder that exists (the API's /readyz creates it) is not marked either
        with pytest.raises(DependencyUnavailableError):
            results.envelope_stored("results/nobody/nothing/none.json")
        results.results_folder_mark()  # what a worker does when it starts
        assert (elsewhere / results.LOCAL_MARK).is_file()
        assert results.envelope_read("results/nobody/nothing/none.json") is None


def test_the_reaper_does_not_roll_back_a_claim_from_a_folder_the_workers_do_not_use(tmp_path: Path) -> None:
    """`reconcile` run from a shell whose DPP_LOCAL_STORAGE_DIR is not the workers': the valid envelope is not
    there, and without the mark that must not read as "never stored" (it was rolled back, at the minimum fee)."""
    tenant = make_persona(plan="unlimited")
    claimed = _stale_claim_with_a_valid_envelope(tenant, cost_micros=222_200)
    with another_folder(tmp_path):
        report = reconcile_once()
        assert (report.rolled_forward, report.rolled_back, report.storage_unavailable) == (0, 0, 1)
    run = run_row(claimed.pk)
    assert (run.status, run.finalize_stage, run.money_state) == ("PROCESSING", "CLAIMED", "RESERVED")
    report = reconcile_once()  # with the workers' folder
    assert (report.rolled_forward, report.rolled_back, report.storage_unavailable) == (1, 0, 0)
    assert (run_row(claimed.pk).status, run_row(claimed.pk).charged_micros) == ("COMPLETED", 222_200)


def test_the_reaper_leaves_a_claim_it_cannot_check_and_finishes_it_once_storage_is_back(
    tmp_path: Path,
) -> None:
    tenant = make_persona(plan="unlimited")
    claimed = _stale_claim_with_a_valid_envelope(tenant, cost_micros=222_200)
    with unreadable_storage(tmp_path):
        for dry_run in (True, False):
            report = reconcile_once(dry_run=dry_run)
            assert (report.rolled_forward, report.rolled_back, report.storage_unavailable) == (0, 0, 1)
            assert report.actions[-1]["outcome"] == "deferred: the result storage is unavailable"
        out = io.StringIO()
        with pytest.raises(CommandError):  # exit status 1: a claim was left as it was
            call_command("reconcile", "--json", stdout=out)
        assert json.loads(out.getvalue())["storage_unavailable"] == 1
    run = run_row(claimed.pk)
    assert (run.status, run.finalize_stage, run.money_state) == ("PROCESSING", "CLAIMED", "RESERVED")
    # Storage back: the envelope is there and valid, so the run rolls forward at its cost.
    report = reconcile_once()
    assert (report.rolled_forward, report.rolled_back, report.storage_unavailable) == (1, 0, 0)
    run = run_row(claimed.pk)
    assert (run.status, run.charged_micros) == ("COMPLETED", 222_200)


def _completed(tenant: Persona) -> str:
    run_id: str = accepted(tenant.client, body("decision", max_cost_usd="0.0100"))["run_id"]
    assert execute(run_id) == "completed"
    return run_id


def test_the_result_endpoint_answers_503_while_storage_is_unreadable(tmp_path: Path) -> None:
    tenant = make_persona(plan="unlimited")
    run_id = _completed(tenant)
    with unreadable_storage(tmp_path):
        response = tenant.client.get(f"/v1/runs/{run_id}/result")
        problem: dict[str, Any] = assert_problem(response, 503, "UNAVAILABLE")
        assert response["Retry-After"] == "5"
        assert "result storage" in problem["detail"]
        ensure_staff_groups()
        admin = staff_client("finance-outage", groups=["finance"])
        page = admin.get(reverse("admin:runs_run_result", args=[run_id]), follow=True)
        assert "The result storage cannot be read now" in page.content.decode()
    assert tenant.client.get(f"/v1/runs/{run_id}/result").status_code == 200


def test_the_result_endpoint_answers_503_not_410_from_a_folder_the_workers_do_not_use(tmp_path: Path) -> None:
    tenant = make_persona(plan="unlimited")
    run_id = _completed(tenant)
    with another_folder(tmp_path):
        assert_problem(tenant.client.get(f"/v1/runs/{run_id}/result"), 503, "UNAVAILABLE")
    assert tenant.client.get(f"/v1/runs/{run_id}/result").status_code == 200


class _FixOnRetry(logging.Handler):
    """Turns the blocked results folder into a real one when the worker logs that it will retry the upload."""

    def __init__(self, blocker: Path) -> None:
        super().__init__()
        self.blocker, self.retries = blocker, 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage():
            self.retries += 1
            if self.blocker.is_file():
                self.blocker.unlink()
                self.blocker.mkdir()


def test_the_worker_retries_a_failed_upload_and_completes_the_run(tmp_path: Path) -> None:
    tenant = make_persona(plan="unlimited")
    run_id = accepted(tenant.client, body(max_cost_usd="0.5000"))["run_id"]
    fixer = _FixOnRetry(tmp_path / "not-a-directory")
    executor_log = logging.getLogger("dpp.runs.executor")
    executor_log.addHandler(fixer)
    try:
        with unreadable_storage(tmp_path):  # the first upload fails; the retry finds the folder fixed
            assert execute(run_id) == "completed"
    finally:
        executor_log.removeHandler(fixer)
    assert fixer.retries == 1
    run = run_row(run_id)
    assert (run.status, run.money_state) == ("COMPLETED", "SETTLED")


@pytest.mark.e2e
def test_a_worker_marks_its_results_folder_when_it_starts(tmp_path: Path) -> None:
    """Before its first save: a claim whose worker died before storing anything must read as "no envelope"."""
    folder = tmp_path / "fresh-results"
    with celery_worker(process_env(DPP_LOCAL_STORAGE_DIR=str(folder)), concurrency=1):
        assert (folder / results.LOCAL_MARK).is_file()
