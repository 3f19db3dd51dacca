"""What PostgreSQL itself refuses, even to raw SQL that bypasses billing.services (migration 0003, CHECKs, uniques).

transaction=True: the balance trigger is DEFERRED, so it only fires at a real COMMIT.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction

from billing.models import Account, LedgerEntry, LedgerTransaction
from billing.services import ledger_reserve, ledger_settle, ledger_topup
from tests.helpers.money import USD
from tests.helpers.personas import Persona, make_persona

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def tenant_owner() -> Persona:
    return make_persona(credit_micros=USD)


def _sql(statement: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def _insert_txn(tenant_id: str, kind: str = "TOPUP", run_id: uuid.UUID | None = None) -> int:
    ((txn_id,),) = _sql(
        """INSERT INTO billing_ledgertransaction (kind, tenant_id, run_id, actor, reason, trace_id, created_at)
           VALUES (%s, %s, %s, 'raw', 'raw sql', '', now()) RETURNING id""",
        [kind, tenant_id, run_id],
    )
    return int(txn_id)


def _insert_entries(txn_id: int, legs: dict[str, int]) -> None:
    for account_id, amount in legs.items():
        _sql(
            "INSERT INTO billing_ledgerentry (transaction_id, account_id, amount_micros) VALUES (%s, %s, %s)",
            [txn_id, account_id, amount],
        )


def _available(persona: Persona) -> str:
    return Account.tenant_account_id(persona.tenant.pk, "AVAILABLE")


def _commit_raw(tenant_owner: Persona, legs: dict[str, int], ran: list[bool] | None = None) -> int:
    """Write a TOPUP with `legs` by raw SQL and commit it; `ran` records that every statement before COMMIT ran."""
    with transaction.atomic():
        txn_id = _insert_txn(tenant_owner.tenant.pk)
        _insert_entries(txn_id, legs)
        if ran is not None:
            ran.append(True)
    return txn_id


class TestBalancedAtCommit:
    def test_a_balanced_transaction_commits(self, tenant_owner: Persona) -> None:
        txn_id = _commit_raw(tenant_owner, {"@funding/00": -500, _available(tenant_owner): 500})
        assert LedgerEntry.objects.filter(transaction_id=txn_id).count() == 2

    def test_an_unbalanced_transaction_fails_at_commit(self, tenant_owner: Persona) -> None:
        before = LedgerTransaction.objects.count()
        ran: list[bool] = []
        with pytest.raises(IntegrityError, match=r"unbalanced: 2 entries summing to 100 micros"):
            _commit_raw(tenant_owner, {"@funding/00": -400, _available(tenant_owner): 500}, ran=ran)
        assert ran == [True]  # every INSERT was accepted: only the COMMIT is refused
        assert LedgerTransaction.objects.count() == before

    def test_a_single_entry_fails_at_commit(self, tenant_owner: Persona) -> None:
        before = LedgerEntry.objects.count()
        with pytest.raises(IntegrityError, match=r"1 entries"):
            _commit_raw(tenant_owner, {_available(tenant_owner): 500})
        assert LedgerEntry.objects.count() == before

    def test_a_transaction_without_entries_fails_at_commit(self, tenant_owner: Persona) -> None:
        before = LedgerTransaction.objects.count()
        with pytest.raises(IntegrityError, match=r"0 entries summing to 0"):
            _commit_raw(tenant_owner, {})
        assert LedgerTransaction.objects.count() == before

    def test_entries_added_later_to_a_committed_transaction_must_balance_too(self, tenant_owner: Persona) -> None:
        txn = ledger_topup(tenant=tenant_owner.tenant, amount_micros=USD, actor="t", reason="r")
        with pytest.raises(IntegrityError, match="unbalanced"), transaction.atomic():
            _insert_entries(txn.pk, {"@funding/00": 100})
        assert LedgerEntry.objects.filter(transaction=txn).count() == 2


class TestAppendOnly:
    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE billing_ledgerentry SET amount_micros = amount_micros * 2 WHERE transaction_id = %s",
            "DELETE FROM billing_ledgerentry WHERE transaction_id = %s",
            "UPDATE billing_ledgertransaction SET reason = 'rewritten' WHERE id = %s",
            "DELETE FROM billing_ledgertransaction WHERE id = %s",
        ],
    )
    def test_update_and_delete_are_refused_even_to_raw_sql(self, tenant_owner: Persona, statement: str) -> None:
        txn = ledger_topup(tenant=tenant_owner.tenant, amount_micros=USD, actor="t", reason="kept")
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            _sql(statement, [txn.pk])
        txn.refresh_from_db()
        assert txn.reason == "kept"
        assert dict(LedgerEntry.objects.filter(transaction=txn).values_list("account_id", "amount_micros")) == {
            Account.platform_account_for("FUNDING", tenant_owner.tenant.pk): -USD,
            _available(tenant_owner): USD,
        }

    def test_the_orm_cannot_delete_either(self, tenant_owner: Persona) -> None:
        txn = ledger_topup(tenant=tenant_owner.tenant, amount_micros=USD, actor="t", reason="kept")
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            LedgerEntry.objects.filter(transaction=txn).delete()
        assert LedgerEntry.objects.filter(transaction=txn).count() == 2


class TestConstraints:
    @pytest.mark.parametrize("kind", ["SETTLE", "RESERVE"])
    def test_one_settle_and_one_reserve_per_run(self, tenant_owner: Persona, kind: str) -> None:
        run_id, tenant_id = uuid.uuid4(), tenant_owner.tenant.pk
        with transaction.atomic():
            ledger_reserve(tenant_id=tenant_id, run_id=run_id, amount_micros=50_000, trace_id="t")
            if kind == "SETTLE":
                ledger_settle(tenant_id=tenant_id, run_id=run_id, reserved_micros=50_000, charge_micros=0, trace_id="t")
        # The second one is refused at its INSERT, before any balance trigger could see it.
        with pytest.raises(IntegrityError, match="billing_once_per_run"), transaction.atomic():
            LedgerTransaction.objects.create(kind=kind, tenant=tenant_owner.tenant, run_id=run_id)
        assert LedgerTransaction.objects.filter(run_id=run_id, kind=kind).count() == 1

    def test_tenant_balance_cannot_go_negative(self, tenant_owner: Persona) -> None:
        with pytest.raises(IntegrityError, match="billing_tenant_balance_nonneg"), transaction.atomic():
            _sql("UPDATE billing_account SET balance_micros = -100 WHERE id = %s", [_available(tenant_owner)])
        assert Account.objects.get(pk=_available(tenant_owner)).balance_micros == USD

    def test_platform_funding_may_go_negative(self, tenant_owner: Persona) -> None:
        funding = Account.platform_account_for("FUNDING", tenant_owner.tenant.pk)
        assert Account.objects.get(pk=funding).balance_micros == -USD

    @pytest.mark.parametrize(("amount", "constraint"), [(150, "billing_entry_granule"), (0, "billing_entry_nonzero")])
    def test_entry_amounts(self, tenant_owner: Persona, amount: int, constraint: str) -> None:
        txn = ledger_topup(tenant=tenant_owner.tenant, amount_micros=USD, actor="t", reason="r")
        with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
            _insert_entries(txn.pk, {"@funding/00": amount})

    def test_balances_stay_on_the_granule(self, tenant_owner: Persona) -> None:
        with pytest.raises(IntegrityError, match="billing_balance_granule"), transaction.atomic():
            _sql("UPDATE billing_account SET balance_micros = 150 WHERE id = '@revenue/00'")

    def test_manual_transactions_need_actor_and_reason(self, tenant_owner: Persona) -> None:
        with pytest.raises(IntegrityError, match="billing_manual_has_actor_and_reason"), transaction.atomic():
            LedgerTransaction.objects.create(kind="ADJUSTMENT", tenant=tenant_owner.tenant, actor="a", reason="")

    def test_one_manual_movement_per_form_code(self, tenant_owner: Persona) -> None:
        form_code = uuid.uuid4().hex
        ledger_topup(tenant=tenant_owner.tenant, amount_micros=USD, actor="a", reason="r", trace_id=form_code)
        with pytest.raises(IntegrityError, match="billing_manual_once_per_form"):
            ledger_topup(tenant=tenant_owner.tenant, amount_micros=USD, actor="a", reason="r", trace_id=form_code)
        # Without a form code (the command line), any number of top-ups.
        for _ in range(2):
            ledger_topup(tenant=tenant_owner.tenant, amount_micros=USD, actor="cli", reason="r")
        assert LedgerTransaction.objects.filter(tenant=tenant_owner.tenant, kind="TOPUP").count() == 4

    def test_run_kinds_need_a_run_and_manual_kinds_have_none(self, tenant_owner: Persona) -> None:
        with pytest.raises(IntegrityError, match="billing_run_kinds_have_run"), transaction.atomic():
            LedgerTransaction.objects.create(kind="RESERVE", tenant=tenant_owner.tenant)
        with pytest.raises(IntegrityError, match="billing_run_kinds_have_run"), transaction.atomic():
            LedgerTransaction.objects.create(
                kind="TOPUP", tenant=tenant_owner.tenant, run_id=uuid.uuid4(), actor="a", reason="r"
            )
