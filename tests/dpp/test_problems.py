"""Every error path answers RFC 9457 application/problem+json with all the members of SPEC §4.1."""

import json
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.helpers.personas import Persona
from tests.helpers.problems import PROBLEM_MEMBERS

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.dpp.urls")]


def assert_problem(response, status: int, reason: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = json.loads(response.content)
    assert body.keys() >= PROBLEM_MEMBERS
    assert body["status"] == status
    assert body["reason_code"] == reason
    assert body["type"] == "/problems/" + reason.lower().replace("_", "-")
    assert body["trace_id"] == response["X-Trace-Id"]
    assert body["instance"].startswith("/")
    return body


def test_unknown_path_is_a_problem() -> None:
    body = assert_problem(Client().get("/no/such/path"), 404, "NOT_FOUND")
    assert body["instance"] == "/no/such/path"


def test_unknown_v1_path_is_a_problem(owner: Persona) -> None:
    assert_problem(owner.client.get("/v1/nothing-here"), 404, "NOT_FOUND")


def test_method_not_allowed_on_api_view(owner: Persona) -> None:
    response = owner.client.delete("/v1/account")
    assert_problem(response, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in response["Allow"]


@pytest.mark.parametrize("method", ["post", "put", "delete"])
@pytest.mark.parametrize("path", ["/health", "/readyz", "/metrics"])
def test_method_not_allowed_on_plain_view(path: str, method: str) -> None:
    # CSRF checks on, as in a real server (the test client turns them off by default): a POST without a CSRF
    # token must still be the view's 405, not a CSRF 403.
    response = getattr(Client(enforce_csrf_checks=True), method)(path)
    assert_problem(response, 405, "METHOD_NOT_ALLOWED")
    assert response["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", ["/health", "/metrics"])
def test_head_on_plain_view(path: str) -> None:
    assert Client().head(path).status_code == 200


def test_unsupported_media_type(owner: Persona) -> None:
    response = owner.client.post("/test/echo", data="a=b", content_type="application/x-www-form-urlencoded")
    assert_problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_malformed_json(owner: Persona) -> None:
    response = owner.client.post("/test/echo", data='{"a": ', content_type="application/json")
    assert_problem(response, 400, "MALFORMED_JSON")


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000 + "]" * 100_000,  # deeper than Python's json module can recurse
        '{"a":' * 5_000 + "1" + "}" * 5_000,
        '{"a":' * 65 + "1" + "}" * 65,  # parses, one level over the bound
    ],
    ids=["arrays-100000", "objects-5000", "objects-65"],
)
def test_json_nested_too_deeply_is_malformed_not_a_500(owner: Persona, body: str) -> None:
    assert len(body) <= 256 * 1024
    response = owner.client.post("/test/echo", data=body, content_type="application/json")
    problem = assert_problem(response, 400, "MALFORMED_JSON")
    assert "64 levels" in problem["detail"]


@pytest.mark.parametrize("body", ['"\\ud800"', '{"a": ["x\\udc00y"]}', '{"\\ud800": 1}'], ids=["top", "value", "key"])
def test_an_unpaired_surrogate_is_malformed_not_a_500(owner: Persona, body: str) -> None:
    response = owner.client.post("/test/echo", data=body, content_type="application/json")
    assert "unpaired surrogate" in assert_problem(response, 400, "MALFORMED_JSON")["detail"]


def test_a_number_too_long_to_convert_is_malformed_without_naming_python(owner: Persona) -> None:
    body = '{"reservation": {"max_cost_usd": 1' + "0" * 4400 + "}}"
    response = owner.client.post("/test/echo", data=body, content_type="application/json")
    problem = assert_problem(response, 400, "MALFORMED_JSON")
    assert problem["detail"] == "JSON numbers of more than 4300 digits are not accepted."


def test_paired_surrogates_and_other_unicode_pass(owner: Persona) -> None:
    body = '{"emoji": "\\ud83d\\ude00", "accent": "\u00e9t\u00e9"}'
    response = owner.client.post("/test/echo", data=body, content_type="application/json")
    assert response.status_code == 200
    assert response.json() == {"echo": {"emoji": "\U0001f600", "accent": "\u00e9t\u00e9"}}


def test_json_nested_64_levels_is_accepted(owner: Persona) -> None:
    body = '{"a":' * 63 + "[1]" + "}" * 63
    response = owner.client.post("/test/echo", data=body, content_type="application/json")
    assert response.status_code == 200


def test_malformed_json_says_where(owner: Persona) -> None:
    problem = assert_problem(
        owner.client.post("/test/echo", data='{"a": 1,}', content_type="application/json"), 400, "MALFORMED_JSON"
    )
    assert "line 1 column 9" in problem["detail"]


def test_well_formed_json_passes(owner: Persona) -> None:
    response = owner.client.post("/test/echo", data={"a": 1}, format="json")
    assert response.status_code == 200
    assert response.json() == {"echo": {"a": 1}}


def test_body_over_256_kib(owner: Persona) -> None:
    body = json.dumps({"pad": "x" * (256 * 1024)})
    response = owner.client.post("/test/echo", data=body, content_type="application/json")
    assert_problem(response, 413, "PAYLOAD_TOO_LARGE")


def test_body_of_exactly_256_kib_is_accepted(owner: Persona) -> None:
    pad = 256 * 1024 - len('{"pad":""}')
    body = json.dumps({"pad": "x" * pad}, separators=(",", ":"))
    assert len(body) == 256 * 1024
    assert owner.client.post("/test/echo", data=body, content_type="application/json").status_code == 200


@pytest.mark.parametrize("path", ["/test/boom", "/test/boom-plain"])
def test_a_view_that_raises_gives_a_500_problem_without_internals(path: str) -> None:
    client = Client(raise_request_exception=False)
    response = client.get(path)
    assert_problem(response, 500, "INTERNAL_ERROR")
    text = response.content.decode()
    for leak in (
        "Traceback",
        "nonexistent_table_xyz",
        "SELECT",
        "secret-sauce",
        "hunter2",
        "RuntimeError",
        'File "',
    ):
        assert leak not in text


def test_problem_pages_are_served_for_each_type(owner: Persona) -> None:
    body = assert_problem(owner.client.delete("/v1/account"), 405, "METHOD_NOT_ALLOWED")
    page = Client().get(body["type"])
    assert page.status_code == 200
    assert page["Content-Type"].startswith("text/html")
    assert b"METHOD_NOT_ALLOWED" in page.content


def test_unknown_problem_page_is_a_404_problem() -> None:
    assert_problem(Client().get("/problems/no-such-problem"), 404, "NOT_FOUND")


def test_request_id_is_echoed_or_generated() -> None:
    echoed = Client().get("/health", HTTP_X_REQUEST_ID="req-123")
    assert echoed["X-Request-ID"] == "req-123"
    generated = Client().get("/health")
    assert len(generated["X-Request-ID"]) == 32


def test_incoming_trace_id_and_traceparent_are_honoured() -> None:
    assert Client().get("/health", HTTP_X_TRACE_ID="trace-abc").get("X-Trace-Id") == "trace-abc"
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert Client().get("/nope", HTTP_TRACEPARENT=parent).json()["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    ("traceparent", "honoured"),
    [
        (f"00-{TRACE}-00f067aa0ba902b7-01", True),
        (f"01-{TRACE}-00f067aa0ba902b7-01-future-field", True),  # a later version may add fields
        (f"ff-{TRACE}-00f067aa0ba902b7-01", False),  # version ff is invalid
        (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", False),  # lowercase hex only
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", False),
        (f"00-{TRACE}-{'0' * 16}-01", False),
        (f"00-{TRACE}-00f067aa0ba902b7-01-extra", False),  # version 00 has exactly four fields
    ],
)
def test_only_a_valid_traceparent_gives_the_trace_id(traceparent: str, honoured: bool) -> None:
    trace_id = Client().get("/nope", HTTP_TRACEPARENT=traceparent).json()["trace_id"]
    assert (trace_id == TRACE) is honoured
    assert len(trace_id) == 32


def test_unauthenticated_problem_has_www_authenticate(anon_client: APIClient) -> None:
    response = anon_client.get("/v1/ledger")
    assert_problem(response, 401, "UNAUTHENTICATED")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_chunked_header_where_the_server_does_not_undo_chunking_changes_nothing(owner: Persona) -> None:
    # Django's test client, like runserver, sets no wsgi.input_terminated: the middleware leaves the input alone.
    assert Client().post("/health", HTTP_TRANSFER_ENCODING="chunked").status_code == 405
    response = owner.client.post("/test/echo", data={"a": 1}, format="json", HTTP_TRANSFER_ENCODING="chunked")
    assert response.status_code == 200
    assert response.json() == {"echo": {"a": 1}}


SECURITY_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"}


def test_answers_made_by_dpps_middleware_carry_the_security_and_cors_headers(settings, owner: Persona) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    origin: dict[str, Any] = {"HTTP_ORIGIN": "https://app.example.com"}
    too_large = owner.client.post(
        "/v1/runs", data="x" * (256 * 1024 + 1), content_type="application/json", **origin
    )  # answered before any view: by the body limit
    not_allowed = Client().post("/health", **origin)  # Django's plain 405, rewritten as a problem
    for response, status in ((too_large, 413), (not_allowed, 405)):
        assert response.status_code == status
        assert response["Content-Type"] == "application/problem+json"
        assert {name: response.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS
        assert response["Access-Control-Allow-Origin"] == "https://app.example.com"


@pytest.mark.django_db
def test_a_413_is_counted_under_its_route(owner: Persona) -> None:
    owner.client.post("/v1/runs", data="x" * (256 * 1024 + 1), content_type="application/json")
    text = Client().get("/metrics").content.decode()
    assert 'dpp_http_requests_total{method="POST",route="/v1/runs",status="413"}' in text
