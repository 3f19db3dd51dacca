"""W3C tracestate (SPEC §4 Trace context): carried beside traceparent to the log lines (the API's here; the
worker's in tests/e2e/test_generated_client.py) and echoed back; allowed by CORS (exposed: test_observability);
a problem's `instance` is always a string."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from celery.signals import before_task_publish
from django.test import Client, RequestFactory

from dpp.http.errors import ApplicationError
from dpp.http.problems import problem_response
from dpp.observability import tracestate_from_headers, tracestate_var
from runs.dispatch import publish_run
from runs.tasks import execute_run
from tests.helpers.api import header_tokens
from tests.helpers.personas import make_persona
from tests.helpers.states import queued_run as submit

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
STATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


def test_tracestate_is_echoed_beside_a_valid_traceparent(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dpp.access"):
        raw = " congo=t61rcWkgMzE , ,rojo=00f067aa0ba902b7"
        response = Client().get("/nope", HTTP_TRACEPARENT=PARENT, HTTP_TRACESTATE=raw)  # /health is not logged
    assert response["tracestate"] == STATE  # normalised: blanks and empty members dropped (W3C §3.3.1.1)
    assert response["X-Trace-Id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    [line] = [record for record in caplog.records if record.name == "dpp.access"]
    assert getattr(line, "tracestate", None) == STATE  # the request's log lines carry it
    assert tracestate_var.get() is None  # and it does not outlive the request


@pytest.mark.parametrize(
    ("traceparent", "tracestate"),
    [
        (None, STATE),  # alone it means nothing
        ("00-not-a-traceparent", STATE),
        (PARENT, "Congo=1"),  # keys are lowercase
        (PARENT, "congo=1,congo=2"),  # a key at most once
        (PARENT, "congo"),  # no value
        (PARENT, "congo=a=b"),  # "=" is not a value character
        (PARENT, ",".join(f"k{i}=v" for i in range(33))),  # at most 32 members
    ],
)
def test_a_tracestate_that_does_not_parse_is_not_carried(traceparent: str | None, tracestate: str) -> None:
    assert tracestate_from_headers(traceparent, tracestate) is None
    headers: dict[str, Any] = {"HTTP_TRACESTATE": tracestate}
    if traceparent:
        headers["HTTP_TRACEPARENT"] = traceparent
    assert "tracestate" not in Client().get("/health", **headers)


def test_a_long_tracestate_is_cut_by_whole_members() -> None:
    members = [f"vendor{i}={'x' * 60}" for i in range(12)]  # 12 × 68 characters
    carried = tracestate_from_headers(PARENT, ",".join(members))
    assert carried == ",".join(members[:7])  # 7 members: 482 characters, ≤ 512
    assert carried is not None
    assert len(carried) <= 512


@pytest.mark.django_db(transaction=True)
def test_the_tracestate_of_the_publishing_request_travels_with_the_task_to_its_log_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The message header (seen by a receiver of before_task_publish connected after ours), and an eager delivery
    with it (the real worker: tests/e2e/test_generated_client.py)."""
    run = submit(make_persona(plan="unlimited"))
    published: list[dict[str, Any]] = []

    def spy(*, headers: dict[str, Any], **_: Any) -> None:
        published.append(dict(headers))

    before_task_publish.connect(spy)
    token = tracestate_var.set(STATE)
    try:
        assert publish_run(run)
    finally:
        tracestate_var.reset(token)
        before_task_publish.disconnect(spy)
    assert [headers.get("tracestate") for headers in published] == [STATE]
    with caplog.at_level(logging.INFO):
        execute_run.apply(args=[str(run.pk)], headers={"trace_id": run.trace_id, "tracestate": STATE})
    lines = [record for record in caplog.records if getattr(record, "run_id", None) == str(run.pk)]
    assert lines
    assert {getattr(record, "tracestate", None) for record in lines} == {STATE}
    assert tracestate_var.get() is None  # unbound after the task


@pytest.mark.django_db
def test_cors_lets_a_browser_send_the_trace_and_conditional_headers(settings: Any) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    preflight = Client(
        HTTP_ORIGIN="https://app.example.com",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="traceparent, tracestate",
    ).options("/v1/runs")
    allowed = header_tokens(preflight, "Access-Control-Allow-Headers")
    assert {
        "authorization",
        "content-type",
        "idempotency-key",
        "if-match",
        "if-none-match",
        "traceparent",
        "tracestate",
        "x-request-id",
    } <= allowed


def test_a_problem_without_a_request_still_has_a_string_instance() -> None:
    without = json.loads(problem_response(ApplicationError("NOT_FOUND"), None).content)
    assert isinstance(without["instance"], str)
    assert without["instance"].startswith("urn:dpp:request:")
    request = RequestFactory().get("/v1/whatever")
    assert json.loads(problem_response(ApplicationError("NOT_FOUND"), request).content)["instance"] == "/v1/whatever"
