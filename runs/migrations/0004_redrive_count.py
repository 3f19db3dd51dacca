"""Run.redrive_count: the reaper's re-drives back off per run (issue 15, item 5; reaper.services._redrive).

On PostgreSQL an ADD COLUMN with a constant DEFAULT and no CHECK: no table rewrite and no scan, whatever the size
of the runs table; the DEFAULT stays, for inserts by processes of the previous release during a deploy.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("runs", "0003_drop_redundant_indexes")]

    operations = [
        migrations.AddField(
            model_name="run",
            name="redrive_count",
            field=models.SmallIntegerField(db_default=0, default=0, help_text="Times the reaper re-published it."),
        ),
    ]
