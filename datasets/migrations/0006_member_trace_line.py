"""Store each member's `trace` export line, as the `tunix_sft` one already is.

The `trace` export then streams stored text instead of parsing and rendering
every trace's payload per request (datasets.selectors.dataset_export_lines).
Members of datasets built before this migration get their line here, rendered
by the export renderer itself, so every stored line is byte for byte what the
export would have rendered. Members whose trace is already gone keep ""; the
export skips them anyway.
"""

from django.db import migrations, models

_BATCH = 1000


def fill_trace_lines(apps, schema_editor):
    # The renderer is imported, not copied: the stored line must be exactly
    # what the export renders.
    from datasets.exports import render_trace
    from tunix_registry.timestamps import utc_iso

    Dataset = apps.get_model("datasets", "Dataset")
    DatasetMember = apps.get_model("datasets", "DatasetMember")
    Trace = apps.get_model("traces", "Trace")
    for dataset_id, key in Dataset.objects.values_list("id", "key").iterator():
        last = -1
        while True:
            members = list(
                DatasetMember.objects.filter(dataset_id=dataset_id, position__gt=last)
                .order_by("position")
                .values_list("id", "position", "trace_id")[:_BATCH]
            )
            if not members:
                break
            last = members[-1][1]
            traces = {
                row[0]: row
                for row in Trace.objects.filter(id__in=[m[2] for m in members]).values_list(
                    "id", "created_at", "trace_version", "payload"
                )
            }
            updates = []
            for member_id, _position, trace_id in members:
                row = traces.get(trace_id)
                if row is None:
                    continue
                line = render_trace(
                    str(row[0]), utc_iso(row[1], suffix="+00:00"), row[2], row[3], key
                )
                updates.append(DatasetMember(id=member_id, trace_line=line))
            DatasetMember.objects.bulk_update(updates, ["trace_line"])


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0005_drop_missing_trace_counts"),
        ("traces", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="datasetmember",
            name="trace_line",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.RunPython(fill_trace_lines, migrations.RunPython.noop),
    ]
