"""Revenue and funding in 16 shard accounts (SPEC §12): movements spread over them, the audit checks each shard
and their sum, and the one account of before the shards (kept where it holds history: docs/decisions.md) still
counts with its kind."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from django.test import override_settings

from billing.audit import ledger_audit
from billing.models import PLATFORM_SHARDS, Account, LedgerEntry, LedgerTransaction
from billing.services import ledger_reserve, ledger_settle
from tests.billing.test_audit import _audit_command
from tests.helpers.money import USD
from tests.helpers.personas import Persona, make_persona

pytestmark = pytest.mark.django_db


def _settle_runs(owner: Persona, count: int, charge_micros: int) -> list[uuid.UUID]:
    run_ids = [uuid.uuid4() for _ in range(count)]
    for run_id in run_ids:
        with transaction.atomic():
            tenant_id = owner.tenant.pk
            ledger_reserve(tenant_id=tenant_id, run_id=run_id, amount_micros=charge_micros, trace_id="t")
            ledger_settle(
                tenant_id=tenant_id,
                run_id=run_id,
                reserved_micros=charge_micros,
                charge_micros=charge_micros,
                trace_id="t",
            )
    return run_ids


def _revenue_by_account() -> dict[str, int]:
    """The sum of the entries of each revenue account that has any."""
    entries = LedgerEntry.objects.filter(account__kind=Account.Kind.REVENUE).order_by()
    return dict(entries.values_list("account_id").annotate(total=Sum("amount_micros")))


def test_every_kind_has_16_shard_accounts_and_nothing_else() -> None:
    platform = Account.objects.filter(tenant__isnull=True)
    assert sorted(platform.values_list("id", flat=True)) == sorted(
        f"@{kind}/{shard:02d}" for kind in ("revenue", "funding") for shard in range(PLATFORM_SHARDS)
    )
    assert set(platform.values_list("shard", flat=True)) == set(range(PLATFORM_SHARDS))


def test_settles_spread_over_the_shards_by_run_id_and_their_sum_is_the_revenue() -> None:
    owner = make_persona(credit_micros=10 * USD)
    run_ids = _settle_runs(owner, 64, 10_000)
    by_account = _revenue_by_account()
    assert sum(by_account.values()) == 64 * 10_000
    assert len(by_account) >= 8  # 64 random run ids over 16 shards: all on a few would be a broken spread
    for run_id in run_ids:
        settle = LedgerTransaction.objects.get(run_id=run_id, kind="SETTLE")
        shard = run_id.int % PLATFORM_SHARDS
        assert settle.entries.filter(account_id=f"@revenue/{shard:02d}").get().amount_micros == 10_000
    stored = dict(Account.objects.filter(kind=Account.Kind.REVENUE).values_list("id", "balance_micros"))
    assert {pk: stored[pk] for pk in by_account} == by_account
    assert ledger_audit().ok


@override_settings(DPP_PLATFORM_SHARDS=1)
def test_one_shard_puts_every_settle_on_shard_00() -> None:
    owner = make_persona(credit_micros=10 * USD)
    _settle_runs(owner, 8, 10_000)
    assert _revenue_by_account() == {"@revenue/00": 80_000}


def test_audit_ledger_names_the_shard_whose_balance_differs_from_its_entries() -> None:
    owner = make_persona(credit_micros=10 * USD)
    (run_id,) = _settle_runs(owner, 1, 10_000)
    shard = Account.platform_account_for(Account.Kind.REVENUE, run_id)
    other = "@revenue/00" if shard != "@revenue/00" else "@revenue/01"
    with connection.cursor() as cursor:  # what no service does: move revenue between two shards without entries
        cursor.execute("UPDATE billing_account SET balance_micros = balance_micros - 10000 WHERE id = %s", [shard])
        cursor.execute("UPDATE billing_account SET balance_micros = balance_micros + 10000 WHERE id = %s", [other])
    report = ledger_audit()
    # The sum over all accounts is still zero: only the per-account check can see it, and it names both shards.
    assert report.violation_counts == {"balance_equals_entries": 2}
    assert {v.subject for v in report.violations} == {shard, other}
    (tampered,) = [v for v in report.violations if v.subject == shard]
    assert tampered.detail == f"account {shard} stores 0.0000 USD but its entries sum to 0.0100 USD"
    # And `manage.py audit_ledger` itself: exit status 1, the same two shards (its run side also sees that these
    # SETTLEs have no run row: the ledger services are driven here without the runs app).
    status, body = _audit_command()
    assert (status, body["violation_counts"]["balance_equals_entries"]) == (1, 2)
    assert {v["subject"] for v in body["violations"] if v["invariant"] == "balance_equals_entries"} == {shard, other}


def test_two_shards_in_one_settle_are_a_misshapen_transaction() -> None:
    owner = make_persona(credit_micros=10 * USD)
    (run_id,) = _settle_runs(owner, 1, 10_000)
    settle = LedgerTransaction.objects.get(run_id=run_id, kind="SETTLE")
    shard = Account.platform_account_for(Account.Kind.REVENUE, run_id)
    other = "@revenue/00" if shard != "@revenue/00" else "@revenue/01"
    with transaction.atomic():  # balanced, and the balances follow: only the shape is wrong
        LedgerEntry.objects.bulk_create(
            [
                LedgerEntry(transaction=settle, account_id=shard, amount_micros=-100),
                LedgerEntry(transaction=settle, account_id=other, amount_micros=100),
            ]
        )
        Account.objects.filter(pk=shard).update(balance_micros=9_900)
        Account.objects.filter(pk=other).update(balance_micros=100)
    assert ledger_audit().violation_counts == {"transaction_shape": 1}


def test_an_account_of_before_the_shards_that_holds_history_counts_with_its_kind() -> None:
    owner = make_persona(credit_micros=0)
    Account.objects.bulk_create(
        [Account(id=f"@{kind.lower()}", kind=kind, tenant=None) for kind in Account.PLATFORM_KINDS]
    )
    with transaction.atomic():  # a top-up from before the sharding, on the one funding account of then
        txn = LedgerTransaction.objects.create(kind="TOPUP", tenant=owner.tenant, actor="t", reason="old")
        available = Account.tenant_account_id(owner.tenant.pk, Account.Kind.AVAILABLE)
        LedgerEntry.objects.bulk_create(
            [
                LedgerEntry(transaction=txn, account_id="@funding", amount_micros=-USD),
                LedgerEntry(transaction=txn, account_id=available, amount_micros=USD),
            ]
        )
        Account.objects.filter(pk="@funding").update(balance_micros=-USD)
        Account.objects.filter(pk=available).update(balance_micros=USD)
    assert Account.objects.filter(kind="FUNDING", tenant__isnull=True).count() == PLATFORM_SHARDS + 1
    assert ledger_audit().ok  # a database sharded by billing 0010 kept it: its entries are history
