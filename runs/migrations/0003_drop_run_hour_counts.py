"""Drop `runs_hourcount` and its triggers (PostgreSQL only, as 0002 created them).

The run list reads with the ORM alone: a plain `offset` walks the list index
(offsets are capped, docs/decisions.md#pagination) and deep pages are served by
the keyset `cursor`, so the per-hour counts kept by triggers are no longer read.
Reversing this migration recreates the table, its trigger functions and
triggers exactly as 0002 did, and fills the counts from the existing runs.

The SQL is written out here, not imported, so that the migration keeps meaning
what it means today whatever the application code becomes.
"""

from django.db import migrations

# The SQL is built from constants only (no user input).
# ruff: noqa: S608

HOUR = "floor(extract(epoch FROM created_at) / 3600)::bigint"
EVENTS = ("insert", "delete", "update", "truncate")


def _counting(name: str, select: str) -> str:
    """A trigger function adding the counts `select` yields (hour, change) to runs_hourcount."""
    return f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO runs_hourcount AS counted (hour, runs)
    {select}
    ON CONFLICT (hour) DO UPDATE SET runs = counted.runs + EXCLUDED.runs;
    RETURN NULL;
END
$$"""


# One statement each: psycopg's extended protocol takes one at a time.
CREATE = [
    "CREATE TABLE runs_hourcount (hour bigint PRIMARY KEY, runs bigint NOT NULL)",
    _counting("runs_hourcount_insert", f"SELECT {HOUR}, count(*) FROM new_rows GROUP BY 1"),
    _counting("runs_hourcount_delete", f"SELECT {HOUR}, -count(*) FROM old_rows GROUP BY 1"),
    _counting(
        "runs_hourcount_update",
        f"SELECT hour, sum(change) FROM (SELECT {HOUR} AS hour, 1 AS change FROM new_rows "
        f"UNION ALL SELECT {HOUR}, -1 FROM old_rows) AS changes "
        "GROUP BY hour HAVING sum(change) <> 0",
    ),
    """
CREATE FUNCTION runs_hourcount_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM runs_hourcount;
    RETURN NULL;
END
$$""",
    "CREATE TRIGGER runs_hourcount_on_insert AFTER INSERT ON runs_tunixrun "
    "REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION runs_hourcount_insert()",
    "CREATE TRIGGER runs_hourcount_on_delete AFTER DELETE ON runs_tunixrun "
    "REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION runs_hourcount_delete()",
    "CREATE TRIGGER runs_hourcount_on_update AFTER UPDATE ON runs_tunixrun "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION runs_hourcount_update()",
    "CREATE TRIGGER runs_hourcount_on_truncate AFTER TRUNCATE ON runs_tunixrun "
    "FOR EACH STATEMENT EXECUTE FUNCTION runs_hourcount_truncate()",
]

FILL = (
    f"INSERT INTO runs_hourcount (hour, runs) SELECT {HOUR}, count(*) FROM runs_tunixrun GROUP BY 1"
)

DROP = [
    *(f"DROP TRIGGER IF EXISTS runs_hourcount_on_{event} ON runs_tunixrun" for event in EVENTS),
    *(f"DROP FUNCTION IF EXISTS runs_hourcount_{event}()" for event in EVENTS),
    "DROP TABLE IF EXISTS runs_hourcount",
]


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for statement in DROP:
        schema_editor.execute(statement, params=None)


def recreate(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    # No run may be inserted between the count and the triggers.
    schema_editor.execute("LOCK TABLE runs_tunixrun IN SHARE ROW EXCLUSIVE MODE", params=None)
    for statement in [*CREATE, FILL]:
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [("runs", "0002_run_hour_counts")]

    operations = [migrations.RunPython(drop, recreate)]
