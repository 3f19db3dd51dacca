"""Spend limits under concurrency on PostgreSQL with real threads (SPEC §8): 50 submits at once on room for 10
accept exactly 10, on one key and across siblings sharing their parent's limit; the counters agree with the runs.

Each thread has its own API client and its own database connection, closed when the thread ends.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from rest_framework.test import APIClient

from billing.models import KeySpend, LedgerTransaction
from runs.audit import full_audit
from runs.models import Run
from tests.helpers.api import body, new_key
from tests.helpers.money import USD, balances
from tests.helpers.personas import make_persona
from tests.helpers.threads import close_thread_connection
from tests.runs.keys_support import Key, child_key, root_key

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 50
MAX_COST = 50_000


def _race(secrets: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """One POST /v1/runs per secret, all threads released at the same moment."""
    barrier = threading.Barrier(len(secrets))
    payload = json.dumps(body(max_cost_usd="0.0500"))

    def one(secret: str) -> tuple[int, dict[str, Any]]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        try:
            barrier.wait(timeout=30)
            response = client.post(
                "/v1/runs", data=payload, content_type="application/json", HTTP_IDEMPOTENCY_KEY=new_key()
            )
            return response.status_code, json.loads(response.content)
        finally:
            close_thread_connection()

    with ThreadPoolExecutor(max_workers=len(secrets)) as pool:
        return list(pool.map(one, secrets))


def _spent(key: Key) -> int:
    return sum(KeySpend.objects.filter(api_key__prefix=key.prefix).values_list("spent_micros", flat=True))


def test_50_submits_on_a_key_with_room_for_10_accept_exactly_10() -> None:
    persona = make_persona(plan="unlimited", credit_micros=100 * USD)
    key = child_key(root_key(persona), spend_limit_micros=10 * MAX_COST, spend_window="day")
    answers = _race([key.secret] * THREADS)
    assert Counter(status for status, _ in answers) == {202: 10, 402: 40}
    for status, answer in answers:
        if status == 402:
            assert answer["reason_code"] == "KEY_SPEND_LIMIT"
            assert (answer["key_prefix"], answer["limit_usd"], answer["required_usd"]) == (
                key.prefix,
                "0.5000",
                "0.0500",
            )
            assert answer["spent_usd"] == "0.5000"  # refused only once the 10 are counted (committed)
    assert Run.objects.filter(api_key__prefix=key.prefix).count() == 10
    assert LedgerTransaction.objects.filter(tenant=persona.tenant, kind="RESERVE").count() == 10
    assert _spent(key) == 10 * MAX_COST
    assert balances(persona) == (100 * USD - 10 * MAX_COST, 10 * MAX_COST)
    report = full_audit()
    assert report.ok, report.violations


def test_siblings_sharing_their_parents_limit_accept_exactly_10_between_them() -> None:
    persona = make_persona(plan="unlimited", credit_micros=100 * USD)
    parent = child_key(root_key(persona), can_manage_keys=True, spend_limit_micros=10 * MAX_COST, spend_window="month")
    left = child_key(parent, spend_limit_micros=8 * MAX_COST, spend_window="day")
    right = child_key(parent)  # no limit of its own: only the parent's
    answers = _race([left.secret, right.secret] * (THREADS // 2))
    assert Counter(status for status, _ in answers) == {202: 10, 402: 40}
    refusers = Counter(answer["key_prefix"] for status, answer in answers if status == 402)
    assert set(refusers) <= {parent.prefix, left.prefix}
    assert refusers[parent.prefix] > 0
    accepted = Run.objects.filter(tenant=persona.tenant)
    assert accepted.count() == 10
    assert accepted.filter(api_key__prefix=left.prefix).count() <= 8
    assert _spent(parent) == 10 * MAX_COST
    assert _spent(left) == accepted.filter(api_key__prefix=left.prefix).count() * MAX_COST
    assert _spent(right) == 0  # no limit: no counter
    report = full_audit()
    assert report.ok, report.violations


def test_settles_and_submits_of_one_tree_at_once_neither_deadlock_nor_miscount() -> None:
    """Cancels (settles: counters → accounts) racing submits (counters → accounts) under one limited parent: the
    one lock order means no deadlock (a deadlock would be a 500 here), and every counter agrees with its runs."""
    persona = make_persona(plan="unlimited", credit_micros=100 * USD)
    parent = child_key(root_key(persona), can_manage_keys=True, spend_limit_micros=40 * MAX_COST, spend_window="day")
    left = child_key(parent, spend_limit_micros=20 * MAX_COST, spend_window="day")
    right = child_key(parent)
    queued = [status for status, _ in _race([left.secret] * 20)]
    assert queued == [202] * 20
    run_ids = [str(pk) for pk in Run.objects.filter(api_key__prefix=left.prefix).values_list("pk", flat=True)]
    barrier = threading.Barrier(len(run_ids) * 2)
    payload = json.dumps(body(max_cost_usd="0.0500"))

    def cancel(run_id: str) -> int:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {left.secret}")
        try:
            barrier.wait(timeout=30)
            return client.post(f"/v1/runs/{run_id}/cancel").status_code
        finally:
            close_thread_connection()

    def submit_right(_: str) -> int:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {right.secret}")
        try:
            barrier.wait(timeout=30)
            return client.post(
                "/v1/runs", data=payload, content_type="application/json", HTTP_IDEMPOTENCY_KEY=new_key()
            ).status_code
        finally:
            close_thread_connection()

    with ThreadPoolExecutor(max_workers=len(run_ids) * 2) as pool:
        cancels = pool.map(cancel, run_ids)
        submits = pool.map(submit_right, run_ids)
        assert list(cancels) == [200] * 20
        statuses = Counter(submits)
    # The parent had room for 20 more at first, and gets back what the cancels release while they race.
    assert statuses[202] >= 20
    assert set(statuses) <= {202, 402}
    assert _spent(left) == 0
    assert _spent(parent) == statuses[202] * MAX_COST
    report = full_audit()
    assert report.ok, report.violations
