"""Bulk seeding for the benchmarks (PostgreSQL only): runs, traces, a dataset.

Seeding is set-up, not what the benchmarks measure, so it writes the tables
directly (one INSERT ... SELECT generate_series for runs, COPY for traces) and
builds the runs table's secondary indexes once after the load.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

from bench.traces_data import payloads

# Statuses by i % 10 (60 % completed, 30 % failed, 10 % timeout), modes by i % 4
# (a quarter local), dataset keys ds-0-v1 .. ds-49-v1, one run every 2 seconds
# over the last month; a third of the runs carry ~2 KB of stdout.
_RUNS_SQL = """
INSERT INTO runs_tunixrun (
    run_id, dataset_key, model_id, mode, status, exit_code,
    started_at, completed_at, duration_seconds, stdout, stderr, created_at,
    output_dir, config, message, host, pid, supervisor_host, supervisor_pid,
    supervisor_fingerprint, queue, task_id, worker_id,
    metrics_steps, final_loss, best_eval_loss, tokens_per_second
)
SELECT
    gen_random_uuid(),
    'ds-' || (i %% 50) || '-v1',
    'tiny-qwen3',
    CASE WHEN i %% 4 = 0 THEN 'local' ELSE 'dry-run' END,
    CASE WHEN i %% 10 < 6 THEN 'completed' WHEN i %% 10 < 9 THEN 'failed' ELSE 'timeout' END,
    CASE WHEN i %% 4 = 0 AND i %% 10 < 9 THEN (i %% 10 >= 6)::int ELSE NULL END,
    ts, ts + interval '1.5 seconds', 1.5,
    CASE WHEN i %% 3 = 0 THEN repeat('step 10 loss 1.2345 tokens/s 1234.5 ', 57) ELSE '' END,
    CASE WHEN i %% 10 >= 6 THEN 'error: something went wrong' ELSE '' END,
    ts,
    'outputs/tunix_run_' || substr(md5(i::text), 1, 8),
    '{"learning_rate": 2e-05, "num_epochs": 3, "batch_size": 8, "max_seq_length": 2048}',
    'Dry-run validation successful', '', NULL, 'bench', NULL, '', '', '', '',
    NULL, NULL, NULL, NULL
FROM (
    SELECT i, now() - interval '30 days' + i * interval '2 seconds' AS ts
    FROM generate_series(1, %s) AS i
) AS s
"""


def seed_runs(count: int) -> float:
    """Insert `count` runs; returns the seconds it took (indexes included)."""
    from django.db import connection, transaction

    started = time.perf_counter()
    # One transaction: a failed load leaves the table and its indexes as they were.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE tablename = 'runs_tunixrun' AND indexname <> 'runs_tunixrun_pkey'"
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        # Foreign keys (launched_by) are checked at commit by default; checked
        # now, they leave no pending trigger events to stop CREATE INDEX.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(_RUNS_SQL, [count])
        cursor.execute("SET maintenance_work_mem = '256MB'")
        for _, definition in indexes:
            cursor.execute(definition)
        cursor.execute("RESET maintenance_work_mem")
    return time.perf_counter() - started


def vacuum_runs() -> None:
    """Mark every page of the runs table all-visible, as a table at rest is."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM (FREEZE, ANALYZE) runs_tunixrun")
        cursor.execute(
            "SELECT relallvisible, relpages FROM pg_class WHERE relname = 'runs_tunixrun'"
        )
        visible, pages = cursor.fetchone()
    print(f"runs_tunixrun: {visible:,} of {pages:,} pages all-visible", flush=True)


def seed_traces(count: int, *, seed: int = 3) -> float:
    """COPY `count` generated traces (bench.traces_data), one second apart; returns seconds."""
    from django.db import connection, transaction
    from django.utils import timezone

    started = time.perf_counter()
    base = timezone.now() - timedelta(days=2, seconds=count)
    with (
        transaction.atomic(),
        connection.cursor() as cursor,
        cursor.copy(
            "COPY traces_trace (id, created_at, trace_version, payload) FROM STDIN"
        ) as copy,
    ):
        for n, payload in enumerate(payloads(count, seed=seed)):
            copy.write_row(
                (uuid.uuid4(), base + timedelta(seconds=n), payload["trace_version"],
                 json.dumps(payload))
            )  # fmt: skip
    return time.perf_counter() - started


def seed_dataset(traces: int, *, name: str = "bench5k") -> str:
    """Build a dataset of the latest `traces` traces with the product's service; its key."""
    from datasets.services import dataset_build

    return str(dataset_build(name=name, version="v1", limit=traces).key)
