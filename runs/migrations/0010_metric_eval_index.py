"""The index of a run's steps that carry an eval loss, which a run page's thinned chart
reads in full (runs.selectors.run_chart_metrics)."""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("runs", "0009_series_drawing")]

    operations = [
        migrations.AddIndex(
            model_name="runmetric",
            index=models.Index(
                condition=models.Q(eval_loss__isnull=False),
                fields=["run", "step"],
                name="runmetric_run_eval_idx",
            ),
        ),
    ]
