"""Count a dataset's existing traces with an index instead of trigger-kept counts.

A dry-run reports how many of a dataset's traces still exist (exports skip
deleted ones). That count is now a plain query
(datasets.selectors.dataset_trace_count) served by an index on the membership
table, (dataset_id, trace_id): an index-only scan of the dataset's members
joined to the traces' primary key. So this migration removes the table
`datasets_missing` and the triggers that kept it (on PostgreSQL only, where
0004 created them), including the trigger on the traces table that made the
traces app depend on this one inside the database.

Going backwards recreates what 0004 did, filled from the current rows. The
SQL is written out here rather than imported, so this migration keeps meaning
the same whatever later code does.
"""

from django.db import migrations, models

_DROP = [
    "DROP TRIGGER IF EXISTS datasets_missing_on_trace_delete ON traces_trace",
    "DROP TRIGGER IF EXISTS datasets_missing_on_trace_truncate ON traces_trace",
    "DROP TRIGGER IF EXISTS datasets_missing_on_member_insert ON datasets_datasetmember",
    "DROP TRIGGER IF EXISTS datasets_missing_on_dataset_delete ON datasets_dataset",
    "DROP TRIGGER IF EXISTS datasets_missing_on_dataset_truncate ON datasets_dataset",
    "DROP FUNCTION IF EXISTS datasets_missing_datasets_deleted()",
    "DROP FUNCTION IF EXISTS datasets_missing_datasets_truncated()",
    "DROP FUNCTION IF EXISTS datasets_missing_traces_deleted()",
    "DROP FUNCTION IF EXISTS datasets_missing_traces_truncated()",
    "DROP FUNCTION IF EXISTS datasets_missing_members_added()",
    "DROP TABLE IF EXISTS datasets_missing",
]


def _trigger_function(name: str, statement: str) -> str:
    return (
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN\n    {statement};\n    RETURN NULL;\nEND\n$$"
    )


# What 0004 created, one statement each (psycopg sends one statement at a time).
_CREATE = [
    "CREATE TABLE datasets_missing (dataset_id bigint PRIMARY KEY, traces bigint NOT NULL)",
    _trigger_function(
        "datasets_missing_traces_deleted",
        "INSERT INTO datasets_missing AS missing (dataset_id, traces) "
        "SELECT m.dataset_id, count(*) FROM datasets_datasetmember AS m "
        "JOIN old_rows AS gone ON gone.id = m.trace_id GROUP BY m.dataset_id "
        "ON CONFLICT (dataset_id) DO UPDATE SET traces = missing.traces + EXCLUDED.traces",
    ),
    _trigger_function(
        "datasets_missing_traces_truncated",
        "INSERT INTO datasets_missing AS missing (dataset_id, traces) "
        "SELECT d.id, d.trace_count FROM datasets_dataset AS d "
        "ON CONFLICT (dataset_id) DO UPDATE SET traces = EXCLUDED.traces",
    ),
    _trigger_function(
        "datasets_missing_members_added",
        "INSERT INTO datasets_missing AS missing (dataset_id, traces) "
        "SELECT n.dataset_id, count(*) FROM new_rows AS n "
        "WHERE NOT EXISTS (SELECT 1 FROM traces_trace AS t WHERE t.id = n.trace_id) "
        "GROUP BY n.dataset_id "
        "ON CONFLICT (dataset_id) DO UPDATE SET traces = missing.traces + EXCLUDED.traces",
    ),
    _trigger_function(
        "datasets_missing_datasets_deleted",
        "DELETE FROM datasets_missing WHERE dataset_id IN (SELECT id FROM old_rows)",
    ),
    _trigger_function("datasets_missing_datasets_truncated", "DELETE FROM datasets_missing"),
    "CREATE TRIGGER datasets_missing_on_trace_delete AFTER DELETE ON traces_trace "
    "REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION datasets_missing_traces_deleted()",
    "CREATE TRIGGER datasets_missing_on_trace_truncate AFTER TRUNCATE ON traces_trace "
    "FOR EACH STATEMENT EXECUTE FUNCTION datasets_missing_traces_truncated()",
    "CREATE TRIGGER datasets_missing_on_member_insert AFTER INSERT ON datasets_datasetmember "
    "REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION datasets_missing_members_added()",
    "CREATE TRIGGER datasets_missing_on_dataset_delete AFTER DELETE ON datasets_dataset "
    "REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION datasets_missing_datasets_deleted()",
    "CREATE TRIGGER datasets_missing_on_dataset_truncate AFTER TRUNCATE ON datasets_dataset "
    "FOR EACH STATEMENT EXECUTE FUNCTION datasets_missing_datasets_truncated()",
    "INSERT INTO datasets_missing (dataset_id, traces) "
    "SELECT m.dataset_id, count(*) FROM datasets_datasetmember AS m "
    "WHERE NOT EXISTS (SELECT 1 FROM traces_trace AS t WHERE t.id = m.trace_id) "
    "GROUP BY m.dataset_id",
]


def drop_counts(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for statement in _DROP:
        schema_editor.execute(statement, params=None)


def recreate_counts(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    # No trace may be deleted, nor member added, between the first count and the triggers.
    schema_editor.execute(
        "LOCK TABLE traces_trace, datasets_dataset, datasets_datasetmember "
        "IN SHARE ROW EXCLUSIVE MODE",
        params=None,
    )
    for statement in _CREATE:
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [("datasets", "0004_missing_trace_counts"), ("traces", "0001_initial")]

    operations = [
        migrations.RunPython(drop_counts, recreate_counts),
        migrations.AddIndex(
            model_name="datasetmember",
            index=models.Index(fields=["dataset", "trace"], name="dataset_member_trace_idx"),
        ),
    ]
