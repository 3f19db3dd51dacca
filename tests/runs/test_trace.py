"""One run, one trace id (SPEC §1, §4): every API answer about a run — its submit and replays, polls, cancel,
result — carries the run's trace id in `X-Trace-Id` and in its log lines, also when the agent chose it in
`meta.trace_id`; another tenant's run id never does."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from tests.helpers.api import body, new_key, submit
from tests.helpers.personas import Persona, Personas
from tests.helpers.problems import assert_problem

pytestmark = pytest.mark.django_db


def _post(persona: Persona, payload: dict[str, Any], key: str, trace_header: str | None = None) -> Any:
    return submit(persona.client, payload, key=key, **({"HTTP_X_TRACE_ID": trace_header} if trace_header else {}))


def _access_line(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    records = [record for record in caplog.records if record.name == "dpp.access"]
    assert len(records) == 1
    return records[0]


def test_a_submit_answers_and_logs_under_the_trace_id_the_agent_chose(
    unlimited: Persona, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="dpp.access"):
        response = _post(unlimited, body(trace_id="agent-trace-42"), new_key(), "the-request")
    assert response.status_code == 202, response.content
    receipt = response.json()
    assert receipt["meta"]["trace_id"] == "agent-trace-42"
    assert response["X-Trace-Id"] == "agent-trace-42"
    line = _access_line(caplog)
    assert line.trace_id == "agent-trace-42"  # type: ignore[attr-defined]
    assert line.run_id == receipt["run_id"]  # type: ignore[attr-defined]


def test_a_replay_answers_under_the_runs_trace_id(unlimited: Persona) -> None:
    key = new_key()
    first = _post(unlimited, body(trace_id="first-trace"), key)
    replay = _post(unlimited, body(trace_id="second-trace"), key, "third-trace")
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert replay["X-Trace-Id"] == "first-trace"


@pytest.mark.parametrize(
    ("method", "suffix", "reason"),
    [("get", "", None), ("post", "/cancel", None), ("get", "/result", "RESULT_NOT_READY")],
)
def test_requests_about_a_run_carry_its_trace_id(
    unlimited: Persona, caplog: pytest.LogCaptureFixture, method: str, suffix: str, reason: str | None
) -> None:
    run_id = _post(unlimited, body(trace_id="run-trace"), new_key()).json()["run_id"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dpp.access"):
        response = getattr(unlimited.client, method)(f"/v1/runs/{run_id}{suffix}", HTTP_X_TRACE_ID="poll-trace")
    if reason is None:
        assert response.status_code == 200, response.content
    else:
        assert assert_problem(response, 409, reason)["trace_id"] == "run-trace"
    assert response["X-Trace-Id"] == "run-trace"
    line = _access_line(caplog)
    assert (line.trace_id, line.run_id) == ("run-trace", run_id)  # type: ignore[attr-defined]


def test_a_refused_cancel_carries_the_runs_trace_id(unlimited: Persona) -> None:
    run_id = _post(unlimited, body(trace_id="ended-run"), new_key()).json()["run_id"]
    assert unlimited.client.post(f"/v1/runs/{run_id}/cancel").status_code == 200
    again = unlimited.client.post(f"/v1/runs/{run_id}/cancel", HTTP_X_TRACE_ID="retry-trace")
    assert assert_problem(again, 409, "RUN_TERMINAL")["trace_id"] == "ended-run"
    assert again["X-Trace-Id"] == "ended-run"


@pytest.mark.parametrize("suffix", ["", "/cancel", "/result"])
def test_another_tenants_run_never_lends_its_trace_id(unlimited: Persona, personas: Personas, suffix: str) -> None:
    other = personas.other
    run_id = _post(unlimited, body(trace_id="secret-trace"), new_key()).json()["run_id"]
    method = other.client.post if suffix == "/cancel" else other.client.get
    for target in (run_id, str(uuid.uuid4())):
        response = method(f"/v1/runs/{target}{suffix}", HTTP_X_TRACE_ID="outsider-trace")
        assert_problem(response, 404, "NOT_FOUND")
        assert response["X-Trace-Id"] == "outsider-trace"
