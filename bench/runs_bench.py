"""Run registry benchmark (issue 5): 1,000,000 runs on PostgreSQL, 2 gunicorn workers, wrk.

    .venv/bin/python -m bench.runs_bench            # BENCH_RUNS=1000000 by default

Seeds the runs with one INSERT ... SELECT generate_series (a third carry ~2 KB of
stdout), plus a 5,000-trace dataset for the dry-run round; VACUUM ANALYZE; prints
the EXPLAIN plan of every list query, then one wrk round per endpoint as a
markdown table (the figures in docs/benchmarks.md, section "Runs").
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from typing import Any

from bench import harness

RUNS = int(os.environ.get("BENCH_RUNS", "1000000"))
DATASET_TRACES = 5000
DEEP = 90_000

# Statuses by i % 10 and modes by i % 4; dataset keys ds-0 .. ds-49.
SEED_SQL = """
INSERT INTO runs_tunixrun (
    run_id, dataset_key, model_id, mode, status, exit_code,
    started_at, completed_at, duration_seconds, stdout, stderr, created_at,
    output_dir, config, message, host, pid, supervisor_host, supervisor_pid,
    supervisor_fingerprint, metrics_steps, final_loss, best_eval_loss, tokens_per_second
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
    'Dry-run validation successful', '', NULL, 'bench', NULL, '',
    NULL, NULL, NULL, NULL
FROM (
    SELECT i, now() - interval '30 days' + i * interval '2 seconds' AS ts
    FROM generate_series(1, %s) AS i
) AS s
"""


def seed_runs(count: int) -> float:
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        # Build the secondary indexes once after the load instead of row by row.
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE tablename = 'runs_tunixrun' AND indexname <> 'runs_tunixrun_pkey'"
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        cursor.execute(SEED_SQL, [count])
        cursor.execute("SET maintenance_work_mem = '256MB'")
        for _, definition in indexes:
            cursor.execute(definition)
    return time.perf_counter() - started


def vacuum_runs() -> None:
    """Mark every page of the runs table all-visible, so id scans are index-only for real."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM (FREEZE, ANALYZE) runs_tunixrun")
        cursor.execute(
            "SELECT relallvisible, relpages FROM pg_class WHERE relname = 'runs_tunixrun'"
        )
        visible, pages = cursor.fetchone()
    print(f"runs_tunixrun: {visible:,} of {pages:,} pages all-visible", flush=True)


def seed_dataset() -> str:
    from django.utils import timezone

    from bench.traces_data import payloads
    from datasets.services import dataset_build
    from traces.models import Trace

    base = timezone.now() - timedelta(days=1)
    Trace.objects.bulk_create(
        [
            Trace(created_at=base + timedelta(seconds=n), trace_version="1.0", payload=p)
            for n, p in enumerate(payloads(DATASET_TRACES, seed=3))
        ],
        batch_size=1000,
    )
    dataset = dataset_build(name="bench5k", version="v1", limit=DATASET_TRACES)
    return str(dataset.key)


def plans(deep_cursor: str) -> None:
    """EXPLAIN the statements GET /api/tunix/runs really sends (runs.selectors.pg_list_sql)."""
    from runs.selectors import pg_list_sql

    def show(title: str, **args: Any) -> None:
        sql, params = pg_list_sql(
            args.get("status"),
            args.get("dataset_key"),
            args.get("mode"),
            20,
            args.get("offset", 0),
            args.get("cursor"),
        )
        print(f"\n#### {title}\n\n```\n{harness.explain(sql, params)}\n```", flush=True)

    show("default list (limit 20)")
    show("filtered list (dataset_key + status)", dataset_key="ds-7-v1", status="failed")
    show("all three filters", dataset_key="ds-8-v1", status="completed", mode="local")
    show("cursor page 500,000 runs deep", cursor=deep_cursor)
    show("cursor page deep, filtered by status", cursor=deep_cursor, status="failed")
    show(f"offset {DEEP:,} (its hour from runs_hourcount, the ids inside it, then the rows)",
         offset=DEEP)  # fmt: skip
    show(f"offset {DEEP:,} filtered by status (ids from the index, then the rows)",
         offset=DEEP, status="completed")  # fmt: skip


def main() -> None:
    with harness.postgres():
        print(f"seeding {RUNS:,} runs ...", flush=True)
        seconds = seed_runs(RUNS)
        print(f"seeded in {seconds:.1f} s", flush=True)
        key = seed_dataset()
        harness.analyze()
        vacuum_runs()

        from runs.models import TunixRun
        from runs.selectors import cursor_encode, run_list

        some = TunixRun.objects.only("run_id").order_by("-created_at")[RUNS // 2]
        first_page = run_list(limit=20)
        deep_run = TunixRun.objects.order_by("-created_at", "-run_id")[RUNS // 2]
        deep_cursor = cursor_encode(deep_run)
        assert first_page.pagination["next_cursor"]
        plans(deep_cursor)

        dry_run = json.dumps({"dataset_key": key, "model_id": "google/gemma-2b-it"})
        rounds = [
            ("GET /api/tunix/runs", "/api/tunix/runs", None, ">= 1,400/s"),
            (
                "GET /api/tunix/runs?dataset_key=ds-7-v1&status=failed",
                "/api/tunix/runs?dataset_key=ds-7-v1&status=failed",
                None,
                ">= 1,200/s",
            ),
            ("GET /api/tunix/runs/{id}", f"/api/tunix/runs/{some.run_id}", None, ">= 2,000/s"),
            (
                f"GET /api/tunix/runs?cursor=<{RUNS // 2:,} deep>",
                f"/api/tunix/runs?cursor={deep_cursor}",
                None,
                ">= 1,200/s",
            ),
            (
                f"GET /api/tunix/runs?offset={DEEP}",
                f"/api/tunix/runs?offset={DEEP}",
                None,
                ">= 250/s",
            ),
            (
                f"POST /api/tunix/run (dry-run, {DATASET_TRACES:,} traces)",
                "/api/tunix/run",
                dry_run,
                ">= 100/s",
            ),
        ]
        print(f"\n{RUNS:,} runs stored; wrk -t{harness.THREADS} -c{harness.CONNECTIONS} "
              f"-d{harness.DURATION}s; 2 gunicorn workers\n", flush=True)  # fmt: skip
        with harness.gunicorn() as server:
            harness.print_header()
            for name, path, body, goal in rounds:
                if body is None:
                    result = server.wrk(path)
                else:
                    result = server.wrk(path, method="POST", body=body)
                harness.report(name, result, goal=goal)
        created = TunixRun.objects.count() - RUNS
        print(f"\n(dry-run round created {created:,} runs, all persisted)", flush=True)


if __name__ == "__main__":
    main()
