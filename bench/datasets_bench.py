"""Datasets benchmark: export throughput and memory, filtered build time (PostgreSQL and SQLite).

    .venv/bin/python -m bench.datasets_bench [--traces 100000] [--skip-sqlite]

PostgreSQL part (bench.harness: throwaway cluster, gunicorn with two workers, wrk -t2 -c16):
  1. seeds --traces traces (every tenth one with meta bucket=3, so one filter selects 10%),
  2. times `dataset_build` with one meta filter selecting 10,000 traces, and EXPLAINs its query,
  3. builds a 5,000-trace dataset and measures GET .../export.jsonl?format=tunix_sft with wrk,
  4. gives a dataset all seeded traces (members written directly: builds stop at 10,000) and
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


def postgres_part(count: int) -> None:
    from bench import harness

    with harness.postgres():
        from django.db import connection
        from django.db.models import Exists, OuterRef

        from datasets.exports import render_tunix_sft
        from datasets.models import Dataset, DatasetMember
        from datasets.selectors import _dataset_rows_between_qs
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
        with connection.cursor() as cursor:
            cursor.execute("SET work_mem = '64MB'")  # what dataset_build sets for its query
        explained = harness.explain_queryset(query)
        with connection.cursor() as cursor:
            cursor.execute("RESET work_mem")
        print("\nEXPLAIN (filtered build selection, work_mem 64MB):\n" + explained)

        five_k, seconds = timed_build("export", "5k", limit=5_000)
        print(f"\nbuilt {five_k.key} (latest 5,000) in {seconds:.2f} s")
        stored = (
            DatasetMember.objects.filter(
                Exists(Trace.objects.filter(pk=OuterRef("trace_id"))),
                dataset_id=five_k.pk,
                position__gte=0,
                position__lt=1000,
            )
            .order_by("position")
            .values_list("sft_line", flat=True)
        )
        print("\nEXPLAIN (one chunk of the tunix_sft export):\n" + harness.explain_queryset(stored))
        print(
            "\nEXPLAIN (one chunk of the trace export):\n"
            + harness.explain_queryset(_dataset_rows_between_qs(five_k, 0, 1000))
        )

        everything = Dataset.objects.create(
            key="all-v1", name="all", version="v1", trace_count=count, stats={}
        )
        rows = Trace.objects.order_by("-created_at", "-id").values_list(
            "id", "created_at", "trace_version", "payload"
        )
        DatasetMember.objects.bulk_create(
            (
                DatasetMember(
                    dataset=everything,
                    position=i,
                    trace_id=t,
                    sft_line=render_tunix_sft(str(t), c.isoformat(), v, p, "all-v1"),
                )
                for i, (t, c, v, p) in enumerate(rows.iterator(chunk_size=5000))
            ),
            batch_size=5000,
        )
        harness.analyze()
        connection.close()

        with harness.gunicorn() as server:
            url = "/api/datasets/export-5k/export.jsonl?format=tunix_sft"
            size = len(urllib.request.urlopen(server.base_url + url).read())
            print(f"\n5,000-trace tunix_sft export: {size:,} bytes")
            harness.print_header()
            harness.report(f"GET {url}", server.wrk(url), goal=">= 15 req/s, <= 110 ms CPU")

            # Memory: worker RSS at rest, then the peak while streaming the whole store.
            small = "/api/datasets/export-5k/export.jsonl?format=tunix_sft"
            for _ in range(4):
                urllib.request.urlopen(server.base_url + small).read()
            time.sleep(0.5)
            baseline = max(harness._rss_mb(p) for p in server.worker_pids())
            big = "/api/datasets/all-v1/export.jsonl?format=tunix_sft"
            result = server.wrk(big, connections=1, threads=1, duration=20, warmup=0)
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
