"""An `Accept` (or `?format=`) the API cannot satisfy gets its JSON, never a refusal (RFC 9110 §12.5.1)."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from django.test import Client

from tests.helpers.api import accepted, body, submit
from tests.helpers.personas import Persona
from tests.helpers.problems import assert_problem
from tests.helpers.states import execute

pytestmark = pytest.mark.django_db

# What an agent may send: the problem type it expects on errors, a library's default, or something odd.
ODD_ACCEPTS = [
    "application/problem+json",
    "text/plain",
    "application/xml",
    "text/html;q=0.9, image/webp",
    "application/json;q=0, text/csv",
    "*/xml",
]


@pytest.mark.parametrize("accept", ODD_ACCEPTS)
def test_reads_answer_json_whatever_the_accept(owner: Persona, accept: str) -> None:
    response = owner.client.get("/v1/account", HTTP_ACCEPT=accept)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content)["tenant_id"] == owner.tenant.pk


@pytest.mark.parametrize("accept", ODD_ACCEPTS)
def test_a_submit_is_accepted_whatever_the_accept(unlimited: Persona, accept: str) -> None:
    response = submit(unlimited.client, HTTP_ACCEPT=accept)
    assert response.status_code == 202, response.content
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content)["status"] == "QUEUED"


@pytest.mark.parametrize("accept", ["application/problem+json", "text/plain"])
def test_errors_stay_problems_whatever_the_accept(owner: Persona, accept: str) -> None:
    response = owner.client.get(f"/v1/runs/{uuid.uuid4()}", HTTP_ACCEPT=accept)
    assert_problem(response, 404, "NOT_FOUND")
    bad = owner.client.get("/v1/runs", {"status": "BOGUS"}, HTTP_ACCEPT=accept)
    assert_problem(bad, 422, "VALIDATION_ERROR")


def test_json_with_parameters_is_still_honoured(owner: Persona) -> None:
    response = owner.client.get("/v1/account", HTTP_ACCEPT="application/json; indent=4")
    assert response.status_code == 200
    assert response.content.startswith(b'{\n    "')


@pytest.mark.parametrize("fmt", ["json", "xml", "api"])
def test_a_format_parameter_never_hides_a_run(unlimited: Persona, fmt: str) -> None:
    run_id = accepted(unlimited.client, body())["run_id"]
    response = unlimited.client.get(f"/v1/runs/{run_id}", {"format": fmt})
    assert response.status_code == 200, response.content  # DRF answered 404 to a format it has no renderer for
    assert response["Content-Type"] == "application/json"
    assert response.json()["run_id"] == run_id


@pytest.mark.parametrize("accept", ["text/plain", "application/xml"])
def test_the_openapi_document_is_served_whatever_the_accept(client: Client, accept: str) -> None:
    response = client.get("/v1/openapi.json", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/vnd.oai.openapi+json"
    assert json.loads(response.content)["openapi"].startswith("3.")


@pytest.mark.django_db(transaction=True)
def test_the_result_envelope_is_streamed_whatever_the_accept(unlimited: Persona) -> None:
    run_id = accepted(unlimited.client, body())["run_id"]
    assert execute(run_id) == "completed"
    sha256 = unlimited.client.get(f"/v1/runs/{run_id}").json()["result"]["sha256"]
    for accept in [*ODD_ACCEPTS, "application/json"]:
        response = unlimited.client.get(f"/v1/runs/{run_id}/result", HTTP_ACCEPT=accept)
        assert response.status_code == 200, (accept, response.content)
        assert response["Content-Type"] == "application/json"
        assert hashlib.sha256(response.content).hexdigest() == sha256
        assert (response["ETag"], response["X-DPP-Result-SHA256"]) == (f'"{sha256}"', sha256)
