"""The ledger audit: clean books pass; every kind of tampering is caught, named, and exits non-zero."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.db.models import F

from billing.audit import EXAMPLES_PER_INVARIANT, LEDGER_INVARIANTS, ledger_audit
from billing.models import Account, LedgerEntry, LedgerTransaction
from billing.services import ledger_adjust, ledger_reserve, ledger_settle
from runs.audit import RUN_INVARIANTS, full_audit, run_audit
from runs.models import Run
from tests.helpers.corruption import corrupt_run, run_without_reserve, terminal_without_settle
from tests.helpers.money import USD
from tests.helpers.personas import Persona, make_persona
from tests.helpers.states import canceled_run, completed_run, expired_run, failed_run, queued_run
from tests.processes import ROOT

SPEC_KEYS = {"ok", "transactions", "entries", "accounts", "violations"}


def _audit_command(*args: str) -> tuple[int, dict[str, Any]]:
    """Run `audit_ledger --json`; its exit status and its one JSON object."""
    out = StringIO()
    try:
        call_command("audit_ledger", "--json", *args, stdout=out)
    except CommandError as exc:
        return exc.returncode, json.loads(out.getvalue())
    return 0, json.loads(out.getvalue())


def _held(tenant_id: str) -> str:
    return Account.tenant_account_id(tenant_id, Account.Kind.HELD)


def _available(tenant_id: str) -> str:
    return Account.tenant_account_id(tenant_id, Account.Kind.AVAILABLE)


def _busy_ledger(owner: Persona, other: Persona) -> None:
    """Every kind of movement: open runs, runs settled with charge 0, partial and full, adjustments both ways."""
    queued_run(owner, pack_type="decision", max_cost_usd="1.0000")
    canceled_run(owner, pack_type="decision", max_cost_usd="0.0500")
    completed_run(owner, pack_type="decision", max_cost_usd="0.0500", cost_micros=11_000)
    completed_run(other, pack_type="decision", max_cost_usd="0.0300", cost_micros=30_000)
    failed_run(other, pack_type="decision", max_cost_usd="0.5000")  # the minimum fee: 0.0100
    ledger_adjust(tenant=owner.tenant, amount_micros=5_000, counterparty="REVENUE", actor="fin", reason="goodwill")
    ledger_adjust(tenant=other.tenant, amount_micros=-2_500, counterparty="FUNDING", actor="fin", reason="chargeback")


@pytest.mark.django_db
class TestCleanLedger:
    def test_clean_ledger_audits_ok_with_exact_counts(self, personas: Any) -> None:
        _busy_ledger(personas.owner, personas.other)
        report = full_audit()
        assert report.ok, report.violations
        assert report.violations == []
        assert report.violation_counts == {}
        # 2 TOPUP (owner, other; the outsider has no credit) + 5 RESERVE + 4 SETTLE + 2 ADJUSTMENT
        assert report.transactions == 13
        assert report.transactions == LedgerTransaction.objects.count()
        # TOPUP 2×2, RESERVE 5×2, SETTLE: charge 0 → 2, partial → 3, full → 2, partial → 3; ADJUSTMENT 2×2
        assert report.entries == 4 + 10 + 10 + 4
        assert report.entries == LedgerEntry.objects.count()
        assert report.accounts == 32 + 3 * 2  # 16 shards of revenue and of funding
        assert set(report.seconds) >= {
            "audit_txn_legs",
            "audit_run_legs",
            "audit_runs",
            "total",
            *LEDGER_INVARIANTS,
            *RUN_INVARIANTS,
        }

    def test_empty_ledger_is_clean(self) -> None:
        report = full_audit()
        assert report.ok
        assert (report.transactions, report.entries, report.accounts) == (0, 0, 32)

    def test_command_json_clean(self, personas: Any) -> None:
        _busy_ledger(personas.owner, personas.other)
        status, body = _audit_command()
        assert status == 0
        assert set(body) >= SPEC_KEYS
        assert body["ok"] is True
        assert body["violations"] == []
        assert (body["transactions"], body["entries"], body["accounts"]) == (13, 28, 38)

    def test_command_text_clean(self, owner: Persona) -> None:
        out = StringIO()
        call_command("audit_ledger", stdout=out)
        text = out.getvalue()
        assert "2 transactions, 4 entries, 38 accounts" in text  # the two personas with credit
        assert "every invariant holds" in text

    def test_audit_runs_twice_in_one_transaction(self, owner: Persona) -> None:
        """The working tables are dropped at the end: a second audit in the same transaction works."""
        with transaction.atomic():
            assert ledger_audit().ok
            assert ledger_audit().ok


@pytest.mark.django_db
class TestTamperedLedger:
    def test_tampered_balance(self, owner: Persona) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE billing_account SET balance_micros = balance_micros + 100 WHERE id = %s",
                [_available(owner.tenant.pk)],
            )
        status, body = _audit_command()
        assert status == 1
        assert body["ok"] is False
        assert body["violation_counts"] == {"ledger_sums_to_zero": 1, "balance_equals_entries": 1}
        (balance,) = [v for v in body["violations"] if v["invariant"] == "balance_equals_entries"]
        assert balance["subject"] == _available(owner.tenant.pk)
        assert "stores 10.0001 USD but its entries sum to 10.0000 USD" in balance["detail"]
        (total,) = [v for v in body["violations"] if v["invariant"] == "ledger_sums_to_zero"]
        assert "sum to 0.0001 USD" in total["detail"]

    def test_tampered_balance_text_output_names_the_invariant(self, owner: Persona) -> None:
        Account.objects.filter(pk=_available(owner.tenant.pk)).update(balance_micros=F("balance_micros") - 300)
        out = StringIO()
        with pytest.raises(CommandError) as raised:
            call_command("audit_ledger", stdout=out)
        assert raised.value.returncode == 1
        assert "balance_equals_entries" in str(raised.value)
        text = out.getvalue()
        assert "2 violations of 2 invariants" in text
        assert "balance_equals_entries: 1" in text
        assert f"account {_available(owner.tenant.pk)} stores 9.9997 USD but its entries sum to 10.0000 USD" in text

    def test_negative_tenant_balance(self, owner: Persona) -> None:
        """The CHECK constraint refuses it; with the constraint gone, the audit still sees it."""
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no ALTER TABLE while deferred FK checks are pending
            cursor.execute("ALTER TABLE billing_account DROP CONSTRAINT billing_tenant_balance_nonneg")
            cursor.execute("UPDATE billing_account SET balance_micros = -100 WHERE id = %s", [_held(owner.tenant.pk)])
        report = ledger_audit()
        assert report.violation_counts["tenant_balance_nonnegative"] == 1
        (negative,) = [v for v in report.violations if v.invariant == "tenant_balance_nonnegative"]
        assert negative.detail == f"tenant account {_held(owner.tenant.pk)} is negative: -0.0001 USD"

    def test_balanced_legs_appended_to_a_committed_topup_are_described_by_their_sums(self, owner: Persona) -> None:
        tenant_id = owner.tenant.pk
        topup = LedgerTransaction.objects.get(tenant_id=tenant_id, kind="TOPUP")
        funding = Account.platform_account_for("FUNDING", tenant_id)  # the top-up's own shard
        with transaction.atomic():
            LedgerEntry.objects.bulk_create(
                [
                    LedgerEntry(transaction=topup, account_id=_available(tenant_id), amount_micros=USD),
                    LedgerEntry(transaction=topup, account_id=funding, amount_micros=-USD),
                ]
            )
            Account.objects.filter(pk=_available(tenant_id)).update(balance_micros=F("balance_micros") + USD)
            Account.objects.filter(pk=funding).update(balance_micros=F("balance_micros") - USD)
        report = ledger_audit()
        assert report.violation_counts == {"transaction_shape": 1}
        (shape,) = report.violations
        assert f"TOPUP transaction {topup.pk} has 4 entries moving available 11.0000 USD, funding -11.0000 USD" in (
            shape.detail
        )

    def test_held_not_equal_to_open_reservations(self, owner: Persona) -> None:
        """A balanced, well-booked movement out of held that is not a SETTLE: balances agree, held does not."""
        tenant_id = owner.tenant.pk
        with transaction.atomic():
            ledger_reserve(tenant_id=tenant_id, run_id=uuid.uuid4(), amount_micros=USD, trace_id="t")
            txn = LedgerTransaction.objects.create(kind="ADJUSTMENT", tenant_id=tenant_id, actor="x", reason="y")
            LedgerEntry.objects.bulk_create(
                [
                    LedgerEntry(transaction=txn, account_id=_held(tenant_id), amount_micros=-400_000),
                    LedgerEntry(transaction=txn, account_id=_available(tenant_id), amount_micros=400_000),
                ]
            )
            Account.objects.filter(pk=_held(tenant_id)).update(balance_micros=F("balance_micros") - 400_000)
            Account.objects.filter(pk=_available(tenant_id)).update(balance_micros=F("balance_micros") + 400_000)
        report = ledger_audit()
        assert report.violation_counts == {"held_equals_open_reservations": 1, "transaction_shape": 1}
        (held,) = [v for v in report.violations if v.invariant == "held_equals_open_reservations"]
        assert held.subject == _held(tenant_id)
        assert (
            "is 0.6000 USD and counts 1 open reservations, but its 1 open reservations (RESERVE, no SETTLE) sum to"
            " 1.0000 USD" in held.detail
        )
        status, body = _audit_command()
        assert status == 1
        assert "held_equals_open_reservations" in body["violation_counts"]

    def test_open_reservation_count_not_matching_the_ledger(self, owner: Persona) -> None:
        """The held row's count of open reservations (the concurrency limit's source) is audited too."""
        tenant_id = owner.tenant.pk
        with transaction.atomic():
            ledger_reserve(tenant_id=tenant_id, run_id=uuid.uuid4(), amount_micros=USD, trace_id="t")
        assert ledger_audit().ok
        Account.objects.filter(pk=_held(tenant_id)).update(open_reservations=3)
        report = ledger_audit()
        assert report.violation_counts == {"held_equals_open_reservations": 1}
        assert "counts 3 open reservations, but its 1 open reservations" in report.violations[0].detail

    def test_settle_that_takes_more_than_was_reserved(self, owner: Persona) -> None:
        tenant_id, run_id = owner.tenant.pk, uuid.uuid4()
        with transaction.atomic():
            ledger_reserve(tenant_id=tenant_id, run_id=run_id, amount_micros=100_000, trace_id="t")
            ledger_reserve(tenant_id=tenant_id, run_id=uuid.uuid4(), amount_micros=100_000, trace_id="t")
            # held 0.2000 covers it: ledger_settle only refuses charge > the reservation it is told about.
            ledger_settle(
                tenant_id=tenant_id, run_id=run_id, reserved_micros=150_000, charge_micros=150_000, trace_id="t"
            )
        report = ledger_audit()
        assert report.violation_counts == {"held_equals_open_reservations": 1, "settle_within_reservation": 1}
        (settle,) = [v for v in report.violations if v.invariant == "settle_within_reservation"]
        assert settle.subject == str(run_id)
        assert "reserved 0.1000 USD, its SETTLE took 0.1500 USD from held, charged 0.1500 USD" in settle.detail

    def test_settle_without_reserve(self, owner: Persona) -> None:
        tenant_id, run_id = owner.tenant.pk, uuid.uuid4()
        with transaction.atomic():
            ledger_reserve(tenant_id=tenant_id, run_id=uuid.uuid4(), amount_micros=100_000, trace_id="t")
            ledger_settle(
                tenant_id=tenant_id, run_id=run_id, reserved_micros=100_000, charge_micros=5_000, trace_id="t"
            )
        report = ledger_audit()
        assert report.violation_counts["once_per_run"] == 1
        (once,) = [v for v in report.violations if v.invariant == "once_per_run"]
        assert once.detail.startswith(f"run {run_id} has 0 RESERVE and 1 SETTLE")

    def test_examples_are_capped_and_the_total_is_exact(self) -> None:
        personas = [make_persona(credit_micros=USD) for _ in range(EXAMPLES_PER_INVARIANT + 5)]
        Account.objects.filter(kind="AVAILABLE").update(balance_micros=F("balance_micros") + 100)
        report = ledger_audit()
        assert report.violation_counts["balance_equals_entries"] == len(personas)
        shown = [v for v in report.violations if v.invariant == "balance_equals_entries"]
        assert len(shown) == EXAMPLES_PER_INVARIANT
        assert [v.subject for v in shown] == sorted(v.subject for v in shown)
        assert report.violations_total == len(personas) + 1  # and the ledger no longer sums to zero


@pytest.mark.django_db
class TestRunSide:
    def test_terminal_run_without_settle(self, owner: Persona) -> None:
        run = terminal_without_settle(queued_run(owner, pack_type="decision"), charge_micros=5_000)
        assert ledger_audit().ok  # the ledger alone cannot know: a RESERVE without SETTLE is an open reservation
        report = full_audit()
        assert report.violation_counts == {"terminal_run_without_settle": 1, "held_equals_open_runs": 1}
        (finding,) = [v for v in report.violations if v.invariant == "terminal_run_without_settle"]
        assert finding.subject == str(run.pk)
        assert finding.detail == f"run {run.pk} of {owner.tenant.pk} is COMPLETED but has no SETTLE"
        status, body = _audit_command()
        assert status == 1
        assert "terminal_run_without_settle" in {v["invariant"] for v in body["violations"]}

    def test_settle_of_a_run_that_is_not_terminal(self, owner: Persona) -> None:
        run = queued_run(owner, pack_type="decision", max_cost_usd="0.0500")
        with transaction.atomic():
            ledger_settle(tenant_id=run.tenant_id, run_id=run.pk, reserved_micros=50_000, charge_micros=0, trace_id="t")
        assert ledger_audit().ok
        violations = run_audit()
        assert {v.invariant for v in violations} == {"settle_without_terminal_run", "held_equals_open_runs"}
        (finding,) = [v for v in violations if v.invariant == "settle_without_terminal_run"]
        assert finding.detail == f"run {run.pk} of {owner.tenant.pk} has a SETTLE but is QUEUED"
        (held,) = [v for v in violations if v.invariant == "held_equals_open_runs"]
        assert "is 0.0000 USD but its 1 non-terminal runs reserve 0.0500 USD" in held.detail

    def test_ledger_run_ids_without_runs(self, owner: Persona) -> None:
        tenant_id, settled, reserved = owner.tenant.pk, uuid.uuid4(), uuid.uuid4()
        with transaction.atomic():
            ledger_reserve(tenant_id=tenant_id, run_id=settled, amount_micros=20_000, trace_id="t")
            ledger_settle(
                tenant_id=tenant_id, run_id=settled, reserved_micros=20_000, charge_micros=5_000, trace_id="t"
            )
            ledger_reserve(tenant_id=tenant_id, run_id=reserved, amount_micros=30_000, trace_id="t")
        violations = run_audit()
        by_invariant = {v.invariant: v for v in violations}
        assert set(by_invariant) == {"settle_without_terminal_run", "reserve_without_run", "held_equals_open_runs"}
        assert by_invariant["settle_without_terminal_run"].detail.endswith("has a SETTLE but does not exist")
        assert by_invariant["reserve_without_run"].subject == str(reserved)

    def test_run_without_its_reserve(self, owner: Persona) -> None:
        run = run_without_reserve(tenant_id=owner.tenant.pk, reserved_micros=70_000)
        violations = run_audit()
        assert {v.invariant for v in violations} == {"run_reserve_mismatch", "held_equals_open_runs"}
        (finding,) = [v for v in violations if v.invariant == "run_reserve_mismatch"]
        assert finding.detail == f"run {run.pk} of {owner.tenant.pk} reserves 0.0700 USD but has no RESERVE"

    def test_run_whose_reserve_differs(self, owner: Persona) -> None:
        run = queued_run(owner, pack_type="decision", max_cost_usd="0.0700")
        corrupt_run(run, reserved_micros=80_000)
        violations = run_audit()
        assert {v.invariant for v in violations} == {"run_reserve_mismatch", "held_equals_open_runs"}
        (finding,) = [v for v in violations if v.invariant == "run_reserve_mismatch"]
        assert "reserves 0.0800 USD but its RESERVE (1)" in finding.detail
        assert finding.detail.endswith("holds 0.0700 USD")

    def test_run_charge_differs_from_its_settle(self, owner: Persona) -> None:
        run = completed_run(owner, pack_type="decision", max_cost_usd="0.0700", cost_micros=20_000)
        corrupt_run(run, charged_micros=30_000)
        violations = run_audit()
        assert [v.invariant for v in violations] == ["run_charge_mismatch"]
        assert violations[0].detail == (
            f"run {run.pk} of {owner.tenant.pk} records a charge of 0.0300 USD but its SETTLE took 0.0200 USD"
        )

    def test_consistent_runs_and_ledger(self, personas: Any) -> None:
        _busy_ledger(personas.owner, personas.other)
        assert run_audit() == []

    def test_the_run_services_leave_a_clean_audit(self) -> None:
        """Runs accepted, canceled, expired and failed by runs.services: ledger and runs agree."""
        persona = make_persona(plan="unlimited")
        canceled_run(persona)
        expired_run(persona)
        failed_run(persona, detail="test")
        queued_run(persona)
        report = full_audit()
        assert report.ok, report.violations
        assert report.transactions == 1 + 4 + 3  # TOPUP, 4 RESERVE, 3 SETTLE
        assert Run.objects.filter(tenant=persona.tenant, status__in=["CANCELED", "EXPIRED", "FAILED"]).count() == 3


def _disable_balance_triggers(enable: bool) -> None:
    verb = "ENABLE" if enable else "DISABLE"
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE billing_ledgerentry {verb} TRIGGER billing_entry_balanced")
        cursor.execute(f"ALTER TABLE billing_ledgertransaction {verb} TRIGGER billing_transaction_balanced")


@pytest.mark.django_db(transaction=True)
class TestCommittedTampering:
    def test_unbalanced_transaction_committed_with_the_trigger_off(self) -> None:
        owner = make_persona(credit_micros=USD)
        available = _available(owner.tenant.pk)
        _disable_balance_triggers(enable=False)
        try:
            with transaction.atomic():
                txn = LedgerTransaction.objects.create(kind="TOPUP", tenant=owner.tenant, actor="x", reason="forged")
                LedgerEntry.objects.create(transaction=txn, account_id=available, amount_micros=200)
                Account.objects.filter(pk=available).update(balance_micros=F("balance_micros") + 200)
        finally:
            _disable_balance_triggers(enable=True)
        status, body = _audit_command()
        assert status == 1
        assert body["violation_counts"] == {"balanced_transaction": 1, "ledger_sums_to_zero": 2}
        (unbalanced,) = [v for v in body["violations"] if v["invariant"] == "balanced_transaction"]
        assert unbalanced["subject"] == str(txn.pk)
        assert (
            unbalanced["detail"]
            == f"TOPUP transaction {txn.pk} has 1 entries summing to 0.0002 USD (needs ≥ 2 summing to 0)"
        )

    def test_manage_py_subprocess_exit_status(self) -> None:
        owner = make_persona(credit_micros=USD)
        env = {**os.environ, "DATABASE_URL": _database_url()}
        command = [sys.executable, "manage.py", "audit_ledger", "--json"]
        clean = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert clean.returncode == 0, clean.stderr
        assert json.loads(clean.stdout)["ok"] is True
        Account.objects.filter(pk=_held(owner.tenant.pk)).update(balance_micros=500)
        broken = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert broken.returncode == 1
        body = json.loads(broken.stdout)  # exactly one JSON object on stdout
        assert body["ok"] is False
        assert set(body["violation_counts"]) == {
            "ledger_sums_to_zero",
            "balance_equals_entries",
            "held_equals_open_reservations",
            "held_equals_open_runs",
        }
        assert "held_equals_open_reservations" in broken.stderr


def _database_url() -> str:
    settings = connection.settings_dict
    host, port = settings["HOST"] or "127.0.0.1", settings["PORT"] or 5432
    password = f":{settings['PASSWORD']}" if settings["PASSWORD"] else ""
    return f"postgres://{settings['USER']}{password}@{host}:{port}/{settings['NAME']}"
