"""The run state machine (SPEC §3.1-3.2): every transition is a compare-and-set whose loser does nothing."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from billing.models import LedgerTransaction
from billing.selectors import balances_get
from dpp.observability import log_context
from runs import executor, results, services
from runs.models import FinalizeStage, MoneyState, Run, RunStatus
from tests.helpers.money import USD
from tests.helpers.personas import Persona, make_persona
from tests.helpers.states import later, queued_run, store_envelope
from tests.helpers.threads import at_once

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def tenant() -> Persona:
    return make_persona(plan="unlimited", credit_micros=1 * USD)


def settles(run: Run) -> list[LedgerTransaction]:
    return list(LedgerTransaction.objects.filter(run_id=run.pk, kind="SETTLE"))


def test_accept_reserves_and_creates_a_queued_reserved_run(tenant: Persona) -> None:
    run = queued_run(tenant, max_cost_usd="0.0500")
    assert (run.status, run.money_state, run.finalize_stage, run.version) == ("QUEUED", "RESERVED", None, 0)
    assert run.reserved_micros == 50_000
    assert run.minimum_fee_micros == 5_000
    balances = balances_get(tenant_id=tenant.tenant.pk)
    assert (balances.available_micros, balances.held_micros) == (950_000, 50_000)
    assert LedgerTransaction.objects.filter(run_id=run.pk, kind="RESERVE").count() == 1


def test_lease_is_a_compare_and_set(tenant: Persona) -> None:
    run = queued_run(tenant)
    first = services.run_lease(run_id=run.pk)
    assert first is not None
    assert first.run.status == RunStatus.PROCESSING
    assert first.run.lease_token == first.token
    assert services.run_lease(run_id=run.pk) is None  # a duplicate delivery finds nothing to lease
    assert Run.objects.get(pk=run.pk).version == 1


def test_concurrent_leases_have_exactly_one_winner(tenant: Persona) -> None:
    run = queued_run(tenant)
    winners: list[object] = []

    def lease() -> None:
        winners.append(services.run_lease(run_id=run.pk))

    assert at_once([lease] * 8) == []
    assert sum(1 for w in winners if w is not None) == 1


def test_heartbeat_extends_the_lease_without_bumping_version(tenant: Persona, settings) -> None:
    lease = services.run_lease(run_id=queued_run(tenant).pk)
    assert lease is not None
    before = Run.objects.get(pk=lease.run.pk)
    time.sleep(0.01)
    assert services.run_heartbeat(run_id=lease.run.pk, lease_token=lease.token) == "OK"
    after = Run.objects.get(pk=lease.run.pk)
    assert after.lease_expires_at is not None
    assert before.lease_expires_at is not None
    assert after.lease_expires_at > before.lease_expires_at
    assert after.version == before.version


def test_heartbeat_with_a_wrong_token_or_after_expiry_is_lost(tenant: Persona) -> None:
    lease = services.run_lease(run_id=queued_run(tenant).pk)
    assert lease is not None
    assert services.run_heartbeat(run_id=lease.run.pk, lease_token=uuid.uuid4()) == "LOST"
    with later(django_settings.DPP_LEASE_S + 1):
        assert services.run_heartbeat(run_id=lease.run.pk, lease_token=lease.token) == "LOST"


def test_the_heartbeat_thread_logs_a_lost_lease_under_the_runs_trace_id(
    tenant: Persona, settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.DPP_LEASE_S = 0.3  # a beat every 0.1 s
    lease = services.run_lease(run_id=queued_run(tenant).pk)
    assert lease is not None
    with (
        caplog.at_level(logging.WARNING, logger="dpp.runs.executor"),
        log_context(trace_id=lease.run.trace_id, run_id=str(lease.run.pk)),
        executor.Heartbeat(lease.run.pk, uuid.uuid4()) as heartbeat,  # a token that is not the lease's
    ):
        assert heartbeat.lost.wait(timeout=10)
    [logged] = [r for r in caplog.records if "lease lost" in r.getMessage()]
    assert (logged.trace_id, logged.run_id) == (lease.run.trace_id, str(lease.run.pk))  # type: ignore[attr-defined]


def test_heartbeat_reports_a_cancel_request(tenant: Persona) -> None:
    lease = services.run_lease(run_id=queued_run(tenant).pk)
    assert lease is not None
    outcome = services.run_cancel(tenant=tenant.tenant, run_id=lease.run.pk)
    assert outcome.pending
    assert services.run_heartbeat(run_id=lease.run.pk, lease_token=lease.token) == "CANCEL_REQUESTED"


def test_worker_failure_charges_the_minimum_fee_once(tenant: Persona) -> None:
    lease = services.run_lease(run_id=queued_run(tenant, max_cost_usd="0.5000").pk)
    assert lease is not None
    assert services.run_fail(run=lease.run, lease_token=lease.token, reason_code="PACK_FAILED", detail="x")
    # the same transition again, with the stale version, loses and posts nothing
    assert not services.run_fail(run=lease.run, lease_token=lease.token, reason_code="PACK_FAILED", detail="x")
    run = Run.objects.get(pk=lease.run.pk)
    assert (run.status, run.money_state, run.charged_micros, run.reason_code) == (
        "FAILED",
        "SETTLED",
        10_000,  # 2 % of 0.5000
        "PACK_FAILED",
    )
    assert len(settles(run)) == 1
    assert balances_get(tenant_id=tenant.tenant.pk).held_micros == 0
    assert balances_get(tenant_id=tenant.tenant.pk).available_micros == 1 * USD - 10_000


def test_a_failure_whose_detail_holds_a_nul_character_still_settles(tenant: Persona) -> None:
    """A pack's error detail may quote what a server sent; PostgreSQL's text cannot store U+0000."""
    lease = services.run_lease(run_id=queued_run(tenant, max_cost_usd="0.5000").pk)
    assert lease is not None
    assert services.run_fail(run=lease.run, lease_token=lease.token, reason_code="FETCH_FAILED", detail="bad\x00byte")
    run = Run.objects.get(pk=lease.run.pk)
    assert (run.status, run.error_detail, run.charged_micros) == ("FAILED", "bad\\x00byte", 10_000)
    assert len(settles(run)) == 1


def test_claim_needs_the_lease_token_and_a_live_lease(tenant: Persona) -> None:
    lease = services.run_lease(run_id=queued_run(tenant).pk)
    assert lease is not None
    assert services.run_claim(run_id=lease.run.pk, lease_token=uuid.uuid4()) is None
    with later(django_settings.DPP_LEASE_S + 1):
        assert services.run_claim(run_id=lease.run.pk, lease_token=lease.token) is None
    assert Run.objects.get(pk=lease.run.pk).finalize_stage is None


def test_two_phase_finalize_commits_once_and_caps_the_charge(tenant: Persona) -> None:
    lease = services.run_lease(run_id=queued_run(tenant, max_cost_usd="0.0200").pk)
    assert lease is not None
    claimed = services.run_claim(run_id=lease.run.pk, lease_token=lease.token)
    assert claimed is not None
    assert claimed.finalize_stage == FinalizeStage.CLAIMED
    stored = store_envelope(claimed, cost_micros=30_000)  # above the 0.0200 reservation
    assert services.run_commit(run=claimed, stored=stored)
    assert not services.run_commit(run=claimed, stored=stored)
    run = Run.objects.get(pk=claimed.pk)
    assert (run.status, run.finalize_stage, run.money_state, run.charged_micros) == (
        "COMPLETED",
        "COMMITTED",
        "SETTLED",
        20_000,
    )
    assert run.result_sha256 == stored.sha256
    assert len(settles(run)) == 1
    assert balances_get(tenant_id=tenant.tenant.pk).available_micros == 1 * USD - 20_000


def test_cancel_queued_releases_everything(tenant: Persona) -> None:
    run = queued_run(tenant, max_cost_usd="0.1000")
    outcome = services.run_cancel(tenant=tenant.tenant, run_id=run.pk)
    assert not outcome.pending
    assert (outcome.run.status, outcome.run.money_state, outcome.run.charged_micros) == ("CANCELED", "REFUNDED", 0)
    assert outcome.run.reason_code == "CANCELED_BY_CLIENT"
    assert balances_get(tenant_id=tenant.tenant.pk).available_micros == 1 * USD
    assert services.run_lease(run_id=run.pk) is None


def test_cancel_of_another_tenants_run_is_not_found(tenant: Persona) -> None:
    run = queued_run(tenant)
    stranger = make_persona()
    with pytest.raises(Exception, match="NOT_FOUND"):
        services.run_cancel(tenant=stranger.tenant, run_id=run.pk)
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED


# --- the executor, in-process (the Celery task body) ----------------------------------------------------


def test_execute_success(tenant: Persona) -> None:
    run = queued_run(tenant, inputs={"sleep_ms": 0, "cost_usd": "0.0300"}, max_cost_usd="0.0500")
    assert executor.run_execute(run_id=run.pk) == "completed"
    assert executor.run_execute(run_id=run.pk) == "not-leased"  # a second delivery does nothing
    run.refresh_from_db()
    assert (run.status, run.charged_micros) == ("COMPLETED", 30_000)
    content = results.envelope_read(run.result_key)
    assert content is not None
    assert results.envelope_validate(run=run, key=run.result_key) is not None
    assert len(settles(run)) == 1


def test_execute_pack_failure_charges_the_minimum_fee(tenant: Persona) -> None:
    run = queued_run(tenant, inputs={"outcome": "fail"}, max_cost_usd="0.0500")
    assert executor.run_execute(run_id=run.pk) == "failed:PACK_FAILED"
    run.refresh_from_db()
    assert (run.status, run.reason_code, run.charged_micros) == ("FAILED", "PACK_FAILED", 5_000)


def test_execute_over_the_timebox_fails_with_the_minimum_fee(tenant: Persona) -> None:
    run = queued_run(tenant, inputs={"sleep_ms": 3_000}, timebox_sec=1)
    started = time.monotonic()
    assert executor.run_execute(run_id=run.pk) == "failed:TIMEBOX_EXCEEDED"
    assert time.monotonic() - started < 2.5  # stopped at the timebox, not after the full sleep
    run.refresh_from_db()
    assert (run.status, run.reason_code, run.money_state) == ("FAILED", "TIMEBOX_EXCEEDED", MoneyState.SETTLED)
    assert run.charged_micros == run.minimum_fee_micros


def _run_in_thread(run_id: uuid.UUID) -> tuple[threading.Thread, list[str]]:
    outcome: list[str] = []

    def target() -> None:
        try:
            outcome.append(executor.run_execute(run_id=run_id))
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def _wait_status(run_id: uuid.UUID, status: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while Run.objects.get(pk=run_id).status != status:
        assert time.monotonic() < deadline, f"run never reached {status}"
        time.sleep(0.02)


def test_cancel_while_processing_stops_the_worker_at_its_heartbeat(tenant: Persona, settings) -> None:
    settings.DPP_LEASE_S = 3  # heartbeat every second
    run = queued_run(tenant, inputs={"sleep_ms": 20_000}, max_cost_usd="0.0500")
    thread, outcome = _run_in_thread(run.pk)
    _wait_status(run.pk, "PROCESSING")
    started = time.monotonic()
    assert services.run_cancel(tenant=tenant.tenant, run_id=run.pk).pending
    thread.join(10)
    assert outcome == ["canceled"]
    assert time.monotonic() - started < 3
    run.refresh_from_db()
    assert (run.status, run.reason_code, run.charged_micros) == ("CANCELED", "CANCELED_BY_CLIENT", 5_000)


def test_a_worker_that_lost_its_lease_finalizes_nothing(tenant: Persona, settings) -> None:
    settings.DPP_LEASE_S = 3
    run = queued_run(tenant, inputs={"sleep_ms": 20_000})
    thread, outcome = _run_in_thread(run.pk)
    _wait_status(run.pk, "PROCESSING")
    # The reaper decides the worker is gone: the lease expires and the run is finished without it.
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert services.run_expire_lease(run=Run.objects.get(pk=run.pk))
    thread.join(10)
    assert outcome == ["lease-lost"]
    run.refresh_from_db()
    assert (run.status, run.reason_code) == ("FAILED", "WORKER_TIMEOUT")
    assert len(settles(run)) == 1
