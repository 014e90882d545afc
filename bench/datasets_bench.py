"""Datasets benchmark: export throughput and memory, filtered build time (PostgreSQL and SQLite).

    .venv/bin/python -m bench.datasets_bench [--traces 100000] [--skip-sqlite]

PostgreSQL part (bench.harness: throwaway cluster, gunicorn with two workers, wrk):
  1. seeds --traces traces (every tenth one with meta bucket=3, so one filter selects 10%),
  2. times `dataset_build` with one meta filter selecting 10,000 traces, and EXPLAINs its query,
  3. times inserting 10,000 members with COPY and with bulk_create (the build's one vendor branch),
  4. builds a 5,000-trace dataset; EXPLAINs one chunk of its export and the dry-run's count, as
     sent and as a prepared statement's generic plan (what a serving connection runs),
  5. measures with wrk the `trace` export (2 connections), the `tunix_sft` export and a dry-run
     of the 5,000-trace dataset (16 connections),
  6. gives a dataset all seeded traces (members written directly: builds stop at 10,000) and
     measures the gunicorn workers' RSS growth while exporting it with one connection.
SQLite part (a child process on a fresh embedded database): the same seed and filtered build.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.traces_data import payloads

ROOT = Path(__file__).resolve().parent.parent
FILTER = {"bucket": 3}


def bench_payloads(count: int) -> Iterator[dict[str, Any]]:
    for n, payload in enumerate(payloads(count, seed=11)):
        payload["meta"] = {"source": "bench", "bucket": n % 10, "n": n} if n % 7 else None
        if n % 7 == 0 and n % 10 == 3:
            payload["meta"] = {"bucket": 3}
        yield payload


def seed_traces(count: int) -> float:
    """Insert `count` traces, one second apart, one bucket in ten equal to 3; returns seconds.

    COPY on PostgreSQL, bulk_create on SQLite (seeding is setup, not what is measured).
    """
    import json
    import uuid
    from datetime import timedelta

    from django.db import connection, transaction
    from django.utils import timezone
    from tqdm import tqdm

    from traces.models import Trace

    started = time.perf_counter()
    base = timezone.now() - timedelta(days=30)
    rows = (
        (uuid.uuid4(), base + timedelta(seconds=n), payload["trace_version"], payload)
        for n, payload in enumerate(tqdm(bench_payloads(count), total=count, desc="seeding"))
    )
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with (
                connection.cursor() as cursor,
                cursor.copy(
                    "COPY traces_trace (id, created_at, trace_version, payload) FROM STDIN"
                ) as copy,
            ):
                for trace_id, created_at, version, payload in rows:
                    copy.write_row((trace_id, created_at, version, json.dumps(payload)))
        else:
            Trace.objects.bulk_create(
                (Trace(id=i, created_at=c, trace_version=v, payload=p) for i, c, v, p in rows),
                batch_size=2000,
            )
    return time.perf_counter() - started


def timed_build(name: str, version: str, **kwargs: Any) -> tuple[Any, float]:
    from datasets.services import dataset_build

    started = time.perf_counter()
    dataset = dataset_build(name=name, version=version, **kwargs)
    return dataset, time.perf_counter() - started


def filtered_build(count: int, runs: int = 3) -> list[float]:
    times = []
    for i in range(runs):
        dataset, seconds = timed_build("filtered", f"v{i}", filters=FILTER, limit=10_000)
        assert dataset.trace_count == min(10_000, count // 10), dataset.trace_count
        times.append(seconds)
    return times


def explain_generic(queryset: Any) -> str:
    """EXPLAIN ANALYZE of `queryset` as a prepared statement's generic plan.

    Serving connections prepare repeated statements (DATABASE_PREPARE_THRESHOLD),
    and PostgreSQL may then run a plan made without the parameters' values.
    """
    import re

    from django.db import connection

    sql, params = queryset.query.sql_with_params()
    numbers = iter(range(1, len(params) + 1))
    prepared = re.sub("%s", lambda _: f"${next(numbers)}", sql)
    literals = ", ".join(
        str(int(p)) if not isinstance(p, str) else "'" + p.replace("'", "''") + "'" for p in params
    )
    with connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        cursor.execute("DEALLOCATE ALL")
        cursor.execute("PREPARE bench_generic AS " + prepared)
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE bench_generic({literals})")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("DEALLOCATE bench_generic")
        cursor.execute("RESET plan_cache_mode")
    return plan


def members_insert_times(count: int) -> dict[str, float]:
    """Best seconds of two to insert `count` members by COPY and by bulk_create (rolled back)."""
    from django.db import transaction

    from datasets import services
    from datasets.models import Dataset

    selected = services._select({}, count, "latest", None)
    times: dict[str, float] = {}
    for name, insert in [
        ("COPY", services.members_copy),
        ("bulk_create", services.members_bulk_create),
    ] * 2:
        with transaction.atomic():
            dataset = Dataset.objects.create(key=f"insert-{name}", name="i", version=name)
            started = time.perf_counter()
            insert(services._members(dataset, selected))
            seconds = time.perf_counter() - started
            times[name] = min(times.get(name, seconds), seconds)
            transaction.set_rollback(True)
    return times


def postgres_part(count: int) -> None:
    from bench import harness

    with harness.postgres():
        from django.db import connection

        from datasets import selectors, services
        from datasets.models import Dataset
        from datasets.services import traces_matching
        from traces.models import Trace

        print(f"seeded {count} traces in {seed_traces(count):.1f} s", flush=True)
        harness.analyze()
        build_times = filtered_build(count)
        print(
            "PostgreSQL: build with one meta filter selecting 10,000 of "
            f"{count} traces: " + ", ".join(f"{t:.2f} s" for t in build_times),
            flush=True,
        )
        query = (
            traces_matching(FILTER)
            .order_by("-created_at", "-id")
            .values_list("id", "created_at", "trace_version", "payload")
        )[:10_000]
        print("\nEXPLAIN (filtered build selection):\n" + harness.explain_queryset(query))
        inserts = members_insert_times(10_000)
        print(
            "\ninserting 10,000 members: "
            + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in inserts.items()),
            flush=True,
        )

        five_k, seconds = timed_build("export", "5k", limit=5_000)
        print(f"\nbuilt {five_k.key} (latest 5,000) in {seconds:.2f} s")

        everything = Dataset.objects.create(
            key="all-v1", name="all", version="v1", trace_count=count, stats={}
        )
        rows = selectors.trace_export_rows(Trace.objects.order_by("-created_at", "-id"))
        services.members_copy(services._members(everything, list(rows)))
        harness.analyze()

        chunk = selectors.stored_lines_between(five_k, "trace_line", 1000, 2000)
        counted = Trace.objects.filter(dataset_memberships__dataset_id=five_k.pk)
        for title, queryset in [
            ("one chunk of the trace export", chunk),
            ("the dry-run's count of existing traces", counted.values("pk")),
        ]:
            print(f"\nEXPLAIN ({title}):\n" + harness.explain_queryset(queryset))
            print(f"\nEXPLAIN ({title}, generic plan):\n" + explain_generic(queryset))
        from accounts.roles import LAUNCHER

        # Every request carries a launcher's token, as a script would send it.
        auth = harness.bearer_header("bench-launcher", LAUNCHER)

        def fetch(url: str) -> bytes:
            request = urllib.request.Request(url, headers=auth)
            with urllib.request.urlopen(request) as response:
                return bytes(response.read())

        connection.close()

        with harness.gunicorn() as server:
            trace_url = "/api/datasets/export-5k/export.jsonl"
            sft_url = trace_url + "?format=tunix_sft"
            size = len(fetch(server.base_url + trace_url))
            print(f"\n5,000-trace trace export: {size:,} bytes")
            dry_run = '{"dataset_key": "export-5k", "model_id": "tiny-qwen3"}'
            endpoints = [
                harness.Endpoint(
                    f"GET {trace_url} (2 connections)", trace_url, ">= 10 req/s",
                    min_rate=10, connections=2, threads=2, headers=dict(auth),
                ),
                harness.Endpoint(f"GET {sft_url}", sft_url, "", headers=dict(auth)),
                harness.Endpoint(
                    "POST /api/tunix/run (dry-run, 5,000 traces)", "/api/tunix/run",
                    ">= 100 req/s", min_rate=100, method="POST", body=dry_run,
                    headers=dict(auth),
                ),
            ]  # fmt: skip
            # Each round beside a calibration round of the same minute (bench.harness).
            calibration = harness.interleaved(server, endpoints, repetitions=2)
            print("\n" + harness.goal_table(endpoints, calibration))

            # Memory: worker RSS at rest, then the peak while streaming the whole store.
            for _ in range(4):
                fetch(server.base_url + trace_url)
            time.sleep(0.5)
            baseline = max(harness._rss_mb(p) for p in server.worker_pids())
            big = "/api/datasets/all-v1/export.jsonl"
            result = server.wrk(big, connections=1, threads=1, duration=20, warmup=0, headers=auth)
            harness.print_header()
            harness.report(f"GET {big} ({count:,} traces, 1 connection)", result)
            print(
                f"\nworker RSS at rest {baseline:.0f} MB, peak during the {count:,}-trace "
                f"export {result.peak_worker_rss_mb:.0f} MB: growth "
                f"{result.peak_worker_rss_mb - baseline:.0f} MB (goal < 50 MB)"
            )


def sqlite_part(count: int) -> None:
    """Runs in a child process: a fresh embedded database in a temporary data dir."""
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    print(f"seeded {count} traces in {seed_traces(count):.1f} s", flush=True)
    build_times = filtered_build(count)
    print(
        "SQLite: build with one meta filter selecting 10,000 of "
        f"{count} traces: " + ", ".join(f"{t:.2f} s" for t in build_times),
        flush=True,
    )
    from django.db import connection

    from datasets.services import traces_matching

    query = traces_matching(FILTER).order_by("-created_at", "-id").values_list("id", "payload")
    sql, params = query[:10_000].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        print("\nEXPLAIN QUERY PLAN (SQLite, filtered build selection):")
        for row in cursor.fetchall():
            print("  " + str(row[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--sqlite-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sqlite_child:
        sqlite_part(args.traces)
        return
    if not args.skip_postgres:
        postgres_part(args.traces)
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory(prefix="datasets-bench-sqlite-") as tmp:
            env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
            env.update(
                TUNIX_REGISTRY_DATA_DIR=tmp,
                DJANGO_SETTINGS_MODULE="tunix_registry.settings",
                DJANGO_SECRET_KEY="bench-only-secret-key",
                TUNIX_REGISTRY_LOG_LEVEL="WARNING",
            )
            cmd = [sys.executable, "-m", "bench.datasets_bench", "--sqlite-child"]
            cmd += ["--traces", str(args.traces)]
            subprocess.run(cmd, cwd=ROOT, env=env, check=True)


if __name__ == "__main__":
    main()
