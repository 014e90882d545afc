"""What a drawing of a long series reads: how many steps each run logged (TunixRun.metrics_count)
and each step's level (RunMetric.level, runs.metrics.metric_level), filled in for the runs
already stored, and the index that finds a run's rows by level."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

from runs.metrics import metric_level

BATCH = 2000


def fill(apps: Any, schema_editor: Any) -> None:
    TunixRun = apps.get_model("runs", "TunixRun")
    RunMetric = apps.get_model("runs", "RunMetric")
    logged = RunMetric.objects.values_list("run_id", flat=True).distinct().order_by()
    for run_id in list(logged.iterator()):
        rows = RunMetric.objects.filter(run_id=run_id).order_by("step").only("pk")
        changed = []
        count = 0
        for position, row in enumerate(rows.iterator(chunk_size=BATCH)):
            count += 1
            level = metric_level(position)
            if level:
                row.level = level
                changed.append(row)
            if len(changed) >= BATCH:
                RunMetric.objects.bulk_update(changed, ["level"])
                changed = []
        if changed:
            RunMetric.objects.bulk_update(changed, ["level"])
        TunixRun.objects.filter(pk=run_id).update(metrics_count=count)


class Migration(migrations.Migration):
    dependencies = [("runs", "0008_resume_and_training")]

    operations = [
        migrations.AddField(
            model_name="tunixrun",
            name="metrics_count",
            field=models.IntegerField(blank=True, null=True, verbose_name="logged steps"),
        ),
        migrations.AddField(
            model_name="runmetric",
            name="level",
            field=models.SmallIntegerField(default=0),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop, elidable=True),
        migrations.AddIndex(
            model_name="runmetric",
            index=models.Index(fields=["run", "level"], name="runmetric_run_level_idx"),
        ),
    ]
