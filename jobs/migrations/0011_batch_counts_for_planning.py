"""Counters for the ETA, the deadline planner and the batch page (counts_sql.CONDITIONS): the triggers are
installed again with them, and the existing batches' values are counted once.

The triggers go first: SQLite adds these columns by remaking jobs_batchcounts, and its rename refuses while
a trigger names the table. (On SQLite, 0009's and 0010's remakes of jobs_job dropped that table's triggers;
installing them all again here puts them back.)"""

from django.db import migrations, models

from jobs import counts_sql


def drop_triggers(apps, schema_editor):
    for statement in counts_sql.uninstall_sql(schema_editor.connection.vendor):
        schema_editor.execute(statement)


def install_without_planning(apps, schema_editor):
    for statement in counts_sql.install_sql(schema_editor.connection.vendor, conditions=counts_sql.NO_CONDITIONS):
        schema_editor.execute(statement)


def install_with_planning(apps, schema_editor):
    for statement in counts_sql.install_sql(schema_editor.connection.vendor):
        schema_editor.execute(statement)
    schema_editor.execute(counts_sql.refill_sql())


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0010_job_lost_work'),
    ]

    operations = [
        migrations.RunPython(drop_triggers, install_without_planning),
        migrations.AddField(model_name='batchcounts', name='n_fal_in_flight', field=models.IntegerField(db_default=0)),
        migrations.AddField(model_name='batchcounts', name='n_gpu_waiting', field=models.IntegerField(db_default=0)),
        migrations.AddField(model_name='batchcounts', name='n_gpu_running', field=models.IntegerField(db_default=0)),
        migrations.AddField(model_name='batchcounts', name='n_deadline_moved', field=models.IntegerField(db_default=0)),
        migrations.RunPython(install_with_planning, drop_triggers),
    ]
