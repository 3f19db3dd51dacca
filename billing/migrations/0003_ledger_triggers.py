"""Invariants the database keeps itself (SPEC §2.1).

PostgreSQL:
- a deferred constraint trigger (django-hordak's `check_leg` is the model): at commit, every ledger transaction
  touched has at least two entries and its entries sum to exactly zero;
- the ledger is append-only: UPDATE and DELETE of transactions and entries are refused.
SQLite (embedded mode): the append-only triggers only; SQLite has no deferred triggers.
"""

from django.db import migrations

PG_FORWARD = """
CREATE FUNCTION billing_check_balanced() RETURNS trigger AS $$
DECLARE
    txn_id bigint;
    total numeric;
    legs integer;
BEGIN
    IF TG_TABLE_NAME = 'billing_ledgerentry' THEN
        txn_id := NEW.transaction_id;
    ELSE
        txn_id := NEW.id;
    END IF;
    SELECT COALESCE(SUM(amount_micros), 0), COUNT(*) INTO total, legs
      FROM billing_ledgerentry WHERE transaction_id = txn_id;
    IF total <> 0 OR legs < 2 THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced: % entries summing to % micros', txn_id, legs, total
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE CONSTRAINT TRIGGER billing_entry_balanced
    AFTER INSERT ON billing_ledgerentry DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION billing_check_balanced();
CREATE CONSTRAINT TRIGGER billing_transaction_balanced
    AFTER INSERT ON billing_ledgertransaction DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION billing_check_balanced();

CREATE FUNCTION billing_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER billing_entry_append_only BEFORE UPDATE OR DELETE ON billing_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION billing_append_only();
CREATE TRIGGER billing_transaction_append_only BEFORE UPDATE OR DELETE ON billing_ledgertransaction
    FOR EACH ROW EXECUTE FUNCTION billing_append_only();
"""

PG_BACKWARD = """
DROP TRIGGER IF EXISTS billing_entry_balanced ON billing_ledgerentry;
DROP TRIGGER IF EXISTS billing_transaction_balanced ON billing_ledgertransaction;
DROP TRIGGER IF EXISTS billing_entry_append_only ON billing_ledgerentry;
DROP TRIGGER IF EXISTS billing_transaction_append_only ON billing_ledgertransaction;
DROP FUNCTION IF EXISTS billing_check_balanced();
DROP FUNCTION IF EXISTS billing_append_only();
"""

SQLITE_FORWARD = [
    f"""CREATE TRIGGER {name}_append_only_{op.lower()} BEFORE {op} ON {table}
        BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;"""
    for name, table in (
        ("billing_entry", "billing_ledgerentry"),
        ("billing_transaction", "billing_ledgertransaction"),
    )
    for op in ("UPDATE", "DELETE")
]
SQLITE_BACKWARD = [
    f"DROP TRIGGER IF EXISTS {name}_append_only_{op.lower()};"
    for name in ("billing_entry", "billing_transaction")
    for op in ("UPDATE", "DELETE")
]


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement)


def backward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_BACKWARD, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_BACKWARD:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("billing", "0002_plans_and_platform_accounts")]
    operations = [migrations.RunPython(forward, backward)]
