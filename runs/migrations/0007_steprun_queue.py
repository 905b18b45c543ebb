from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("runs", "0006_stream_notifications")]

    operations = [
        migrations.AddField(
            model_name="steprun",
            name="queue",
            field=models.CharField(
                default="default",
                help_text="The worker queue that runs this step (copied from the definition): "
                "only a worker serving it claims the step.",
                max_length=50,
            ),
        ),
    ]
