"""Thousands of rows at once, for the admin's scale tests: balanced transactions inserted directly, with the
stored balances moved by the same amounts, so every ledger invariant still holds."""

from __future__ import annotations

import uuid

from django.db.models import F
from django.utils import timezone

from billing.models import Account, LedgerEntry, LedgerTransaction
from dpp.money import minimum_fee
from runs.models import Run

AVAILABLE, HELD = Account.Kind.AVAILABLE, Account.Kind.HELD


def queued_run_row(*, tenant_id: str, reserved_micros: int, idempotency_key: str | None = None) -> Run:
    """An unsaved QUEUED run, for tests that write runs through the ORM (bulk or with tampered money)."""
    now = timezone.now()
    return Run(
        tenant_id=tenant_id,
        pack_type="decision",
        profile_version="test",
        idempotency_key=idempotency_key or uuid.uuid4().hex,
        request_hash="0" * 64,
        inputs={},
        timebox_sec=90,
        trace_id=uuid.uuid4().hex,
        reserved_micros=reserved_micros,
        minimum_fee_micros=minimum_fee(reserved_micros),
        created_at=now,
        updated_at=now,
    )


def _bulk_post(kind: str, tenant_id: str, legs: dict[str, int], count: int, run_ids: list[uuid.UUID] | None) -> None:
    now = timezone.now()
    transactions = LedgerTransaction.objects.bulk_create(
        [
            LedgerTransaction(
                kind=kind,
                tenant_id=tenant_id,
                run_id=run_ids[i] if run_ids else None,
                actor="" if run_ids else "test:bulk",
                reason="" if run_ids else f"bulk credit {i}",
                created_at=now,
            )
            for i in range(count)
        ],
        batch_size=2000,
    )
    LedgerEntry.objects.bulk_create(
        [
            LedgerEntry(transaction_id=txn.pk, account_id=account_id, amount_micros=amount)
            for txn in transactions
            for account_id, amount in legs.items()
        ],
        batch_size=5000,
    )
    for account_id, amount in legs.items():
        Account.objects.filter(pk=account_id).update(balance_micros=F("balance_micros") + amount * count)


def bulk_topups(tenant_id: str, count: int, amount_micros: int) -> None:
    """`count` balanced TOPUP transactions (funding → available) and the balances they move."""
    funding = Account.platform_account_for(Account.Kind.FUNDING, tenant_id)  # the shard ledger_topup would pick
    legs = {funding: -amount_micros, Account.tenant_account_id(tenant_id, AVAILABLE): amount_micros}
    _bulk_post(LedgerTransaction.Kind.TOPUP, tenant_id, legs, count, None)


def bulk_queued_runs(tenant_id: str, count: int, reserved_micros: int) -> None:
    """`count` QUEUED runs, each holding `reserved_micros` with its RESERVE; the tenant needs the credit."""
    runs = Run.objects.bulk_create(
        [
            queued_run_row(
                tenant_id=tenant_id,
                reserved_micros=reserved_micros,
                idempotency_key=f"bulk-{i:06d}-{uuid.uuid4().hex[:8]}",
            )
            for i in range(count)
        ],
        batch_size=2000,
    )
    legs = {
        Account.tenant_account_id(tenant_id, AVAILABLE): -reserved_micros,
        Account.tenant_account_id(tenant_id, HELD): reserved_micros,
    }
    _bulk_post(LedgerTransaction.Kind.RESERVE, tenant_id, legs, count, [run.pk for run in runs])
