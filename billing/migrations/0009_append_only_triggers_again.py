"""The ledger's triggers of 0003 again, wherever a later migration lost them.

Found from outside: on SQLite (embedded mode) 0007's AlterFields rebuild both ledger tables (CREATE TABLE new__…,
copy, DROP TABLE), and SQLite drops a table's triggers with it, so after a full `migrate` the embedded ledger
accepted UPDATE and DELETE. This re-creates what is missing and leaves what is there:
- SQLite: CREATE TRIGGER IF NOT EXISTS, under 0003's names;
- PostgreSQL (no table rebuilds there, so normally a no-op): when any of 0003's four triggers is missing, its
  triggers and functions are dropped and 0003's SQL is run again, in this migration's transaction.
tests/billing/test_ledger_triggers_after_migrate.py lists the triggers after a full migrate on both backends, so a
later migration that rebuilds a ledger table on SQLite fails the suite; such a migration must end with this one's
`ensure_triggers` (import it with importlib, as the test does).
"""

import importlib

from django.db import migrations

LEDGER_TRIGGERS = importlib.import_module("billing.migrations.0003_ledger_triggers")

# What 0003 creates, by backend: the names the test of the final schema expects.
PG_TRIGGERS = frozenset(
    {
        "billing_entry_balanced",
        "billing_transaction_balanced",
        "billing_entry_append_only",
        "billing_transaction_append_only",
    }
)
SQLITE_TRIGGERS = frozenset(
    f"{name}_append_only_{op}" for name in ("billing_entry", "billing_transaction") for op in ("update", "delete")
)

PG_TRIGGER_LIST = (
    "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
    " AND tgrelid IN ('billing_ledgerentry'::regclass, 'billing_ledgertransaction'::regclass)"
)


def ensure_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        for statement in LEDGER_TRIGGERS.SQLITE_FORWARD:
            schema_editor.execute(statement.replace("CREATE TRIGGER ", "CREATE TRIGGER IF NOT EXISTS ", 1))
    elif vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(PG_TRIGGER_LIST)
            present = {name for (name,) in cursor.fetchall()}
        if PG_TRIGGERS - present:
            schema_editor.execute(LEDGER_TRIGGERS.PG_BACKWARD, params=None)
            schema_editor.execute(LEDGER_TRIGGERS.PG_FORWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("billing", "0008_manual_once_per_form")]
    # Reversing leaves the triggers: 0003 is the migration that owns them.
    operations = [migrations.RunPython(ensure_triggers, migrations.RunPython.noop)]
