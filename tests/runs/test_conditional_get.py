"""Conditional GET (SPEC §4 Caching, §4.1 412): a strong ETag on a run and on its result, If-None-Match → 304
without a body but with the headers of the 200, a failing If-Match → 412 PRECONDITION_FAILED."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.helpers.api import accepted, assert_rate_headers, body
from tests.helpers.personas import Persona
from tests.helpers.problems import assert_problem
from tests.helpers.states import execute

pytestmark = pytest.mark.django_db

KEPT_ON_304 = ("ETag", "X-DPP-Cost-Reserved", "X-DPP-Cost-Minimum-Fee", "RateLimit", "X-Request-ID", "X-Trace-Id")


def _etag_of(response: Any) -> str:
    etag: str = response["ETag"]
    assert etag == f'"{hashlib.sha256(response.content).hexdigest()}"'  # strong (no W/), of the bytes sent
    return etag


def _assert_not_modified(response: Any, fresh: Any) -> None:
    assert response.status_code == 304, response.content
    assert response.content == b""
    for name in KEPT_ON_304:
        if name in fresh:
            assert name in response, name
    assert response["ETag"] == fresh["ETag"]
    assert "Content-Type" not in response
    assert response["RateLimit-Policy"] == fresh["RateLimit-Policy"] == '"reads";q=100000;w=60'


def test_a_run_has_a_strong_etag_and_a_matching_if_none_match_is_a_304(unlimited: Persona) -> None:
    run_id = accepted(unlimited.client, body())["run_id"]
    path = f"/v1/runs/{run_id}"
    fresh = unlimited.client.get(path)
    assert fresh.status_code == 200
    etag = _etag_of(fresh)
    assert fresh["X-DPP-Cost-Reserved"] == "0.0500"
    for if_none_match in (etag, f"W/{etag}", f'"nope", {etag}', "*"):  # weak comparison, lists, any
        answer = unlimited.client.get(path, HTTP_IF_NONE_MATCH=if_none_match)
        _assert_not_modified(answer, fresh)
        assert answer["X-DPP-Cost-Reserved"] == "0.0500"
        assert answer["X-Trace-Id"] == fresh["X-Trace-Id"]  # the run's own trace id
    _assert_not_modified(unlimited.client.head(path, HTTP_IF_NONE_MATCH=etag), fresh)
    other = unlimited.client.get(path, HTTP_IF_NONE_MATCH='"nope", W/"other"')
    assert (other.status_code, other.content) == (200, fresh.content)


def test_a_changed_run_has_another_etag(unlimited: Persona) -> None:
    run_id = accepted(unlimited.client, body())["run_id"]
    path = f"/v1/runs/{run_id}"
    before = _etag_of(unlimited.client.get(path))
    assert unlimited.client.post(f"/v1/runs/{run_id}/cancel").status_code == 200
    after = unlimited.client.get(path, HTTP_IF_NONE_MATCH=before)
    assert after.status_code == 200
    assert after.json()["status"] == "CANCELED"
    assert _etag_of(after) != before


def test_if_match_that_does_not_match_is_412(unlimited: Persona) -> None:
    run_id = accepted(unlimited.client, body())["run_id"]
    path = f"/v1/runs/{run_id}"
    etag = _etag_of(unlimited.client.get(path))
    refused = unlimited.client.get(path, HTTP_IF_MATCH='"not-the-etag"')
    problem = assert_problem(refused, 412, "PRECONDITION_FAILED")
    assert etag in problem["detail"]
    assert refused["ETag"] == etag
    assert_rate_headers(refused, "reads", 100_000)
    assert unlimited.client.get(path, HTTP_IF_MATCH=f'"x", {etag}').status_code == 200
    assert unlimited.client.get(path, HTTP_IF_MATCH="*").status_code == 200
    assert_problem(unlimited.client.get(path, HTTP_IF_MATCH=f"W/{etag}"), 412, "PRECONDITION_FAILED")  # strong
    # The problem has its page, as every reason code.
    assert unlimited.client.get("/problems/precondition-failed").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_the_result_answers_if_none_match_and_if_match(unlimited: Persona) -> None:
    run_id = accepted(unlimited.client, body())["run_id"]
    assert execute(run_id) == "completed"
    sha256 = unlimited.client.get(f"/v1/runs/{run_id}").json()["result"]["sha256"]
    path = f"/v1/runs/{run_id}/result"
    fresh = unlimited.client.get(path)
    assert _etag_of(fresh) == f'"{sha256}"'
    answer = unlimited.client.get(path, HTTP_IF_NONE_MATCH=f'"{sha256}"')
    _assert_not_modified(answer, fresh)
    assert answer["X-DPP-Result-SHA256"] == sha256
    assert unlimited.client.get(path, HTTP_IF_NONE_MATCH='"stale"').content == fresh.content
    assert_problem(unlimited.client.get(path, HTTP_IF_MATCH='"stale"'), 412, "PRECONDITION_FAILED")
    assert unlimited.client.get(path, HTTP_IF_MATCH=f'"{sha256}"').content == fresh.content


def test_problems_are_never_turned_into_304s(owner: Persona) -> None:
    response = owner.client.get("/v1/runs/00000000-0000-0000-0000-000000000000", HTTP_IF_NONE_MATCH="*")
    assert_problem(response, 404, "NOT_FOUND")
