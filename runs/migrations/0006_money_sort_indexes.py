"""The admin's money sorts and totals on indexes (SPEC §13: each list within 300 ms at 1,000,000 runs;
docs/BENCHMARKS.md, "Admin lists at 1,000,000 runs").

- runs_charged on (COALESCE(charged_micros, -1), created_at, id) and runs_reserved on (reserved_micros, created_at,
  id): the top 50 of "most charged first" is read off the index instead of sorting every run (0.6–0.9 s at 1M runs).
- runs_created_money replaces runs_created (same keys) with the two money columns INCLUDEd: the totals of the list
  (all runs, or a date range) are an index-only scan instead of a scan of the runs table (SQLite ignores INCLUDE).

Built CONCURRENTLY on PostgreSQL (a plain CREATE INDEX would block every accept and settle while it builds over the
whole runs table), hence a non-atomic migration; plain CREATE INDEX on SQLite (the embedded mode). The new index is
built before the one it replaces is dropped, so the list is never without one.
"""

from django.db import migrations, models
from django.db.models.functions import Coalesce

ADDED = (
    models.Index(
        Coalesce("charged_micros", models.Value(-1, output_field=models.BigIntegerField())),
        models.F("created_at"),
        models.F("id"),
        name="runs_charged",
    ),
    models.Index(fields=["reserved_micros", "created_at", "id"], name="runs_reserved"),
    models.Index(
        fields=["-created_at", "-id"], include=["reserved_micros", "charged_micros"], name="runs_created_money"
    ),
)
REPLACED = (models.Index(fields=["-created_at", "-id"], name="runs_created"),)


def _concurrently(schema_editor):
    return {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}


def _swap(schema_editor, run, *, add, drop):
    for index in add:
        schema_editor.add_index(run, index, **_concurrently(schema_editor))
    for index in drop:
        schema_editor.remove_index(run, index, **_concurrently(schema_editor))


def forwards(apps, schema_editor):
    _swap(schema_editor, apps.get_model("runs", "Run"), add=ADDED, drop=REPLACED)


def backwards(apps, schema_editor):
    _swap(schema_editor, apps.get_model("runs", "Run"), add=REPLACED, drop=ADDED)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("runs", "0005_run_api_key")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forwards, backwards)],
            state_operations=[
                *(migrations.AddIndex(model_name="run", index=index) for index in ADDED),
                *(migrations.RemoveIndex(model_name="run", name=index.name) for index in REPLACED),
            ],
        ),
    ]
