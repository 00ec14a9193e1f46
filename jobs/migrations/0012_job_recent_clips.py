# The latest clips of a provider, newest first (the ETA's measured speeds): see Job.Meta.indexes.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0011_batch_counts_for_planning'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='job',
            index=models.Index(condition=models.Q(('status', 'succeeded')), fields=['provider', '-finished_at'], name='job_recent_clips'),
        ),
    ]
