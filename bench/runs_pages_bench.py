"""Run pages benchmark: the history with 1,000,000 runs on PostgreSQL.

    .venv/bin/python -m bench.runs_pages_bench        # BENCH_RUNS=1000000 by default

Seeds the runs with bench.seed (as bench/reads_bench.py does), plus local runs with 2,000 and
100,000 logged steps (an eval loss every 100th) for the run page, stored with their levels as
the supervisor stores them, and the same 100,000 steps on a run whose step count is unknown (a
run stored before the count existed: its page reads every step); VACUUM ANALYZE. Then:

1. server time of the history fragment (`GET /runs/history/` as htmx asks for
   it), rendered in this process through Django's test client: median and p95
   over 200 requests per view, with the SQL it ran and EXPLAIN ANALYZE of the
   page query;
2. wrk rounds against gunicorn (2 workers) for the whole pages, between two
   rounds of the calibration view (bench/urls.py): the panel, the panel with
   the history opened (`/?history=1`), a filtered history, a deep page, and the
   run pages of the 2,000- and 100,000-step runs. Each request carries a
   signed-in viewer's session cookie; each page is checked to answer 200 (not a
   redirect to the login page) before the rounds.
3. server time of the run pages in this process, as in 1.
"""

from __future__ import annotations

import os

from bench import harness
from bench.seed import seed_runs

RUNS = int(os.environ.get("BENCH_RUNS", "1000000"))
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "200"))
# The run pages' series: (logged steps, whether the run knows its count).
CHART_RUNS = ((2_000, True), (100_000, True), (100_000, False))


def seed_chart_run(steps: int, counted: bool) -> str:
    from runs.metrics import metric_level
    from runs.models import RunMetric
    from runs.tests.factories import TunixRunFactory

    run = TunixRunFactory.create(
        mode="local", exit_code=0, metrics_steps=steps, metrics_count=steps if counted else None
    )
    RunMetric.objects.bulk_create(
        (
            RunMetric(
                run=run,
                step=step,
                loss=3.0 / (1 + step / 100),
                eval_loss=(3.2 / (1 + step / 100)) if step % 100 == 0 else None,
                level=metric_level(step - 1),
            )
            for step in range(1, steps + 1)
        ),
        batch_size=5000,
    )
    return str(run.run_id)


def chart_name(steps: int, counted: bool) -> str:
    return f"{steps:,} steps" + ("" if counted else ", count unknown (every step read)")


def main() -> None:
    with harness.postgres():
        print(f"seeding {RUNS:,} runs ...", flush=True)
        print(f"seeded in {seed_runs(RUNS):.1f} s", flush=True)
        chart_runs = {chart_name(*spec): seed_chart_run(*spec) for spec in CHART_RUNS}
        harness.analyze()
        # The pages link static files through the manifest storage, as `make run` serves them.
        from django.core.management import call_command

        call_command("collectstatic", interactive=False, verbosity=0)

        two = {"status": "failed", "dataset_key": "ds-7-v1"}
        three = {"status": "failed", "mode": "local", "dataset_key": "ds-8-v1"}
        views = [
            ("history, first page", {}),
            ("history, status=failed & dataset_key=ds-7-v1", two),
            ("history, all three filters", three),
            ("history, offset=180", {"offset": "180"}),
        ]
        print(f"\n{RUNS:,} runs stored; server time of GET /runs/history/ (htmx fragment), "
              f"{SAMPLES} requests each, in-process\n", flush=True)  # fmt: skip
        print(
            "| view | median ms | p95 ms | median CPU ms | queries |\n|---|---|---|---|---|",
            flush=True,
        )
        client = harness.viewer_client({"HX-Request": "true"})
        for name, params in views:
            t = harness.request_times(client, "/runs/history/", params, SAMPLES)
            print(
                f"| {name} | {t.median_ms:.1f} | {t.p95_ms:.1f} | {t.cpu_ms:.1f} "
                f"| {len(t.statements)} |",
                flush=True,
            )
        for name, params in views[:2]:
            query = "&".join(f"{k}={v}" for k, v in params.items())
            harness.print_plans(name, "/runs/history/" + (f"?{query}" if query else ""),
                                client=client)  # fmt: skip

        rounds = [
            ("GET / (panel, history collapsed)", "/"),
            ("GET /?history=1 (panel + first history page)", "/?history=1"),
            ("GET /?status=failed&dataset_key=ds-7-v1", "/?status=failed&dataset_key=ds-7-v1"),
            ("GET /?offset=180", "/?offset=180"),
            # A page that reads every one of 100,000 steps takes seconds: in-process only.
            *(
                (f"GET /runs/<id>/ ({name})", f"/runs/{run_id}/")
                for name, run_id in chart_runs.items()
                if "count unknown" not in name
            ),
        ]
        print(f"\nwrk -t{harness.THREADS} -c{harness.CONNECTIONS} -d{harness.DURATION}s; "
              "2 gunicorn workers\n", flush=True)  # fmt: skip
        from django.db import connections

        # Every page needs a signed-in reader: each request carries a viewer's session.
        cookie = harness.session_header()
        connections.close_all()
        endpoints = [
            harness.Endpoint(name, path, "(report)", headers=dict(cookie)) for name, path in rounds
        ]
        with harness.gunicorn() as server:
            for endpoint in endpoints:
                status = harness.status(server.base_url + endpoint.path, cookie)
                assert status == 200, f"{endpoint.path} answered {status}, not a page"
            calibration = harness.interleaved(server, endpoints, repetitions=1)
        print("\n" + harness.goal_table(endpoints, calibration), flush=True)

        print("\nserver time of GET /runs/<id>/ in-process, 50 requests each\n", flush=True)
        print("| run | median ms | p95 ms | median CPU ms | queries |\n|---|---|---|---|---|")
        client = harness.viewer_client()
        for name, run_id in chart_runs.items():
            t = harness.request_times(client, f"/runs/{run_id}/", {}, 50)
            print(f"| {name} | {t.median_ms:.1f} | {t.p95_ms:.1f} | {t.cpu_ms:.1f} "
                  f"| {len(t.statements)} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
