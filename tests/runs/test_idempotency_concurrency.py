"""Concurrent submits on PostgreSQL with real threads (SPEC §4 "Idempotency", §2.1 "A reservation is one
conditional UPDATE"): never two runs for one key, never more reservations than the money covers.

Each thread has its own API client and its own database connection, closed when the thread ends.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import Q
from rest_framework.test import APIClient

from billing.models import LedgerTransaction
from runs import services
from runs.audit import full_audit
from runs.charges import Ending
from runs.models import Run
from tests.helpers.api import body, new_key, submit
from tests.helpers.money import USD, balances
from tests.helpers.personas import Persona, make_persona
from tests.helpers.states import queued_run
from tests.helpers.threads import close_thread_connection

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 50


def _race(persona: Persona, keys: list[str], payload: dict[str, Any]) -> list[tuple[int, dict[str, Any], bool]]:
    """POST /v1/runs once per key, all threads released at the same moment; (status, body, replayed) each."""
    barrier = threading.Barrier(len(keys))

    def one(key: str) -> tuple[int, dict[str, Any], bool]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {persona.api_key}")
        try:
            barrier.wait(timeout=30)
            response = submit(client, payload, key=key)
            return response.status_code, json.loads(response.content), response.get("Idempotent-Replayed") == "true"
        finally:
            close_thread_connection()

    with ThreadPoolExecutor(max_workers=len(keys)) as pool:
        return list(pool.map(one, keys))


def _audit_is_clean() -> None:
    report = full_audit()
    assert report.ok, report.violations
    assert report.transactions == LedgerTransaction.objects.count()


def test_50_identical_submits_make_one_run_and_one_reservation() -> None:
    persona = make_persona(plan="unlimited", credit_micros=10 * USD)
    key = new_key()
    answers = _race(persona, [key] * THREADS, body(max_cost_usd="0.0500"))
    assert Counter(status for status, _, _ in answers) == {202: THREADS}
    run_ids = {receipt["run_id"] for _, receipt, _ in answers}
    assert len(run_ids) == 1
    assert sum(replayed for _, _, replayed in answers) == THREADS - 1
    first = answers[0][1]
    assert all(receipt == first for _, receipt, _ in answers)  # the identical receipt, byte for byte
    assert Run.objects.filter(tenant=persona.tenant).count() == 1
    assert LedgerTransaction.objects.filter(tenant=persona.tenant, kind="RESERVE").count() == 1
    assert balances(persona) == (10 * USD - 50_000, 50_000)
    _audit_is_clean()


def test_50_submits_of_one_payload_in_both_header_forms_and_spellings_make_one_run() -> None:
    """Half the threads send the sf-String form of the key and every default spelt out, half the bare form and
    nothing optional: one payload under one key (SPEC §4 "Idempotency"), so one run and one reservation."""
    persona = make_persona(plan="unlimited", credit_micros=10 * USD)
    key = new_key()
    spelt_out = body(inputs={"cost_usd": "0.03", "sleep_ms": 0, "outcome": "succeed"}, timebox_sec=90)
    terse = body(inputs={"cost_usd": "0.0300"}, max_cost_usd="0.05")
    barrier = threading.Barrier(THREADS)

    def one(i: int) -> tuple[int, str]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {persona.api_key}")
        try:
            barrier.wait(timeout=30)
            response = submit(client, spelt_out if i % 2 else terse, key=f'"{key}"' if i % 2 else key)
            return response.status_code, json.loads(response.content).get("run_id", "")
        finally:
            close_thread_connection()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        answers = list(pool.map(one, range(THREADS)))
    assert Counter(status for status, _ in answers) == {202: THREADS}
    assert len({run_id for _, run_id in answers}) == 1
    assert Run.objects.filter(tenant=persona.tenant).count() == 1
    assert balances(persona) == (10 * USD - 50_000, 50_000)
    _audit_is_clean()


def test_50_submits_on_money_for_exactly_10_accept_exactly_10() -> None:
    persona = make_persona(plan="unlimited", credit_micros=10 * 50_000)
    answers = _race(persona, [new_key() for _ in range(THREADS)], body(max_cost_usd="0.0500"))
    assert Counter(status for status, _, _ in answers) == {202: 10, 402: 40}
    for status, answer, replayed in answers:
        assert not replayed
        if status == 402:
            assert answer["reason_code"] == "INSUFFICIENT_FUNDS"
            assert answer["required_usd"] == "0.0500"
            assert answer["available_usd"] in {"0.0000", "0.0500", "0.1000", "0.1500", "0.2000", "0.2500",
                                               "0.3000", "0.3500", "0.4000", "0.4500"}  # fmt: skip
    accepted_ids = {answer["run_id"] for status, answer, _ in answers if status == 202}
    assert len(accepted_ids) == 10
    assert set(Run.objects.filter(tenant=persona.tenant).values_list("pk", flat=True).iterator()) == {
        uuid.UUID(run_id) for run_id in accepted_ids
    }
    assert LedgerTransaction.objects.filter(tenant=persona.tenant, kind="RESERVE").count() == 10
    assert balances(persona) == (0, 10 * 50_000)
    _audit_is_clean()


def test_same_key_race_on_money_for_one_run_gives_50_receipts() -> None:
    """The run is inserted before money moves: every loser waits on the key, then replays (never 402)."""
    persona = make_persona(plan="unlimited", credit_micros=50_000)
    key = new_key()
    answers = _race(persona, [key] * THREADS, body(max_cost_usd="0.0500"))
    assert Counter(status for status, _, _ in answers) == {202: THREADS}, [a for s, a, _ in answers if s != 202][:3]
    assert len({receipt["run_id"] for _, receipt, _ in answers}) == 1
    assert sum(replayed for _, _, replayed in answers) == THREADS - 1
    assert Run.objects.get(tenant=persona.tenant).idempotency_key == key
    assert LedgerTransaction.objects.filter(tenant=persona.tenant, kind="RESERVE").count() == 1
    assert balances(persona) == (0, 50_000)
    _audit_is_clean()


def test_a_reservation_racing_a_release_is_judged_on_the_balance_it_waited_for() -> None:
    """A submit whose balance UPDATE waits on the tenant's rows while a cancel releases money there: PostgreSQL
    judges the guard on the balance the statement began with, which no longer holds once it gets the rows. Found
    from outside as a 429 CONCURRENCY_LIMITED on a tenant far below its limit; the submit is now tried again and
    accepted, since the money is there."""
    persona = make_persona(plan="unlimited", credit_micros=50_000)
    queued = queued_run(persona, max_cost_usd="0.0400")  # available 0.0100
    locked, release = threading.Event(), threading.Event()

    def cancel_and_wait() -> None:  # the cancel's release (held → available), its commit held back
        try:
            with transaction.atomic():
                done = services._finish(
                    Run.objects.get(pk=queued.pk),
                    ending=Ending.CANCELED_BEFORE_START,
                    guard=Q(status="QUEUED"),
                    reason_code="CANCELED_BY_CLIENT",
                )
                assert done
                locked.set()
                assert release.wait(timeout=30)
        finally:
            close_thread_connection()

    def submit_over_http() -> tuple[int, dict[str, Any]]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {persona.api_key}")
        try:
            response = submit(client, body(max_cost_usd="0.0300"))  # more than 0.0100, less than the 0.0500 after it
            return response.status_code, json.loads(response.content)
        finally:
            close_thread_connection()

    with ThreadPoolExecutor(max_workers=2) as pool:
        canceling = pool.submit(cancel_and_wait)
        assert locked.wait(timeout=30)
        accepting = pool.submit(submit_over_http)
        _wait_for_a_lock_wait_on("UPDATE billing_account")
        release.set()
        canceling.result(timeout=30)
        status, answer = accepting.result(timeout=30)
    assert (status, answer.get("reason_code")) == (202, None), answer
    assert balances(persona) == (20_000, 30_000)
    _audit_is_clean()


def _wait_for_a_lock_wait_on(statement: str) -> None:
    """Until another session's `statement` waits for a row lock (pg_stat_activity), at most 30 s."""
    deadline = time.monotonic() + 30
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                [f"{statement}%"],
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError(f"no session waited on a lock in {statement!r}")
