"""The incremental ledger audit: clean books pass and move the checkpoint; it reads only what is new, yet catches
a tampered balance of any account, and an entry written after the checkpoint (even onto an old transaction)."""

from __future__ import annotations

import uuid

import pytest
from django.db import connections, transaction
from django.db.models import F, Max, Sum

import billing.audit_incremental as incremental
from billing.audit_incremental import ledger_audit_incremental
from billing.models import Account, AccountCheckpoint, AuditCheckpoint, LedgerEntry, LedgerTransaction
from billing.services import ledger_reserve, ledger_settle
from tests.billing.test_audit import _disable_balance_triggers
from tests.helpers.money import USD
from tests.helpers.personas import Persona, make_persona

# Real sessions: the audit waits for other sessions' transactions and reads in its own snapshot.
pytestmark = pytest.mark.django_db(transaction=True)


def _run(owner: Persona, *, reserved: int = 50_000, charge: int | None = 10_000) -> uuid.UUID:
    run_id = uuid.uuid4()
    with transaction.atomic():
        ledger_reserve(tenant_id=owner.tenant.pk, run_id=run_id, amount_micros=reserved, trace_id="t")
    if charge is not None:
        with transaction.atomic():
            ledger_settle(
                tenant_id=owner.tenant.pk,
                run_id=run_id,
                reserved_micros=reserved,
                charge_micros=charge,
                trace_id="t",
            )
    return run_id


def _last_ids() -> list[int]:
    return [
        LedgerTransaction.objects.aggregate(top=Max("id"))["top"] or 0,
        LedgerEntry.objects.aggregate(top=Max("id"))["top"] or 0,
    ]


def test_clean_books_pass_and_the_second_audit_reads_only_what_is_new() -> None:
    owner, other = make_persona(credit_micros=10 * USD), make_persona(credit_micros=10 * USD)
    for _ in range(5):
        _run(owner)
    _run(other, charge=None)  # still open: its reservation is counted at the checkpoint
    first = ledger_audit_incremental()
    assert first.ok, first.violations
    assert first.checkpoint == {"from": [0, 0], "to": _last_ids(), "advanced": True}
    assert first.transactions == LedgerTransaction.objects.count() == 2 + 5 * 2 + 1
    held = AccountCheckpoint.objects.get(account_id=Account.tenant_account_id(other.tenant.pk, "HELD"))
    assert (held.entries_micros, held.open_reservations, held.open_micros) == (50_000, 1, 50_000)

    old_run = LedgerTransaction.objects.get(tenant=other.tenant, kind="RESERVE").run_id
    assert old_run is not None
    with transaction.atomic():  # the open run settles after the checkpoint: its old RESERVE is read again
        ledger_settle(tenant_id=other.tenant.pk, run_id=old_run, reserved_micros=50_000, charge_micros=0, trace_id="t")
    _run(owner)
    second = ledger_audit_incremental()
    assert second.ok, second.violations
    assert second.transactions == 1 + 2 + 1  # the new SETTLE, the new run's two, and the old RESERVE it settles
    assert second.checkpoint == {"from": first.checkpoint["to"], "to": _last_ids(), "advanced": True}
    held.refresh_from_db()
    assert (held.entries_micros, held.open_reservations, held.open_micros) == (0, 0, 0)
    assert AuditCheckpoint.objects.count() == 2


def test_a_tampered_balance_of_an_account_untouched_since_the_checkpoint_is_caught() -> None:
    owner = make_persona(credit_micros=10 * USD)
    _run(owner)
    assert ledger_audit_incremental().ok
    available = Account.tenant_account_id(owner.tenant.pk, Account.Kind.AVAILABLE)
    Account.objects.filter(pk=available).update(balance_micros=F("balance_micros") + 100)
    report = ledger_audit_incremental()
    assert report.transactions == 0  # nothing new to read, and still:
    assert report.violation_counts == {"ledger_sums_to_zero": 1, "balance_equals_entries": 1}
    (balance,) = [v for v in report.violations if v.invariant == "balance_equals_entries"]
    assert balance.detail == f"account {available} stores 9.9901 USD but its entries sum to 9.9900 USD"


def test_an_entry_written_after_the_checkpoint_onto_an_old_transaction_is_caught() -> None:
    owner = make_persona(credit_micros=10 * USD)
    run_id = _run(owner)
    assert ledger_audit_incremental().ok
    settle = LedgerTransaction.objects.get(run_id=run_id, kind="SETTLE")
    revenue = Account.platform_account_for(Account.Kind.REVENUE, run_id)
    _disable_balance_triggers(enable=False)
    try:
        with transaction.atomic():  # what no service does: an unbalanced extra charge on an old SETTLE, balance moved
            LedgerEntry.objects.create(transaction=settle, account_id=revenue, amount_micros=100)
            Account.objects.filter(pk=revenue).update(balance_micros=F("balance_micros") + 100)
    finally:
        _disable_balance_triggers(enable=True)
    report = ledger_audit_incremental()
    assert report.transactions == 2  # the SETTLE with the new entry, and its run's RESERVE
    assert set(report.violation_counts) == {"balanced_transaction", "ledger_sums_to_zero"}
    (unbalanced,) = [v for v in report.violations if v.invariant == "balanced_transaction"]
    assert unbalanced.subject == str(settle.pk)
    assert ledger_audit_incremental().violation_counts.get("balanced_transaction") is None  # checked once: now old


def test_a_session_left_open_keeps_the_checkpoint_where_it_was() -> None:
    """An open transaction may hold an id below the last one drawn: the watermark must not pass it."""
    owner = make_persona(credit_micros=10 * USD)
    _run(owner)
    first = ledger_audit_incremental()
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT 1")  # a transaction open in another session, started before the audit
        waited, incremental.WAIT_FOR_OPEN_SECONDS = incremental.WAIT_FOR_OPEN_SECONDS, 0.2
        try:
            _run(owner)
            report = ledger_audit_incremental()
        finally:
            incremental.WAIT_FOR_OPEN_SECONDS = waited
        assert report.ok
        assert report.checkpoint == {"from": first.checkpoint["to"], "to": first.checkpoint["to"], "advanced": False}
        assert report.transactions == 2  # read, not kept: read again next time
    finally:
        other.close()
    assert ledger_audit_incremental().checkpoint["advanced"] is True


def _checkpoint_matches_the_ledger() -> None:
    """Every account's checkpoint row holds the sums of the ledger up to the newest watermarks, to the micro."""
    mark = AuditCheckpoint.objects.order_by("-id").first()
    assert mark is not None
    entries = LedgerEntry.objects.filter(id__lte=mark.entry_watermark).order_by()
    sums = dict(entries.values_list("account_id").annotate(total=Sum("amount_micros")))
    held = Account.objects.filter(kind=Account.Kind.HELD)
    opened = {
        account.pk: LedgerTransaction.objects.filter(
            tenant_id=account.tenant_id, kind="RESERVE", id__lte=mark.watermark
        ).count()
        - LedgerTransaction.objects.filter(tenant_id=account.tenant_id, kind="SETTLE", id__lte=mark.watermark).count()
        for account in held
    }
    kept = {row.account_id: row for row in AccountCheckpoint.objects.all()}
    assert {account: row.entries_micros for account, row in kept.items() if row.entries_micros} == {
        account: total for account, total in sums.items() if total
    }
    assert {account: kept[account].open_reservations for account in opened} == opened
    assert {account: kept[account].open_micros for account in opened} == {
        account.pk: sums.get(account.pk, 0) for account in held
    }


def test_the_checkpoint_rows_of_old_and_new_accounts_hold_the_ledger_sums_after_each_audit() -> None:
    """The checkpoint moves by an UPDATE of the rows there are and an INSERT for accounts new since: each account's
    sums counted once (an INSERT before the UPDATE would add a new account's movements twice)."""
    owner = make_persona(credit_micros=10 * USD)
    _run(owner)
    _run(owner, charge=None)
    assert ledger_audit_incremental().ok
    _checkpoint_matches_the_ledger()

    newcomer = make_persona(credit_micros=5 * USD)  # its accounts have no checkpoint row yet
    _run(newcomer)
    _run(newcomer, charge=None)
    _run(owner, reserved=30_000, charge=30_000)
    report = ledger_audit_incremental()
    assert report.ok, report.violations
    _checkpoint_matches_the_ledger()
    assert AccountCheckpoint.objects.filter(account__tenant=newcomer.tenant).count() == 2

    _run(newcomer, charge=0)
    _run(owner)
    third = ledger_audit_incremental()
    assert third.ok, third.violations
    _checkpoint_matches_the_ledger()


def test_a_tampered_balance_of_an_account_with_new_entries_is_caught() -> None:
    owner = make_persona(credit_micros=10 * USD)
    _run(owner)
    assert ledger_audit_incremental().ok
    _run(owner)  # new entries on its available and held accounts, and then the balance moves without one
    available = Account.tenant_account_id(owner.tenant.pk, Account.Kind.AVAILABLE)
    Account.objects.filter(pk=available).update(balance_micros=F("balance_micros") - 200)
    report = ledger_audit_incremental()
    assert report.transactions == 2
    assert report.violation_counts == {"ledger_sums_to_zero": 1, "balance_equals_entries": 1}
    (balance,) = [v for v in report.violations if v.invariant == "balance_equals_entries"]
    assert balance.detail == f"account {available} stores 9.9798 USD but its entries sum to 9.9800 USD"


def test_a_tampered_reservation_count_of_a_held_account_untouched_since_the_checkpoint_is_caught() -> None:
    owner, other = make_persona(credit_micros=10 * USD), make_persona(credit_micros=10 * USD)
    _run(owner, charge=None)
    assert ledger_audit_incremental().ok
    _run(other)  # something new elsewhere; the owner's accounts are not touched
    held = Account.tenant_account_id(owner.tenant.pk, Account.Kind.HELD)
    Account.objects.filter(pk=held).update(open_reservations=F("open_reservations") + 1)
    report = ledger_audit_incremental()
    assert report.violation_counts == {"held_equals_open_reservations": 1}
    (violation,) = report.violations
    assert violation.subject == held
    assert "counts 2 open reservations, but its 1 open" in violation.detail


def test_an_entry_inserted_into_a_transaction_written_after_the_checkpoint_is_caught() -> None:
    owner = make_persona(credit_micros=10 * USD)
    _run(owner)
    assert ledger_audit_incremental().ok
    run_id = _run(owner)
    settle = LedgerTransaction.objects.get(run_id=run_id, kind="SETTLE")
    available = Account.tenant_account_id(owner.tenant.pk, Account.Kind.AVAILABLE)
    _disable_balance_triggers(enable=False)
    try:
        with transaction.atomic():  # a second credit to available on the new SETTLE, its balance moved to match
            LedgerEntry.objects.create(transaction=settle, account_id=available, amount_micros=500)
            Account.objects.filter(pk=available).update(balance_micros=F("balance_micros") + 500)
    finally:
        _disable_balance_triggers(enable=True)
    report = ledger_audit_incremental()
    # Unbalanced (the entries sum to +500), and two entries on one account: not a SETTLE's shape.
    assert set(report.violation_counts) == {"balanced_transaction", "ledger_sums_to_zero"}
    (unbalanced,) = [v for v in report.violations if v.invariant == "balanced_transaction"]
    assert unbalanced.subject == str(settle.pk)


def test_the_hourly_audit_names_a_shard_whose_balance_moved_without_entries_after_the_checkpoint() -> None:
    owner = make_persona(credit_micros=10 * USD)
    run_id = _run(owner, reserved=10_000, charge=10_000)
    assert ledger_audit_incremental().ok
    shard = Account.platform_account_for(Account.Kind.REVENUE, run_id)
    other = "@revenue/00" if shard != "@revenue/00" else "@revenue/01"
    # What no service does: revenue moved between two shards, neither touched by an entry since the checkpoint;
    # the sum over all accounts is still zero.
    Account.objects.filter(pk=shard).update(balance_micros=F("balance_micros") - 10_000)
    Account.objects.filter(pk=other).update(balance_micros=F("balance_micros") + 10_000)
    report = ledger_audit_incremental()
    assert report.transactions == 0
    assert report.violation_counts == {"balance_equals_entries": 2}
    assert {v.subject for v in report.violations} == {shard, other}
