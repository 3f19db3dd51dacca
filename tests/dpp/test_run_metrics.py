"""Ops metrics: runs by pack, status and reason at their terminal transition (on commit), the charge, run duration
and queue wait; static files labelled as such in the HTTP metrics."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.helpers.money import USD
from tests.helpers.personas import make_persona
from tests.helpers.states import ago, canceled_run, completed_run, failed_run

pytestmark = pytest.mark.django_db


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_terminal_transitions_are_counted_with_their_charge_and_times(django_capture_on_commit_callbacks: Any) -> None:
    persona = make_persona(plan="unlimited", credit_micros=1 * USD)
    before = {
        "completed": _value("dpp_runs_finished_total", pack="diagnostic", status="COMPLETED", reason=""),
        "failed": _value("dpp_runs_finished_total", pack="diagnostic", status="FAILED", reason="PACK_FAILED"),
        "canceled": _value(
            "dpp_runs_finished_total", pack="diagnostic", status="CANCELED", reason="CANCELED_BY_CLIENT"
        ),
        "charged": _value("dpp_charged_micros_total", pack="diagnostic"),
        "durations": _value("dpp_run_duration_seconds_count", pack="diagnostic"),
        "waits": _value("dpp_run_queue_wait_seconds_count", pack="diagnostic"),
        "long_waits": _value("dpp_run_queue_wait_seconds_bucket", pack="diagnostic", le="30.0"),
    }
    with django_capture_on_commit_callbacks(execute=True):
        with ago(120):  # accepted two minutes ago, started at once, running since
            run = completed_run(persona, cost_micros=12_300)
        failed_run(persona)
        canceled = canceled_run(persona)
    assert run.status == "COMPLETED"
    assert (
        _value("dpp_runs_finished_total", pack="diagnostic", status="COMPLETED", reason="") == before["completed"] + 1
    )
    assert (
        _value("dpp_runs_finished_total", pack="diagnostic", status="FAILED", reason="PACK_FAILED")
        == before["failed"] + 1
    )
    labels = {"pack": "diagnostic", "status": "CANCELED", "reason": canceled.reason_code}
    assert _value("dpp_runs_finished_total", **labels) == before["canceled"] + 1
    assert _value("dpp_charged_micros_total", pack="diagnostic") == before["charged"] + 12_300 + 5_000
    assert _value("dpp_run_duration_seconds_count", pack="diagnostic") == before["durations"] + 2  # not the canceled
    assert _value("dpp_run_queue_wait_seconds_count", pack="diagnostic") == before["waits"] + 3
    assert _value("dpp_run_queue_wait_seconds_bucket", pack="diagnostic", le="30.0") == before["long_waits"] + 3


def test_a_rolled_back_transition_is_not_counted(django_capture_on_commit_callbacks: Any) -> None:
    persona = make_persona(plan="unlimited", credit_micros=1 * USD)
    before = _value("dpp_runs_finished_total", pack="diagnostic", status="FAILED", reason="PACK_FAILED")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        failed_run(persona)
    assert len(callbacks) >= 1  # waiting for a commit that never comes
    assert _value("dpp_runs_finished_total", pack="diagnostic", status="FAILED", reason="PACK_FAILED") == before


def test_static_files_have_their_own_route_label(client: Any) -> None:
    # The tests do not collect the static files: the request is a 404, still labelled as a static file's.
    labels = {"route": "static", "method": "GET", "status": "404"}
    before = _value("dpp_http_requests_total", **labels)
    unmatched = _value("dpp_http_requests_total", route="unmatched", method="GET", status="404")
    assert client.get("/static/admin/css/no-such.css").status_code == 404
    assert _value("dpp_http_requests_total", **labels) == before + 1
    assert _value("dpp_http_requests_total", route="unmatched", method="GET", status="404") == unmatched
    assert client.get("/no/such/path").status_code == 404
    assert _value("dpp_http_requests_total", route="unmatched", method="GET", status="404") == unmatched + 1


def test_webhook_deliveries_metric_is_defined() -> None:
    from dpp.observability import WEBHOOK_DELIVERIES

    WEBHOOK_DELIVERIES.labels("delivered")  # the webhook sender counts with these outcomes
    assert _value("dpp_webhook_deliveries_total", outcome="delivered") == 0
