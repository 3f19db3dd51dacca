"""One manual movement per admin form code: a unique partial index on the transactions' trace_id.

Built CONCURRENTLY on PostgreSQL (the ledger may be large; a plain CREATE INDEX would block every RESERVE and
SETTLE while it builds), hence a non-atomic migration. Refuses to run, naming them, if posted movements already
share a form code: only a double click raced on SQLite (the embedded mode) could have made them.
"""

from django.db import migrations, models

INDEX = "billing_manual_once_per_form"
CONDITION = "kind IN ('TOPUP', 'ADJUSTMENT') AND NOT (trace_id = '')"


def create_index(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT trace_id, COUNT(*), MIN(id), MAX(id) FROM billing_ledgertransaction"  # noqa: S608 - constants
            f" WHERE {CONDITION} GROUP BY trace_id HAVING COUNT(*) > 1"
        )
        shared = cursor.fetchall()
    if shared:
        listed = "; ".join(
            f"form code {code}: {count} transactions, #{first} to #{last}" for code, count, first, last in shared[:10]
        )
        raise RuntimeError(
            f"{len(shared)} form code(s) were posted more than once ({listed}). The money of each is real: have "
            "finance reverse the extra ones with an ADJUSTMENT. On a local demo database, `make clean` starts over."
        )
    concurrently = " CONCURRENTLY" if connection.vendor == "postgresql" else ""
    schema_editor.execute(
        f"CREATE UNIQUE INDEX{concurrently} {INDEX} ON billing_ledgertransaction (trace_id) WHERE {CONDITION}"
    )


def drop_index(apps, schema_editor):
    concurrently = " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(f"DROP INDEX{concurrently} IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("billing", "0007_drop_redundant_indexes"),
        ("dpp", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create_index, drop_index)],
            state_operations=[
                migrations.AddConstraint(
                    model_name="ledgertransaction",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(
                            ("kind__in", ["TOPUP", "ADJUSTMENT"]), models.Q(("trace_id", ""), _negated=True)
                        ),
                        fields=("trace_id",),
                        name=INDEX,
                    ),
                ),
            ],
        ),
    ]
