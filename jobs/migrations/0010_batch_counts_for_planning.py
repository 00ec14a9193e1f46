"""Counters for the ETA, the deadline planner and the batch page (counts_sql.CONDITIONS): the triggers are
installed again with them, and the existing batches' values are counted once."""

from django.db import migrations, models

from jobs import counts_sql


def install(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for statement in counts_sql.uninstall_sql(vendor) + counts_sql.install_sql(vendor):
        schema_editor.execute(statement)
    schema_editor.execute(counts_sql.refill_sql())


def uninstall(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for statement in (counts_sql.uninstall_sql(vendor)
                      + counts_sql.install_sql(vendor, conditions=counts_sql.NO_CONDITIONS)):
        schema_editor.execute(statement)


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0009_job_worker'),
    ]

    operations = [
        migrations.AddField(model_name='batchcounts', name='n_fal_in_flight', field=models.IntegerField(db_default=0)),
        migrations.AddField(model_name='batchcounts', name='n_gpu_waiting', field=models.IntegerField(db_default=0)),
        migrations.AddField(model_name='batchcounts', name='n_gpu_running', field=models.IntegerField(db_default=0)),
        migrations.AddField(model_name='batchcounts', name='n_deadline_moved', field=models.IntegerField(db_default=0)),
        migrations.RunPython(install, uninstall),
    ]
