"""billing 0008: the unique index on admin form codes refuses to be built over movements posted twice, and says
which (only a double click raced on SQLite could have left them; the money of each is real)."""

from __future__ import annotations

import importlib

import pytest
from django.db import connection

MIGRATION = importlib.import_module("billing.migrations.0008_manual_once_per_form")

pytestmark = pytest.mark.django_db


def test_the_index_names_form_codes_posted_twice_instead_of_failing_blindly() -> None:
    with connection.cursor() as cursor:
        # A temporary table shadows the ledger for this session only: the real one and its index stay untouched.
        cursor.execute("CREATE TEMP TABLE billing_ledgertransaction (id bigint, kind text, trace_id text)")
        cursor.execute(
            "INSERT INTO billing_ledgertransaction VALUES (7, 'TOPUP', 'abc'), (9, 'TOPUP', 'abc'),"
            " (8, 'ADJUSTMENT', 'def'), (10, 'RESERVE', ''), (11, 'SETTLE', '')"
        )
    try:
        refused = r"^1 form code\(s\) were posted more than once \(form code abc: 2 transactions, #7 to #9\)"
        with pytest.raises(RuntimeError, match=refused), connection.schema_editor(atomic=False) as editor:
            MIGRATION.create_index(None, editor)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE pg_temp.billing_ledgertransaction")
