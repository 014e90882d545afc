"""TunixRun.metrics_count: how many steps a run logged, counted once for the runs that have some."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models
from django.db.models import Count


def count_steps(apps: Any, schema_editor: Any) -> None:
    TunixRun = apps.get_model("runs", "TunixRun")
    RunMetric = apps.get_model("runs", "RunMetric")
    counts = RunMetric.objects.values_list("run_id").annotate(steps=Count("id")).order_by()
    for run_id, steps in counts.iterator():
        TunixRun.objects.filter(pk=run_id).update(metrics_count=steps)


class Migration(migrations.Migration):
    dependencies = [("runs", "0008_resume_and_training")]

    operations = [
        migrations.AddField(
            model_name="tunixrun",
            name="metrics_count",
            field=models.IntegerField(blank=True, null=True, verbose_name="logged steps"),
        ),
        migrations.RunPython(count_steps, migrations.RunPython.noop, elidable=True),
    ]
