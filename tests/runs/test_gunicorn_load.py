"""A real gunicorn under 100 concurrent submits: every request gets an answer it can act on (202, or 429/503
with Retry-After), none is dropped, and the books balance afterwards. And a body sent chunked (no
Content-Length), which only a real server delivers as such, is read whole and bounded like any other."""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from billing.models import LedgerTransaction
from runs.audit import full_audit
from runs.models import Run
from tests.helpers.api import body
from tests.helpers.money import USD, balances
from tests.helpers.personas import Persona, make_persona
from tests.processes import gunicorn

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CONCURRENCY = 100
RESERVATION_MICROS = 50_000


@pytest.fixture(scope="module")
def api(django_db_setup: None) -> Iterator[str]:
    with gunicorn(workers=2, threads=4) as base_url:
        yield base_url


def _storm(base_url: str, persona: Persona, keys: list[str]) -> list[tuple[int, dict[str, str], dict[str, Any]]]:
    """One POST /v1/runs per key, all released at once, each thread with its own keep-alive session."""
    barrier = threading.Barrier(len(keys))

    def one(key: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        with requests.Session() as session:
            barrier.wait(timeout=30)
            response = session.post(
                f"{base_url}/v1/runs",
                data=json.dumps(body(max_cost_usd="0.0500")),
                headers={
                    "Authorization": f"Bearer {persona.api_key}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": key,
                },
                timeout=60,
            )
            return response.status_code, dict(response.headers), response.json()

    with ThreadPoolExecutor(max_workers=len(keys)) as pool:
        return list(pool.map(one, keys))  # a connection error would raise here and fail the test


def _check_answers(answers: list[tuple[int, dict[str, str], dict[str, Any]]]) -> Counter[int]:
    statuses = Counter(status for status, _, _ in answers)
    assert set(statuses) <= {202, 429, 503}, statuses
    for status, headers, answer in answers:
        if status == 202:
            assert answer["status"] == "QUEUED"
            assert headers["Location"] == answer["poll"]["href"]
        else:
            assert headers["Content-Type"] == "application/problem+json"
            assert int(headers["Retry-After"]) >= 1
            assert answer["reason_code"] in {"RATE_LIMITED", "CONCURRENCY_LIMITED", "UNAVAILABLE"}
    return statuses


def _books_balance(persona: Persona, accepted_runs: int) -> None:
    report = full_audit()
    assert report.ok, report.violations
    assert Run.objects.filter(tenant=persona.tenant).count() == accepted_runs
    assert LedgerTransaction.objects.filter(tenant=persona.tenant, kind="RESERVE").count() == accepted_runs
    assert balances(persona) == (100 * USD - accepted_runs * RESERVATION_MICROS, accepted_runs * RESERVATION_MICROS)


def test_100_concurrent_submits_all_answered_and_the_ledger_audits_clean(api: str) -> None:
    persona = make_persona(plan="unlimited", credit_micros=100 * USD)
    answers = _storm(api, persona, [f"load-{uuid.uuid4().hex}" for _ in range(CONCURRENCY)])
    statuses = _check_answers(answers)
    print("gunicorn load:", dict(statuses))
    assert len({answer["run_id"] for status, _, answer in answers if status == 202}) == statuses[202]
    assert statuses[202] >= CONCURRENCY // 2, statuses  # the plan allows them all: refusals are overload only
    _books_balance(persona, statuses[202])


def test_100_concurrent_submits_on_20_keys_make_at_most_20_runs(api: str) -> None:
    persona = make_persona(plan="unlimited", credit_micros=100 * USD)
    keys = [f"dup-{i % 20:02d}-{persona.tenant.pk}" for i in range(CONCURRENCY)]
    answers = _storm(api, persona, keys)
    statuses = _check_answers(answers)
    print("gunicorn load:", dict(statuses))
    by_key: dict[str, set[str]] = {}
    for key, (status, _, answer) in zip(keys, answers, strict=True):
        if status == 202:
            by_key.setdefault(key, set()).add(answer["run_id"])
    assert all(len(run_ids) == 1 for run_ids in by_key.values()), by_key
    assert statuses[202] >= CONCURRENCY // 2, statuses
    _books_balance(persona, len(by_key))


def _chunked(data: bytes, size: int = 4096) -> Iterator[bytes]:
    """The body as a generator: requests sends it with `Transfer-Encoding: chunked` and no Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_a_chunked_submit_is_read_whole(api: str) -> None:
    persona = make_persona(plan="unlimited", credit_micros=USD)
    response = requests.post(
        f"{api}/v1/runs",
        data=_chunked(json.dumps(body(max_cost_usd="0.0500")).encode()),
        headers={
            "Authorization": f"Bearer {persona.api_key}",
            "Content-Type": "application/json",
            "Idempotency-Key": uuid.uuid4().hex,
        },
        timeout=30,
    )
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.request.headers
    assert response.status_code == 202, response.text
    assert Run.objects.filter(tenant=persona.tenant).count() == 1


def test_a_chunked_body_over_256_kib_is_413(api: str) -> None:
    persona = make_persona(plan="unlimited", credit_micros=USD)
    oversized = json.dumps({**body(), "pad": "x" * (256 * 1024)}).encode()
    response = requests.post(
        f"{api}/v1/runs",
        data=_chunked(oversized),
        headers={
            "Authorization": f"Bearer {persona.api_key}",
            "Content-Type": "application/json",
            "Idempotency-Key": uuid.uuid4().hex,
        },
        timeout=30,
    )
    assert response.status_code == 413, response.text
    assert response.json()["reason_code"] == "PAYLOAD_TOO_LARGE"
    assert Run.objects.filter(tenant=persona.tenant).count() == 0


def test_a_broken_chunked_body_is_a_400_not_a_500(api: str) -> None:
    persona = make_persona(plan="unlimited", credit_micros=USD)
    host, port = api.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/v1/runs")
    for name, value in {
        "Authorization": f"Bearer {persona.api_key}",
        "Content-Type": "application/json",
        "Idempotency-Key": uuid.uuid4().hex,
        "Transfer-Encoding": "chunked",
    }.items():
        conn.putheader(name, value)
    conn.endheaders()
    conn.send(b"zz\r\n{}\r\n0\r\n\r\n")  # "zz" is no chunk size
    response = conn.getresponse()
    assert response.status == 400
    assert json.loads(response.read())["reason_code"] == "MALFORMED_JSON"
    conn.close()
    assert Run.objects.filter(tenant=persona.tenant).count() == 0
