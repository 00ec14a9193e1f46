from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("genhub", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="lease",
            name="wake_requested",
            field=models.BooleanField(default=False),
        ),
    ]
