"""Issue 5, item 1: the whole pipeline over real HTTP, with a real celery worker, on each broker.

SQS + S3 (moto's server), Redis + local files, and the embedded default (SQLite + filesystem broker + local
files). On each: a diagnostic success charges exactly its cost, `outcome: fail` the minimum fee, a cost above the
reservation is capped at it, a decision run costs exactly 5_000 + 100 × options × criteria; every result
downloads and hashes to `result.sha256`; the ledger audits clean afterwards.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from dpp.money import minimum_fee
from tests.e2e.harness import E2E, Api, Stack, assert_money_balanced, embedded_stack, redis_stack, sqs_stack, usd_micros
from tests.helpers.inputs import DECISION_INPUTS, DECISION_PRICE_MICROS

pytestmark = [*E2E]


@pytest.fixture(params=["sqs", "redis", "embedded"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    if request.param == "sqs":
        with sqs_stack() as made:
            yield made
    elif request.param == "redis":
        with redis_stack() as made:
            yield made
    else:
        with embedded_stack(tmp_path / "var") as made:
            yield made


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _download_result(stack: Stack, api: Api, body: dict[str, Any]) -> bytes:
    """The envelope as an agent gets it, by both routes; both must hash to result.sha256."""
    run_id, result = body["run_id"], body["result"]
    answer = api.session.get(api.url(f"/v1/runs/{run_id}/result"), allow_redirects=False, timeout=10)
    if stack.storage == "s3":
        assert answer.status_code == 302, answer.text
        location = answer.headers["Location"]
        assert location.startswith(stack.s3_endpoint), location
        # A presigned URL: fetched without the API key, as an agent's HTTP client would.
        via_redirect = requests.get(location, timeout=10)
        via_body = requests.get(result["url"], timeout=10)
        assert via_redirect.status_code == via_body.status_code == 200, via_redirect.text
        assert _sha256(via_body.content) == result["sha256"]
        content = via_redirect.content
    else:
        assert answer.status_code == 200, answer.text
        assert result["url"].endswith(f"/v1/runs/{run_id}/result")
        content = answer.content
    assert _sha256(content) == result["sha256"]
    assert len(content) == result["bytes"]
    envelope = json.loads(content)
    assert envelope["run_id"] == run_id
    assert envelope["actual_cost_usd_micros"] == usd_micros(body["cost"]["used_usd"])
    return content


def test_pipeline_charges_exactly_on_each_broker(stack: Stack) -> None:
    tenant = stack.tenant()
    api = stack.api(tenant)
    with stack.worker(concurrency=2):
        ids = {
            "ok": api.diagnostic(cost_usd="0.0123", sleep_ms=100),
            "fail": api.diagnostic(cost_usd="0.0123", outcome="fail"),
            "capped": api.diagnostic(cost_usd="0.9000", max_cost_usd="0.0500"),
            "decision": api.submit("decision", DECISION_INPUTS, "0.0100"),
        }
        bodies = {name: api.wait(run_id) for name, run_id in ids.items()}

    ok, fail, capped, decision = (bodies[name] for name in ("ok", "fail", "capped", "decision"))
    assert (ok["status"], ok["money_state"], ok["cost"]["used_usd"], ok["error"]) == (
        "COMPLETED",
        "SETTLED",
        "0.0123",
        None,
    )
    assert (fail["status"], fail["error"]["reason_code"]) == ("FAILED", "PACK_FAILED")
    assert fail["cost"]["used_usd"] == fail["cost"]["minimum_fee_usd"] == "0.0050"
    assert fail["result"] is None
    assert (capped["status"], capped["cost"]["used_usd"]) == ("COMPLETED", "0.0500")
    assert (decision["status"], usd_micros(decision["cost"]["used_usd"])) == ("COMPLETED", DECISION_PRICE_MICROS)

    for body in (ok, capped, decision):
        content = _download_result(stack, api, body)
        if body is decision:
            data = json.loads(content)["data"]
            assert data["winner"] == "C"
            assert [row["option"] for row in data["ranking"]] == ["C", "A", "B"]
        else:
            assert json.loads(content)["data"]["outcome"] == "succeed"

    charged = 12_300 + minimum_fee(50_000) + 50_000 + DECISION_PRICE_MICROS
    assert_money_balanced(stack, tenant, charged)
