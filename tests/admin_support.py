"""Helpers of the admin tests: staff users in their groups, runs in consistent states, bulk ledger rows.

Runs are made through the ORM with their money moved by billing's services in the same database transaction
(the run services are another issue's). Bulk helpers insert thousands of balanced transactions directly and move
the stored balances by the same amounts, so every ledger invariant still holds.
"""

from __future__ import annotations

import csv
import importlib
import io
import uuid
from collections.abc import Iterable, Iterator
from types import SimpleNamespace
from typing import Any

from django.apps import apps
from django.contrib.auth.models import Group, User
from django.db import connection, transaction
from django.db.models import F
from django.http import StreamingHttpResponse
from django.test import Client
from django.utils import timezone

from billing.models import Account, LedgerEntry, LedgerTransaction
from billing.services import ledger_reserve, ledger_settle
from dpp.money import minimum_fee
from runs.models import TERMINAL_STATUSES, FinalizeStage, MoneyState, Run, RunStatus
from tests.factories import queued_run_row

AVAILABLE, HELD = Account.Kind.AVAILABLE, Account.Kind.HELD


def ensure_staff_groups() -> None:
    """The groups of migration billing 0005, put back if a transactional test flushed them (it is idempotent)."""
    migration = importlib.import_module("billing.migrations.0005_staff_groups")
    migration.create_groups(apps, SimpleNamespace(connection=connection))


def staff_client(username: str, *, groups: Iterable[str] = (), superuser: bool = False) -> Client:
    """A logged-in admin client for a staff user in `groups`."""
    if superuser:
        user = User.objects.create_superuser(username=username, email=f"{username}@example.com", password=None)
    else:
        user = User.objects.create_user(username=username, is_staff=True)
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    client = Client()
    client.force_login(user)
    return client


def make_run(
    tenant_id: str,
    *,
    reserved_micros: int = 50_000,
    status: str = RunStatus.QUEUED,
    charge_micros: int | None = None,
    **fields: Any,
) -> Run:
    """A run in `status` with its RESERVE (and, when terminal, its SETTLE) posted in the same transaction."""
    now = timezone.now()
    values: dict[str, Any] = {
        "tenant_id": tenant_id,
        "pack_type": "decision",
        "profile_version": "test",
        "idempotency_key": f"key-{uuid.uuid4().hex}",
        "request_hash": "0" * 64,
        "inputs": {"question": "which?"},
        "timebox_sec": 90,
        "trace_id": uuid.uuid4().hex,
        "reserved_micros": reserved_micros,
        "minimum_fee_micros": minimum_fee(reserved_micros),
        "created_at": now,
        "updated_at": now,
        **fields,
    }
    with transaction.atomic():
        run = Run.objects.create(**values)
        ledger_reserve(tenant_id=tenant_id, run_id=run.pk, amount_micros=reserved_micros, trace_id=run.trace_id)
        if status in TERMINAL_STATUSES:
            charge = charge_micros or 0
            Run.objects.filter(pk=run.pk).update(
                status=status,
                money_state=MoneyState.SETTLED if charge else MoneyState.REFUNDED,
                finalize_stage=FinalizeStage.COMMITTED,
                charged_micros=charge,
                started_at=now,
                completed_at=now,
            )
            ledger_settle(
                tenant_id=tenant_id,
                run_id=run.pk,
                reserved_micros=reserved_micros,
                charge_micros=charge,
                trace_id=run.trace_id,
            )
        elif status == RunStatus.PROCESSING:
            Run.objects.filter(pk=run.pk).update(status=status, lease_token=uuid.uuid4(), started_at=now)
    run.refresh_from_db()
    return run


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


def csv_rows(response: Any) -> list[dict[str, str]]:
    """The rows of a streamed CSV download, by header."""
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"].startswith("text/csv")
    chunks = response.streaming_content
    assert isinstance(chunks, Iterator)  # a sync view: never an async iterator
    body = b"".join(chunks).decode()
    return list(csv.DictReader(io.StringIO(body)))
