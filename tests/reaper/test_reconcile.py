"""The reaper pass (SPEC §3.3): each finding, its action, its charge — and that two reapers are safe."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from prometheus_client import REGISTRY

from billing.models import Account, LedgerTransaction
from billing.selectors import balances_get
from billing.services import ledger_settle
from reaper.models import AuditFlag
from reaper.services import PUBLISH_FAILED, ReconcileReport, _act, _redrive_one, audit_flag_resolve, reconcile_once
from runs import results
from runs.models import Run
from tests.helpers.corruption import corrupt_held, terminal_without_settle
from tests.helpers.logs import ids
from tests.helpers.money import USD
from tests.helpers.outages import broker_down, unreadable_storage
from tests.helpers.personas import Persona, make_persona
from tests.helpers.states import (
    ago,
    cancel,
    canceled_run,
    claimed_run,
    expired_lease,
    later,
    leased_run,
    queued_run,
    stale_claim,
    store_envelope,
)
from tests.helpers.threads import at_once

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def tenant() -> Persona:
    return make_persona(plan="unlimited", credit_micros=1 * USD)


def _settle_count(run: Run) -> int:
    return LedgerTransaction.objects.filter(run_id=run.pk, kind="SETTLE").count()


def test_expired_lease_fails_with_worker_timeout_and_the_minimum_fee(tenant: Persona) -> None:
    lease = expired_lease(tenant, max_cost_usd="0.0500")
    report = reconcile_once()
    assert report.expired_leases == 1
    run = Run.objects.get(pk=lease.run.pk)
    assert (run.status, run.reason_code, run.charged_micros) == ("FAILED", "WORKER_TIMEOUT", 5_000)
    assert _settle_count(run) == 1
    assert reconcile_once().expired_leases == 0


def test_expired_lease_of_a_cancel_requested_run_ends_canceled(tenant: Persona) -> None:
    lease = expired_lease(tenant)
    cancel(tenant, lease.run)
    reconcile_once()
    run = Run.objects.get(pk=lease.run.pk)
    assert (run.status, run.reason_code, run.charged_micros) == ("CANCELED", "CANCELED_BY_CLIENT", 5_000)


def test_a_live_lease_is_left_alone(tenant: Persona) -> None:
    lease = leased_run(tenant)
    assert reconcile_once().expired_leases == 0
    assert Run.objects.get(pk=lease.run.pk).status == "PROCESSING"


def test_stale_claim_with_a_valid_envelope_rolls_forward_at_the_envelope_cost(tenant: Persona) -> None:
    claimed, _ = stale_claim(tenant, max_cost_usd="0.0500")
    stored = store_envelope(claimed, cost_micros=12_300, data={"x": 1})
    report = reconcile_once()
    assert (report.rolled_forward, report.rolled_back) == (1, 0)
    run = Run.objects.get(pk=claimed.pk)
    assert (run.status, run.charged_micros, run.result_key) == ("COMPLETED", 12_300, stored.key)
    assert run.result_bytes == stored.size


def test_roll_forward_caps_the_envelope_cost_at_the_reservation(tenant: Persona) -> None:
    claimed, _ = stale_claim(tenant, max_cost_usd="0.0100")
    store_envelope(claimed, cost_micros=99_900, data={})
    reconcile_once()
    assert Run.objects.get(pk=claimed.pk).charged_micros == 10_000


@pytest.mark.parametrize("envelope", [None, b"{not json", b'{"run_id": "someone-else"}'])
def test_stale_claim_without_a_valid_envelope_rolls_back(tenant: Persona, envelope: bytes | None) -> None:
    claimed, _ = stale_claim(tenant)
    if envelope is not None:
        assert claimed.finalize_token is not None
        results.envelope_store(
            key=results.envelope_key(claimed, claimed.finalize_token), content=envelope, cost_micros=0
        )
    report = reconcile_once()
    assert (report.rolled_forward, report.rolled_back) == (0, 1)
    run = Run.objects.get(pk=claimed.pk)
    assert (run.status, run.reason_code, run.charged_micros) == ("FAILED", "FINALIZE_ABORTED", 5_000)


def test_an_unreadable_envelope_is_logged_with_the_claims_ids(
    tenant: Persona, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    claimed, _ = stale_claim(tenant)
    with unreadable_storage(tmp_path), caplog.at_level(logging.ERROR, logger="dpp.runs.results"):
        assert reconcile_once().storage_unavailable == 1
    [line] = [r for r in caplog.records if r.name == "dpp.runs.results"]
    assert line.getMessage().startswith("could not read envelope")
    assert ids(line) == (claimed.trace_id, str(claimed.pk))


def test_a_fresh_claim_is_left_to_its_worker(tenant: Persona) -> None:
    claimed, _ = claimed_run(tenant)
    report = reconcile_once()
    assert (report.rolled_forward, report.rolled_back) == (0, 0)
    assert Run.objects.get(pk=claimed.pk).finalize_stage == "CLAIMED"


def test_queued_runs_are_redriven_with_a_doubling_delay(tenant: Persona) -> None:
    run = queued_run(tenant)
    assert reconcile_once().redriven == 0  # too young
    with later(61):
        assert reconcile_once().redriven == 1
        assert Run.objects.get(pk=run.pk).published_at is not None
        assert reconcile_once().redriven == 0  # just re-published
    with later(61 + 119):
        assert reconcile_once().redriven == 0  # the second re-drive waits 2 × DPP_REDRIVE_AFTER_S
    with later(61 + 121):
        assert reconcile_once().redriven == 1
    with later(182 + 239):
        assert reconcile_once().redriven == 0  # the third, 4 ×
    with later(182 + 241):
        assert reconcile_once().redriven == 1
    assert Run.objects.get(pk=run.pk).redrive_count == 3
    Run.objects.filter(pk=run.pk).update(redrive_count=40)  # corruption: far past the cap, every 15 minutes
    with later(423 + 899):
        assert reconcile_once().redriven == 0
    with later(423 + 901):
        assert reconcile_once().redriven == 1


def _reaper_actions(action: str) -> float:
    return REGISTRY.get_sample_value("dpp_reaper_actions_total", {"action": action}) or 0.0


def test_a_redrive_whose_publish_fails_is_reported_as_failed_not_as_a_lost_race(
    tenant: Persona, caplog: pytest.LogCaptureFixture
) -> None:
    with ago(61):
        run = queued_run(tenant)
    failed_before = _reaper_actions("redrive_failed")
    out = io.StringIO()
    with broker_down(), caplog.at_level(logging.WARNING), pytest.raises(CommandError):
        call_command("reconcile", "--json", stdout=out)
    payload = json.loads(out.getvalue())
    assert (payload["redriven"], payload["redrive_failed"]) == (0, 1)
    assert payload["actions"] == [
        {"action": "redrive", "run_id": str(run.pk), "trace_id": run.trace_id, "outcome": PUBLISH_FAILED}
    ]
    assert _reaper_actions("redrive_failed") == failed_before + 1
    # The cause (dispatch) and the reaper's verdict are both on the run's trace.
    [cause] = [r for r in caplog.records if r.name == "dpp.runs.dispatch"]
    [verdict] = [r for r in caplog.records if r.name == "dpp.reaper"]
    assert verdict.levelno == logging.ERROR
    assert verdict.getMessage() == f"reaper: redrive run {run.pk}: {PUBLISH_FAILED}"
    assert ids(cause) == ids(verdict) == (run.trace_id, str(run.pk))
    # published_at and redrive_count stay bumped (operations.md §6): the next attempt waits the next, doubled
    # delay (2 × DPP_REDRIVE_AFTER_S), then succeeds.
    assert Run.objects.get(pk=run.pk).published_at is not None
    report = reconcile_once()
    assert (report.redriven, report.redrive_failed, report.actions) == (0, 0, [])
    with later(121):
        report = reconcile_once()
    assert (report.redriven, report.redrive_failed) == (1, 0)
    assert report.actions[0]["outcome"] == "done"


def test_the_loser_of_a_redrive_race_publishes_nothing(tenant: Persona) -> None:
    with ago(61):
        run = queued_run(tenant)
    stale = Run.objects.get(pk=run.pk)  # what a second reaper read before the first one re-drove the run
    assert reconcile_once().redriven == 1
    report = ReconcileReport(dry_run=False)
    with broker_down():  # a publish would fail: the outcome shows that none was tried
        assert not _act(report, "redrive", stale, lambda: _redrive_one(report, stale))
    assert (report.actions[0]["outcome"], report.redrive_failed) == ("lost the race", 0)


def test_queued_runs_expire_after_the_queue_ttl_with_a_full_release(tenant: Persona) -> None:
    with ago(3601):
        run = queued_run(tenant, max_cost_usd="0.2000")
    report = reconcile_once()
    assert (report.expired_queued, report.redriven) == (1, 0)
    run.refresh_from_db()
    assert (run.status, run.reason_code, run.money_state, run.charged_micros) == (
        "EXPIRED",
        "QUEUE_TIMEOUT",
        "REFUNDED",
        0,
    )
    assert balances_get(tenant_id=tenant.tenant.pk).available_micros == 1 * USD


def test_dry_run_changes_nothing(tenant: Persona) -> None:
    lease = expired_lease(tenant)
    with ago(3601):
        queued = queued_run(tenant)
    report = reconcile_once(dry_run=True)
    assert (report.expired_leases, report.expired_queued) == (1, 1)
    assert Run.objects.get(pk=lease.run.pk).status == "PROCESSING"
    assert Run.objects.get(pk=queued.pk).status == "QUEUED"
    assert LedgerTransaction.objects.filter(kind="SETTLE").count() == 0


def test_run_option_restricts_the_pass(tenant: Persona) -> None:
    first, second = expired_lease(tenant), expired_lease(tenant)
    assert reconcile_once(run_id=first.run.pk).expired_leases == 1
    assert Run.objects.get(pk=second.run.pk).status == "PROCESSING"


def test_many_reapers_at_once_settle_each_run_exactly_once(tenant: Persona) -> None:
    leases = [expired_lease(tenant, max_cost_usd="0.0100") for _ in range(10)]
    totals: list[int] = []

    def reap() -> None:
        totals.append(reconcile_once().expired_leases)

    assert at_once([reap] * 4) == []
    assert sum(totals) == 10
    assert LedgerTransaction.objects.filter(kind="SETTLE", run_id__in=[lease.run.pk for lease in leases]).count() == 10
    balances = balances_get(tenant_id=tenant.tenant.pk)
    assert (balances.available_micros, balances.held_micros) == (1 * USD - 10 * 5_000, 0)


def test_pass_cost_does_not_grow_with_history(tenant: Persona) -> None:
    def queries_of_a_pass() -> int:
        expired_lease(tenant, max_cost_usd="0.0100")
        with CaptureQueriesContext(connection) as captured:
            assert reconcile_once().expired_leases == 1
        return len(captured.captured_queries)

    with ago(2 * 86_400):
        small = queries_of_a_pass()
        for _ in range(30):  # history: finished runs the reaper has nothing to do with
            canceled_run(tenant, max_cost_usd="0.0100")
    assert queries_of_a_pass() == small


# --- audit flags ----------------------------------------------------------------------------------------


def _flags(kind: str) -> list[AuditFlag]:
    return list(AuditFlag.objects.filter(kind=kind))


def test_terminal_run_without_settle_raises_one_flag_and_touches_no_money(
    tenant: Persona, caplog: pytest.LogCaptureFixture
) -> None:
    run = terminal_without_settle(queued_run(tenant), charge_micros=100)
    before = balances_get(tenant_id=tenant.tenant.pk)
    with caplog.at_level(logging.CRITICAL, logger="dpp.reaper"):
        report = reconcile_once()
    # Two findings: the run has no SETTLE, and so its reservation is still held with no open run behind it.
    assert sorted(a["kind"] for a in report.actions) == ["HELD_MISMATCH", "TERMINAL_WITHOUT_SETTLE"]
    assert reconcile_once().audit_flags == 0  # already flagged and still open
    flags = _flags(AuditFlag.Kind.TERMINAL_WITHOUT_SETTLE)
    assert [(f.subject, f.tenant_id, f.trace_id) for f in flags] == [(str(run.pk), tenant.tenant.pk, run.trace_id)]
    [logged] = [r for r in caplog.records if "AUDIT FLAG TERMINAL_WITHOUT_SETTLE" in r.getMessage()]
    assert logged.levelno == logging.CRITICAL
    # Logged with the run's trace id (SPEC §3.3), so that grepping the run's trace finds the finding.
    assert (logged.trace_id, logged.run_id, logged.tenant_id) == (run.trace_id, str(run.pk), tenant.tenant.pk)  # type: ignore[attr-defined]
    assert balances_get(tenant_id=tenant.tenant.pk) == before


def test_settle_without_a_terminal_run_raises_a_flag(tenant: Persona) -> None:
    run = queued_run(tenant, max_cost_usd="0.0100")
    with transaction.atomic():
        ledger_settle(tenant_id=tenant.tenant.pk, run_id=run.pk, reserved_micros=10_000, charge_micros=0, trace_id="t")
    reconcile_once()
    assert [f.subject for f in _flags(AuditFlag.Kind.SETTLE_WITHOUT_TERMINAL)] == [str(run.pk)]


def test_a_run_whose_action_fails_is_flagged_and_the_pass_goes_on_with_the_others(
    tenant: Persona, caplog: pytest.LogCaptureFixture
) -> None:
    """A state no rule explains (here a SETTLE posted for a run still PROCESSING) makes the run's action fail on
    the one-SETTLE-per-run constraint. That run is left as it was and flagged; the other stale runs are finished."""
    # The older expiry: the pass meets the broken run first.
    broken = expired_lease(tenant, expired_for=20, max_cost_usd="0.0100")
    healthy = expired_lease(tenant, expired_for=10, max_cost_usd="0.0100")
    with transaction.atomic():
        ledger_settle(
            tenant_id=tenant.tenant.pk, run_id=broken.run.pk, reserved_micros=10_000, charge_micros=0, trace_id="t"
        )
    failed_before = _reaper_actions("expire_lease_failed")
    with caplog.at_level(logging.ERROR, logger="dpp.reaper"):
        report = reconcile_once()
    assert (report.expired_leases, report.actions_failed, report.unfinished) == (1, 1, 1)
    [failure] = [a for a in report.actions if a.get("run_id") == str(broken.run.pk) and "outcome" in a]
    assert failure["action"] == "expire_lease"
    assert failure["outcome"].startswith("failed: IntegrityError: ")
    assert "billing_once_per_run" in failure["outcome"]
    assert Run.objects.get(pk=healthy.run.pk).status == "FAILED"
    assert Run.objects.get(pk=broken.run.pk).status == "PROCESSING"  # left as it was: its action rolled back
    assert _settle_count(broken.run) == 1
    assert _reaper_actions("expire_lease_failed") == failed_before + 1
    [flag] = _flags(AuditFlag.Kind.ACTION_FAILED)
    assert (flag.subject, flag.tenant_id, flag.trace_id) == (str(broken.run.pk), tenant.tenant.pk, broken.run.trace_id)
    assert flag.detail.startswith("expire_lease failed: IntegrityError: ")
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.exc_info is not None  # with its stack
    assert ids(error) == (broken.run.trace_id, str(broken.run.pk))
    # The next pass tries the run again (a person may have mended it meanwhile), without a second flag.
    again = reconcile_once()
    assert (again.actions_failed, again.expired_leases) == (1, 0)
    assert len(_flags(AuditFlag.Kind.ACTION_FAILED)) == 1


def test_reconcile_exits_1_with_its_full_report_when_a_run_could_not_be_finished(tenant: Persona) -> None:
    with ago(61):
        queued_run(tenant)
    out = io.StringIO()
    with broker_down(), pytest.raises(CommandError, match=r"1 run\(s\) could not be finished") as raised:
        call_command("reconcile", "--json", stdout=out)
    assert raised.value.returncode == 1
    payload = json.loads(out.getvalue())
    assert (payload["redrive_failed"], payload["actions_failed"]) == (1, 0)
    # With the broker back, a dry run has nothing it could not do: exit status 0.
    with later(61):
        call_command("reconcile", "--dry-run", stdout=io.StringIO())


def test_held_not_matching_open_reservations_raises_a_flag(tenant: Persona) -> None:
    queued_run(tenant, max_cost_usd="0.0100")
    corrupt_held(tenant_id=tenant.tenant.pk, balance_micros=20_000)
    reconcile_once()
    flags = _flags(AuditFlag.Kind.HELD_MISMATCH)
    assert [f.subject for f in flags] == [tenant.tenant.pk]
    assert flags[0].detail == "held is 0.0200 USD, open reservations 0.0100 USD"


def test_reconcile_command_says_which_flag_it_raised(tenant: Persona) -> None:
    queued_run(tenant, max_cost_usd="0.0100")
    corrupt_held(tenant_id=tenant.tenant.pk, balance_micros=20_000)
    out = io.StringIO()
    call_command("reconcile", stdout=out)
    assert out.getvalue().splitlines()[1:] == [
        f"  audit flag HELD_MISMATCH on {tenant.tenant.pk}: held is 0.0200 USD, open reservations 0.0100 USD"
    ]
    assert "audit_flags=1, storage_unavailable=0, redrive_failed=0, actions_failed=0, audit_flags_open=1" in (
        out.getvalue()
    )
    # The next pass raises nothing new, and says the flag is still open.
    again_out = io.StringIO()
    call_command("reconcile", "--json", stdout=again_out)
    again = json.loads(again_out.getvalue())
    assert (again["audit_flags"], again["audit_flags_open"]) == (0, 1)


def test_a_resolved_flag_can_be_raised_again(tenant: Persona) -> None:
    queued_run(tenant, max_cost_usd="0.0100")
    corrupt_held(tenant_id=tenant.tenant.pk, balance_micros=20_000)
    reconcile_once()
    flag_ids = list(AuditFlag.objects.values_list("pk", flat=True))
    assert audit_flag_resolve(flag_ids=flag_ids, actor="ops", note="mended") == 1
    assert reconcile_once().audit_flags == 1
    assert AuditFlag.objects.count() == 2


def test_open_flags_are_counted_in_metrics(tenant: Persona, client) -> None:
    AuditFlag.objects.create(kind=AuditFlag.Kind.HELD_MISMATCH, subject="x", detail="d")
    text = client.get("/metrics").content.decode()
    assert "dpp_audit_flags_open 1.0" in text


def test_the_oldest_queued_runs_age_is_a_gauge(tenant: Persona, client) -> None:
    def age() -> float:
        text = client.get("/metrics").content.decode()
        return float(re.search(r"^dpp_runs_queued_oldest_age_seconds (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]

    assert age() == 0.0
    with ago(300):
        queued_run(tenant)
    queued_run(tenant)  # a newer one does not hide the oldest
    assert 300 <= age() < 330


# --- the command ----------------------------------------------------------------------------------------


def test_reconcile_command_json(tenant: Persona) -> None:
    lease = expired_lease(tenant)
    out = io.StringIO()
    call_command("reconcile", "--json", stdout=out)
    payload = json.loads(out.getvalue())
    assert {k: payload[k] for k in ("dry_run", "expired_leases", "rolled_forward", "rolled_back")} == {
        "dry_run": False,
        "expired_leases": 1,
        "rolled_forward": 0,
        "rolled_back": 0,
    }
    assert {"redriven", "expired_queued", "audit_flags"} <= payload.keys()
    assert payload["actions"][0]["run_id"] == str(lease.run.pk)


def test_reconcile_command_dry_run_and_single_run(tenant: Persona) -> None:
    lease = expired_lease(tenant)
    out = io.StringIO()
    call_command("reconcile", "--dry-run", "--run", str(lease.run.pk), stdout=out)
    assert out.getvalue().splitlines()[1:] == [f"  expire_lease run {lease.run.pk}: would do"]
    assert Run.objects.get(pk=lease.run.pk).status == "PROCESSING"
    with pytest.raises(Exception, match="not a run id"):
        call_command("reconcile", "--run", "nope", stdout=io.StringIO())
    with pytest.raises(Exception, match="no such run"):
        call_command("reconcile", "--run", str(uuid.uuid4()), stdout=io.StringIO())
    assert reconcile_once(run_id=uuid.uuid4()).expired_leases == 0


def test_the_platform_balances_are_gauges_summing_their_shards(tenant: Persona, client) -> None:
    def total(kind: str) -> int:
        return sum(Account.objects.filter(kind=kind).values_list("balance_micros", flat=True))

    revenue_before = total("REVENUE")
    Account.objects.filter(pk="@revenue/03").update(balance_micros=F("balance_micros") + 30_000)
    Account.objects.filter(pk="@revenue/15").update(balance_micros=F("balance_micros") + 12_000)
    text = client.get("/metrics").content.decode()
    assert f'dpp_platform_balance_micros{{kind="revenue"}} {revenue_before + 42_000:.1f}' in text
    assert f'dpp_platform_balance_micros{{kind="funding"}} {total("FUNDING"):.1f}' in text
    assert total("FUNDING") < 0  # the fixture's credit came from funding
