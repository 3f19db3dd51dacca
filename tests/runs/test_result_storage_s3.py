"""The results bucket on S3 (moto's server on 127.0.0.1): what is absent, what is an outage (SPEC §3.3, §4).

A signed URL is made without asking S3, and S3 answers 404 for any key of a bucket that does not exist: so the
result endpoint looks before it redirects (410 for a result gone, 503 when S3 cannot answer or the bucket is
missing), the reaper rolls back only when the bucket is there and the envelope is not, and /readyz calls the
storage down without its bucket.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from django.conf import settings
from django.test import Client, override_settings

from dpp.http.errors import DependencyUnavailableError
from reaper.services import reconcile_once
from runs import results
from tests.e2e.harness import REGION, S3_BUCKET, s3_results_storage
from tests.helpers.api import accepted, body
from tests.helpers.personas import Persona, make_persona
from tests.helpers.problems import assert_problem
from tests.helpers.states import execute, run_row, stale_claim
from tests.processes import free_port, moto_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@contextlib.contextmanager
def s3_storage(endpoint: str) -> Iterator[Any]:
    """The results storage on moto's S3, with a fresh bucket; yields a boto3 client of the same server."""
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="dummy", aws_secret_access_key="dummy"
    )
    client.create_bucket(Bucket=S3_BUCKET)
    try:
        with override_settings(STORAGES={**settings.STORAGES, "results": s3_results_storage(endpoint)}):
            yield client
    finally:
        for item in client.list_objects_v2(Bucket=S3_BUCKET).get("Contents", []):
            client.delete_object(Bucket=S3_BUCKET, Key=item["Key"])
        client.delete_bucket(Bucket=S3_BUCKET)


def _drop_bucket(client: Any) -> None:
    for item in client.list_objects_v2(Bucket=S3_BUCKET).get("Contents", []):
        client.delete_object(Bucket=S3_BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=S3_BUCKET)


@pytest.fixture
def tenant() -> Persona:
    return make_persona(plan="unlimited")


def _completed(tenant: Persona) -> str:
    run_id: str = accepted(tenant.client, body("decision", max_cost_usd="0.0100"))["run_id"]
    assert execute(run_id) == "completed"
    return run_id


def test_a_stored_result_redirects_to_its_signed_url(endpoint: str, tenant: Persona) -> None:
    with s3_storage(endpoint):
        run_id = _completed(tenant)
        response = tenant.client.get(f"/v1/runs/{run_id}/result")
        assert response.status_code == 302
        assert response["Location"].startswith(f"{endpoint}/{S3_BUCKET}/results/")


def test_a_result_gone_from_the_bucket_is_410(endpoint: str, tenant: Persona) -> None:
    with s3_storage(endpoint) as client:
        run_id = _completed(tenant)
        client.delete_object(Bucket=S3_BUCKET, Key=run_row(run_id).result_key)
        assert_problem(tenant.client.get(f"/v1/runs/{run_id}/result"), 410, "RESULT_EXPIRED")


def test_a_missing_bucket_is_503_not_410(endpoint: str, tenant: Persona) -> None:
    with s3_storage(endpoint) as client:
        run_id = _completed(tenant)
        _drop_bucket(client)
        response = tenant.client.get(f"/v1/runs/{run_id}/result")
        assert_problem(response, 503, "UNAVAILABLE")
        assert response["Retry-After"]
        client.create_bucket(Bucket=S3_BUCKET)  # for the fixture's cleanup


def test_an_unreachable_s3_is_503(endpoint: str, tenant: Persona) -> None:
    with s3_storage(endpoint):
        run_id = _completed(tenant)
        closed = {**s3_results_storage(f"http://127.0.0.1:{free_port()}")}
        closed["OPTIONS"] = {**closed["OPTIONS"], "client_config": _no_retries()}
        with override_settings(STORAGES={**settings.STORAGES, "results": closed}):
            assert_problem(tenant.client.get(f"/v1/runs/{run_id}/result"), 503, "UNAVAILABLE")


def _no_retries() -> Any:
    from botocore.config import Config

    return Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2, read_timeout=2)


def test_the_reaper_rolls_back_a_missing_envelope_only_when_the_bucket_is_there(endpoint: str, tenant: Persona) -> None:
    with s3_storage(endpoint) as client:
        claimed, _ = stale_claim(tenant, max_cost_usd="0.5000")  # its worker died before uploading the envelope
        _drop_bucket(client)
        report = reconcile_once()
        assert (report.rolled_back, report.storage_unavailable) == (0, 1)
        assert run_row(claimed.pk).finalize_stage == "CLAIMED"
        client.create_bucket(Bucket=S3_BUCKET)
        report = reconcile_once()
        assert (report.rolled_back, report.storage_unavailable) == (1, 0)
        run = run_row(claimed.pk)
        assert (run.status, run.reason_code) == ("FAILED", "FINALIZE_ABORTED")


def test_readyz_calls_the_storage_down_without_its_bucket(endpoint: str) -> None:
    with s3_storage(endpoint) as client:
        assert Client().get("/readyz").json()["services"]["storage"] == "up"
        _drop_bucket(client)
        assert Client().get("/readyz").json()["services"]["storage"] == "down"
        client.create_bucket(Bucket=S3_BUCKET)


def test_an_envelope_of_a_missing_bucket_is_unavailable_not_absent(endpoint: str) -> None:
    with s3_storage(endpoint) as client:
        assert results.envelope_read("results/t/r/f.json") is None
        _drop_bucket(client)
        with pytest.raises(DependencyUnavailableError):
            results.envelope_read("results/t/r/f.json")
        client.create_bucket(Bucket=S3_BUCKET)
