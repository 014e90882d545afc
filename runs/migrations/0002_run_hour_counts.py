"""How many runs were created in each hour, kept by the database (PostgreSQL only).

`GET /api/tunix/runs?offset=N` must skip N runs of the newest-first order. An
index can only skip entries one at a time (about 0.13 µs each on a 2-core
machine: 12 ms for offset 90,000). `runs_hourcount` holds, per hour of
`created_at` (epoch seconds // 3600), how many runs there are; summing it from
the newest hour finds the hour that holds row N, so a deep unfiltered page
skips whole hours and walks the index only inside one hour
(runs.selectors.pg_list_sql).

The counts are exact in every snapshot: statement-level triggers update them
in the same transaction as the rows (insert, delete, an update that moves
`created_at`, truncate). Runs are never deleted or re-dated by the product;
the triggers keep the counts right if someone does it by hand. Nothing
happens on SQLite, whose lists walk the index as before.
"""

from django.db import migrations

HOUR = "floor(extract(epoch FROM created_at) / 3600)::bigint"


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
    # Status changes (every run's finish) move nothing: HAVING drops them.
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
    # Statement-level: a bulk insert updates each hour once. (A trigger with
    # transition tables takes a single event, hence one trigger per event.)
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

FILL = f"INSERT INTO runs_hourcount (hour, runs) SELECT {HOUR}, count(*) FROM runs_tunixrun GROUP BY 1"

DROP = [
    *(
        f"DROP TRIGGER IF EXISTS runs_hourcount_on_{event} ON runs_tunixrun"
        for event in ("insert", "delete", "update", "truncate")
    ),
    *(
        f"DROP FUNCTION IF EXISTS runs_hourcount_{event}()"
        for event in ("insert", "delete", "update", "truncate")
    ),
    "DROP TABLE IF EXISTS runs_hourcount",
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    # No run may be inserted between the first count and the triggers.
    schema_editor.execute("LOCK TABLE runs_tunixrun IN SHARE ROW EXCLUSIVE MODE", params=None)
    for statement in [*CREATE, FILL]:
        schema_editor.execute(statement, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for statement in DROP:
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [("runs", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]
