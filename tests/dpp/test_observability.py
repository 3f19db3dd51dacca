"""Structured logs carry the ids of the work at hand; CORS exposes the DPP headers to browsers."""

import json
import logging
import sys

import pytest
from django.test import Client

from dpp.observability import ContextFilter, JsonFormatter, log_context
from tests.helpers.api import header_tokens
from tests.helpers.personas import Persona


def _format(record: logging.LogRecord) -> dict:
    ContextFilter().filter(record)
    return json.loads(JsonFormatter().format(record))


def test_log_lines_are_json_with_the_bound_ids() -> None:
    with log_context(trace_id="trace-1", tenant_id="acme", run_id="run-1"):
        record = logging.LogRecord("dpp.test", logging.INFO, __file__, 1, "hello %s", ("world",), None)
        line = _format(record)
    assert line["message"] == "hello world"
    assert (line["trace_id"], line["tenant_id"], line["run_id"]) == ("trace-1", "acme", "run-1")
    assert line["level"] == "INFO"
    outside = _format(logging.LogRecord("dpp.test", logging.INFO, __file__, 1, "x", (), None))
    assert "run_id" not in outside


def _boom() -> None:
    raise ValueError("boom")


def test_exceptions_are_logged_with_their_stack() -> None:
    try:
        _boom()
    except ValueError:
        record = logging.LogRecord("dpp.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = _format(record)
    assert line["exc_type"] == "ValueError"
    assert "boom" in line["stack"]


@pytest.mark.django_db
def test_access_log_carries_trace_and_tenant(owner: Persona, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dpp.access"):
        owner.client.get("/v1/account", HTTP_X_TRACE_ID="trace-xyz")
    records = [r for r in caplog.records if r.name == "dpp.access"]
    assert len(records) == 1
    line = _format(records[0])
    assert line["trace_id"] == "trace-xyz"
    assert line["tenant_id"] == owner.tenant.pk
    assert line["status"] == 200
    assert line["route"] == "/v1/account"


@pytest.mark.django_db
def test_cors_exposes_dpp_headers_to_allowed_origins(settings, owner: Persona) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    response = owner.client.get("/v1/account", HTTP_ORIGIN="https://app.example.com")
    assert response["Access-Control-Allow-Origin"] == "https://app.example.com"
    exposed = header_tokens(response, "Access-Control-Expose-Headers")
    assert {
        "x-dpp-cost-reserved",
        "x-dpp-cost-minimum-fee",
        "x-dpp-cost-actual",
        "ratelimit",
        "ratelimit-policy",
        "retry-after",
        "x-request-id",
        "x-trace-id",
        "etag",
        "tracestate",
        "location",
        "idempotent-replayed",
    } <= exposed
    other = Client().get("/health", HTTP_ORIGIN="https://evil.example.com")
    assert "Access-Control-Allow-Origin" not in other


@pytest.mark.django_db
def test_cors_exposes_the_result_digest_headers(settings, owner: Persona) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    response = owner.client.get("/v1/account", HTTP_ORIGIN="https://app.example.com")
    exposed = header_tokens(response, "Access-Control-Expose-Headers")
    assert {"etag", "x-dpp-result-sha256"} <= exposed  # what GET /v1/runs/{id}/result sends besides the body


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/v1/runs", "/health"])
def test_cors_preflight_offers_only_the_methods_the_api_serves(settings, path: str) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    browser = Client(HTTP_ORIGIN="https://app.example.com", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    response = browser.options(path)
    assert response.status_code == 200
    offered = {m.strip() for m in response["Access-Control-Allow-Methods"].split(",")}
    assert offered == {"GET", "HEAD", "POST", "OPTIONS"}


@pytest.mark.django_db
def test_invented_methods_share_one_metrics_label(caplog: pytest.LogCaptureFixture) -> None:
    client = Client()
    for method in ("FOOBAR123", "FOOBAR456", "X" * 100):
        assert client.generic(method, "/health").status_code == 405
    with caplog.at_level(logging.INFO, logger="dpp.access"):
        client.generic("Y" * 100, "/v1/runs")
    text = client.get("/metrics").content.decode()
    assert "FOOBAR" not in text
    assert "XXXX" not in text
    assert 'dpp_http_requests_total{method="other",route="/health",status="405"}' in text
    assert 'dpp_http_request_duration_seconds_count{method="other",route="/health"}' in text
    client.put("/health")  # a standard method keeps its own label
    after = client.get("/metrics").content.decode()
    assert 'dpp_http_requests_total{method="PUT",route="/health",status="405"}' in after
    (record,) = [r for r in caplog.records if r.name == "dpp.access"]
    assert record.getMessage().startswith("Y" * 32 + " /v1/runs ")  # the log keeps the method as sent, cut
