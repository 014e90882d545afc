"""A GIN index on traces' `payload -> 'meta'` (PostgreSQL only).

Dataset builds filter traces with `payload -> 'meta' @> '{...}'`
(datasets.services.traces_matching); jsonb_path_ops serves exactly that
containment operator. The index lives on the traces table but belongs to the
query of this app, hence this migration. Nothing happens on SQLite.
"""

from django.db import migrations

INDEX = "trace_payload_meta_gin"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {INDEX} ON traces_trace "
        "USING gin ((payload -> 'meta') jsonb_path_ops)"
    )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0001_initial"),
        ("traces", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_index, drop_index)]
