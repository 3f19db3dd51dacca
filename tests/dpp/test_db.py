"""config.adapters.django_hot: the hot paths' prepared statements (PostgreSQL) and the rows they read."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from billing.models import Account, LedgerTransaction
from billing.selectors import balances_get
from billing.services import ledger_reserve, ledger_settle, ledger_topup
from config.adapters.django_hot import RowReader, hot_cursor
from runs.models import Run
from tests.helpers.bulk import queued_run_row
from tests.helpers.personas import Persona

pytestmark = pytest.mark.django_db

# A statement of the hot cursor is prepared on its fifth execution on a connection (DPP_DB_PREPARE_THRESHOLD).
PREPARED_AFTER = 5


def _prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [statement for (statement,) in cursor.fetchall()]


def test_hot_statements_are_prepared_once_used_enough_and_still_counted() -> None:
    sql = "SELECT %s::bigint + 1 AS dpp_db_probe"
    with CaptureQueriesContext(connection) as queries:
        for number in range(PREPARED_AFTER + 2):
            with hot_cursor() as cursor:
                cursor.execute(sql, [number])
                assert cursor.fetchone() == (number + 1,)
    assert len(queries.captured_queries) == PREPARED_AFTER + 2  # the query budgets of the API still see them
    assert [s for s in _prepared_statements() if "dpp_db_probe" in s] == ["SELECT $1::bigint + 1 AS dpp_db_probe"]


def test_the_orm_never_prepares() -> None:
    before = _prepared_statements()
    for _ in range(PREPARED_AFTER + 2):
        list(Account.objects.filter(pk="@revenue/00").values_list("balance_micros", flat=True))
    assert _prepared_statements() == before


def test_money_past_32_bits_moves_exactly_through_prepared_statements(owner: Persona) -> None:
    """Amounts over 2**31 micros (about 2,147 USD), enough times for every ledger statement to be prepared."""
    tenant_id = owner.tenant.pk
    big = 3_000_000_000_000  # 3,000,000 USD
    amount = 2_500_000_000  # 2,500 USD: past int4
    ledger_topup(tenant=owner.tenant, amount_micros=big, actor="test", reason="big credit")
    before = balances_get(tenant_id=tenant_id)
    for _ in range(PREPARED_AFTER + 3):
        run_id = uuid.uuid4()
        with transaction.atomic():
            ledger_reserve(tenant_id=tenant_id, run_id=run_id, amount_micros=amount, trace_id="t")
        with transaction.atomic():
            ledger_settle(
                tenant_id=tenant_id, run_id=run_id, reserved_micros=amount, charge_micros=amount - 100, trace_id="t"
            )
    after = balances_get(tenant_id=tenant_id)
    rounds = PREPARED_AFTER + 3
    assert after.available_micros == before.available_micros - rounds * (amount - 100)
    assert after.held_micros == 0
    assert any("billing_account" in s for s in _prepared_statements())
    assert LedgerTransaction.objects.filter(tenant_id=tenant_id, kind="SETTLE").count() == rounds


def test_row_reader_builds_the_run_the_orm_reads_with_the_rest_deferred(owner: Persona) -> None:
    run = queued_run_row(tenant_id=owner.tenant.pk, reserved_micros=2_500_000_000)
    run.id = uuid.uuid4()
    run.save(force_insert=True)
    reader = RowReader(Run, ("created_at", "id", "reserved_micros", "tenant", "lease_token"), extras=("probe",))
    sql = f"SELECT {reader.columns('r')}, 41 + 1 FROM runs_run r WHERE r.id = %s"  # noqa: S608
    for _ in range(PREPARED_AFTER + 2):  # read through the prepared statement too
        with hot_cursor() as cursor:
            cursor.execute(sql, [run.pk])
            read = reader.instance(cursor.fetchone())
        assert isinstance(read, Run)
        assert (read.pk, read.tenant_id, read.reserved_micros, read.created_at) == (
            run.pk,
            owner.tenant.pk,
            2_500_000_000,
            Run.objects.get(pk=run.pk).created_at,
        )
        assert read.lease_token is None
        assert read.probe == 42  # type: ignore[attr-defined]
        assert read.get_deferred_fields() >= {"inputs", "status"}
        assert read.inputs == run.inputs  # loads on access
        assert not read._state.adding


def test_row_reader_reads_no_row_as_none_and_refuses_an_unknown_field() -> None:
    assert RowReader(Run, ("id",)).instance(None) is None
    with pytest.raises(ValueError, match="no_such_field"):
        RowReader(Run, ("id", "no_such_field"))
