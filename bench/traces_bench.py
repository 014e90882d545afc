"""Benchmarks of the traces app (issue 3); figures go to docs/benchmarks.md, "Traces".

    .venv/bin/python -m bench.traces_bench [--traces 100000]

1. `manage.py import_traces` of N generated traces (3-8 steps each) into a
   fresh SQLite database and into the throwaway PostgreSQL: traces/s and the
   command's peak RSS.
2. EXPLAIN (ANALYZE, BUFFERS) of the list query on PostgreSQL with N traces.
3. wrk -t2 -c16 -d15s against gunicorn (2 workers) on PostgreSQL with N traces:
   list, detail, single create, batch of 100.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def inprocess_cpu_ms(path: str, *, body: str | None = None, n: int = 300) -> float:
    """CPU ms per request served in-process by Django's test client (no HTTP, no wrk).

    Independent of how loaded the machine is; it covers middleware, ninja, the
    handler and the database driver (the database's own CPU is not included).
    """
    from django.test import Client

    client = Client(HTTP_HOST="localhost")

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


def import_row(backend: str, count: int, seconds: float, cpu: float, rss_mb: float) -> str:
    return (
        f"| import_traces, {backend} | {count:,} | {seconds:.1f} | {count / seconds:,.0f} "
        f"| {cpu:.1f} | {count / cpu:,.0f} | {rss_mb:.0f} |"
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

        print(
            "\n| run | traces | wall s | traces/s | command CPU s | traces per CPU s "
            "| peak RSS MB |\n|---|---|---|---|---|---|---|"
        )
        print("\n".join(import_rows), flush=True)

        from traces.selectors import SUMMARY_SQL_POSTGRESQL as SUMMARY_SQL

        print(f"\nList query: `{SUMMARY_SQL}`\n\nFirst page (limit 20 + 1):\n```")
        print(harness.explain(SUMMARY_SQL, [21, 0]))
        print("```\n\nAt offset 5000:\n```")
        print(harness.explain(SUMMARY_SQL, [21, 5000]))
        print("```\n", flush=True)

        trace_id = Trace.objects.order_by("created_at").values_list("id", flat=True)[count // 2]
        one = json.dumps(next(payloads(1, seed=99)))
        batch = json.dumps(list(payloads(100, seed=98)))

        print("\n| endpoint | in-process CPU ms/request |\n|---|---|")
        for name, path, data, n in [
            ("GET /api/traces?limit=20", "/api/traces?limit=20", None, 1000),
            ("GET /api/traces/{id}", f"/api/traces/{trace_id}", None, 1000),
            ("POST /api/traces", "/api/traces", one, 1000),
            ("POST /api/traces/batch (100 traces)", "/api/traces/batch", batch, 100),
        ]:
            print(f"| {name} | {inprocess_cpu_ms(path, body=data, n=n):.2f} |", flush=True)
        print()

        with harness.gunicorn() as server:
            # Let both workers finish booting (on a loaded machine that takes
            # seconds) so the first round does not measure their start-up.
            for _ in range(40):
                with urllib.request.urlopen(server.base_url + "/api/health", timeout=30):
                    pass
            harness.print_header()
            harness.report(
                "GET /api/traces?limit=20",
                server.wrk("/api/traces?limit=20", warmup=5),
                "≥ 1,400",
            )
            harness.report("GET /api/traces/{id}", server.wrk(f"/api/traces/{trace_id}"), "≥ 2,000")
            harness.report(
                "POST /api/traces",
                server.wrk("/api/traces", method="POST", body=one),
                "≥ 700",
            )
            harness.report(
                "POST /api/traces/batch (100 traces)",
                server.wrk("/api/traces/batch", method="POST", body=batch),
                "≥ 120",
            )
        print(f"\ntraces stored at the end: {Trace.objects.count():,}", flush=True)
        print(f"load average at the end: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
