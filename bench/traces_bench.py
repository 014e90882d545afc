"""Benchmarks of the traces app's writes; figures go to docs/benchmarks.md, "Traces".

    .venv/bin/python -m bench.traces_bench [--traces 100000]     # about 4 minutes

1. `manage.py import_traces` of N generated traces (3-8 steps each) into a
   fresh SQLite database and into the throwaway PostgreSQL: traces/s and the
   command's peak RSS.
2. The statements of the list and detail reads and their EXPLAIN (ANALYZE,
   BUFFERS) on PostgreSQL with N traces (their throughput is measured by
   bench/reads_bench.py).
3. CPU per request in-process (Django's test client), the calibration view
   (bench/urls.py) beside the endpoints.
4. wrk -t2 -c16 -d15s against gunicorn (2 workers, production configuration)
   on PostgreSQL with N traces: single create and batch of 100, interleaved
   with the calibration view, BENCH_REPETITIONS times (3).

Every request carries a launcher's API token, as a script would send it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import harness
from bench.traces_data import payloads, write_jsonl

ROOT = Path(__file__).resolve().parent.parent


def run_import(path: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """Run import_traces in a child process: wall seconds, its CPU seconds, its peak RSS (MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "import_traces", str(path), "--no-progress"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"import_traces failed:\n{out}\n{err}")
    print(f"  {out.strip()}", file=sys.stderr)
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


# A launcher's bearer token, on every request the bench sends (set by main()).
AUTH: dict[str, str] = {}


def inprocess_cpu_ms(path: str, *, body: str | None = None, n: int = 300) -> float:
    """CPU ms per request served in-process by Django's test client (no HTTP, no wrk).

    Independent of how loaded the machine is; it covers middleware, ninja, the
    handler and the database driver (the database's own CPU is not included).
    """
    from django.test import Client

    client = Client(HTTP_HOST="localhost", headers=AUTH)

    def once() -> int:
        if body is None:
            return client.get(path).status_code
        return client.post(path, body, content_type="application/json").status_code

    for _ in range(20):
        once()
    start = time.process_time()
    for _ in range(n):
        status = once()
    assert status in (200, 201), status
    return (time.process_time() - start) / n * 1000


REPETITIONS = int(os.environ.get("BENCH_REPETITIONS", "3"))
# Floors: 90 % of what this code is known to reach on this machine (imports of
# 12,157 and 11,277 traces/s, 851 single creates/s, 140 batches/s), never below
# the product goal of 10,000 traces/s.
IMPORT_GOALS = {"SQLite": 10_941, "PostgreSQL": 10_149}


def import_row(backend: str, count: int, seconds: float, cpu: float, rss_mb: float) -> str:
    rate = count / seconds
    goal = IMPORT_GOALS[backend]
    met = "yes" if rate >= goal and rss_mb < 250 else "**no**"
    return (
        f"| import_traces, {backend} | {count:,} | {seconds:.1f} | {rate:,.0f} "
        f"| {cpu:.1f} | {count / cpu:,.0f} | {rss_mb:.0f} | ≥ {goal:,}/s, < 250 MB | {met} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--traces", type=int, default=100_000)
    args = parser.parse_args()
    count: int = args.traces

    print(f"load average at start: {os.getloadavg()} on {os.cpu_count()} CPUs", flush=True)
    work = Path(tempfile.mkdtemp(prefix="traces-bench-"))
    try:
        run_all(work, count)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_all(work: Path, count: int) -> None:
    jsonl = work / "traces.jsonl"
    size = write_jsonl(jsonl, count)
    print(f"generated {count:,} traces, {size / 1e6:.1f} MB", file=sys.stderr)

    # --- import_traces on SQLite (its own fresh data directory) ---------------
    sqlite_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    sqlite_env.update(
        TUNIX_REGISTRY_DATA_DIR=str(work / "sqlite"),
        DJANGO_SETTINGS_MODULE="tunix_registry.settings",
        DJANGO_SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "bench-only-secret-key"),
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=sqlite_env, check=True
    )
    import_rows = [import_row("SQLite", count, *run_import(jsonl, sqlite_env))]

    with harness.postgres():
        from traces.models import Trace

        import_rows.append(import_row("PostgreSQL", count, *run_import(jsonl, dict(os.environ))))
        assert Trace.objects.count() == count
        harness.analyze()

        import_table = (
            "\n| run | traces | wall s | traces/s | command CPU s | traces per CPU s "
            "| peak RSS MB | goal | met |\n|---|---|---|---|---|---|---|---|---|\n"
            + "\n".join(import_rows)
        )
        print(import_table, flush=True)

        from accounts.roles import LAUNCHER

        AUTH.update(harness.bearer_header("bench-writer", LAUNCHER))
        trace_id = Trace.objects.order_by("created_at").values_list("id", flat=True)[count // 2]
        harness.print_plans("first page", "/api/traces?limit=20", AUTH)
        harness.print_plans("offset 5000", "/api/traces?limit=20&offset=5000", AUTH)
        harness.print_plans("one trace", f"/api/traces/{trace_id}", AUTH)

        one = json.dumps(next(payloads(1, seed=99)))
        batch = json.dumps(list(payloads(100, seed=98)))

        print("\n| endpoint | in-process CPU ms/request |\n|---|---|")
        for name, path, data, n in [
            ("GET /bench/calibrate (the calibration view)", harness.CALIBRATION_PATH, None, 1000),
            ("GET /api/traces?limit=20", "/api/traces?limit=20", None, 1000),
            ("GET /api/traces/{id}", f"/api/traces/{trace_id}", None, 1000),
            ("POST /api/traces", "/api/traces", one, 1000),
            ("POST /api/traces/batch (100 traces)", "/api/traces/batch", batch, 100),
        ]:
            print(f"| {name} | {inprocess_cpu_ms(path, body=data, n=n):.2f} |", flush=True)
        print()

        from django.db import connections

        connections.close_all()
        endpoints = [
            harness.Endpoint("POST /api/traces", "/api/traces", "≥ 766/s",
                             min_rate=766, method="POST", body=one, headers=dict(AUTH)),
            harness.Endpoint("POST /api/traces/batch (100 traces)", "/api/traces/batch",
                             "≥ 126/s", min_rate=126, method="POST",
                             body=batch, headers=dict(AUTH)),
        ]  # fmt: skip
        with harness.gunicorn() as server:
            # Let both workers finish booting (on a loaded machine that takes
            # seconds) so the first round does not measure their start-up.
            for _ in range(40):
                with urllib.request.urlopen(server.base_url + "/api/health", timeout=30):
                    pass
            print(f"{count:,} traces; {harness.machine()}\n", flush=True)
            calibration = harness.interleaved(server, endpoints, repetitions=REPETITIONS)
        print(f"\n### Goals: `{command(count)}`\n")
        print(harness.goal_table(endpoints, calibration))
        print(f"\nImports (before the HTTP rounds; calibration of this run: "
              f"{statistics.mean(calibration):,.0f} req/s):\n{import_table}")  # fmt: skip
        print(f"\ntraces stored at the end: {Trace.objects.count():,}", flush=True)
        print(f"load average at the end: {os.getloadavg()}", flush=True)


def command(count: int) -> str:
    settings = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_"))
    return f"{settings} .venv/bin/python -m bench.traces_bench --traces {count}".strip()


if __name__ == "__main__":
    main()
