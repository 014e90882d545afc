"""The read goals, each measured against the calibration view of the same run.

    .venv/bin/python -m bench.reads_bench            # about 15 minutes on 2 cores

Seeds a throwaway PostgreSQL (bench.harness) with 1,000,000 runs, 100,000
traces and a 5,000-trace dataset built by the product's own service, marks the
runs table all-visible (VACUUM FREEZE) and analyses everything. Then, in this
process through Django's test client, it checks that every read answers what
the plain ORM says it should (offset=90000 and the deep cursor included) and
prints the EXPLAIN (ANALYZE, BUFFERS) of every statement each read sends.
Finally it serves the project with gunicorn as in production (two workers,
tunix_registry/gunicorn_conf.py, DJANGO_SETTINGS_MODULE=bench.settings) and
runs wrk rounds in this order, BENCH_REPETITIONS times (3):

    calibrate, run list, filtered run list, run detail, trace list, trace detail,
    cursor page 500,000 deep, offset=90000, 304 finished run, 304 trace,
    304 dataset, dataset export (trace, -c2), dataset export (tunix_sft),
    dry-run, ..., calibrate

The calibration view (`/bench/calibrate`, bench/urls.py) is a plain Django view
returning a constant 100-byte JSON body through the full page middleware
stack: the framework's ceiling on this machine at that moment. The last output
is the goal table (the repetition whose ratio is the median, per endpoint).

The server allows anonymous access (TUNIX_ANONYMOUS_ACCESS=write), so no
request carries credentials; bench/auth_bench.py measures what a token adds.

Environment: BENCH_RUNS, BENCH_TRACES, BENCH_REPETITIONS, BENCH_DURATION (s per
round, 15), BENCH_CONNECTIONS (16), BENCH_THREADS (2). Needs wrk.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from bench import harness
from bench.seed import seed_dataset, seed_runs, seed_traces, vacuum_runs

RUNS = int(os.environ.get("BENCH_RUNS", "1000000"))
TRACES = int(os.environ.get("BENCH_TRACES", "100000"))
REPETITIONS = int(os.environ.get("BENCH_REPETITIONS", "3"))
DATASET_TRACES = 5000
OFFSET = 90_000
LIMIT = 20  # the API's default page size
HOT = 0.90  # hot reads: at least 90 % of the calibration view
CONDITIONAL = 1.10  # 304s: at least 110 %
# Floors of the other rounds: 90 % of what this code is known to reach on this
# machine (tunix_sft export 23/s, dry-run 180/s); the dry-run's product goal is 100/s.

# The reads without credentials (the server allows anonymous writes, as the
# dry-run rounds need): what authentication adds is bench/auth_bench.py's
# measure. Set before django.setup(), so this process and the server agree.
os.environ["TUNIX_ANONYMOUS_ACCESS"] = "write"


def _client() -> Any:
    from django.test import Client

    return Client(HTTP_HOST="localhost")


def _get(path: str, headers: dict[str, str] | None = None) -> Any:
    response = _client().get(path, headers=headers or {})
    assert response.status_code in (200, 304), (path, response.status_code, response.content[:300])
    return response


def _ids(path: str, key: str) -> list[str]:
    return [str(item[key]) for item in json.loads(_get(path).content)["data"]]


def checks(ids: dict[str, Any]) -> dict[str, bool]:
    """Does each read answer what the plain ORM query says? (in-process, the same code)"""
    from runs.models import TunixRun
    from traces.models import Trace

    runs = TunixRun.objects.order_by("-created_at", "-run_id").values_list("run_id", flat=True)
    traces = Trace.objects.order_by("-created_at", "-id").values_list("id", flat=True)

    def expect(qs: Any, start: int = 0) -> list[str]:
        return [str(v) for v in qs[start : start + LIMIT]]

    result = {
        "run list": _ids("/api/tunix/runs", "run_id") == expect(runs),
        "filtered run list": _ids(ids["filtered_path"], "run_id")
        == expect(runs.filter(dataset_key="ds-7-v1", status="failed")),
        f"cursor {RUNS // 2:,} deep": _ids(ids["cursor_path"], "run_id")
        == expect(runs, RUNS // 2 + 1),
        f"offset={OFFSET}": _ids(f"/api/tunix/runs?offset={OFFSET}", "run_id")
        == expect(runs, OFFSET),
        "trace list": _ids("/api/traces", "id") == expect(traces),
        "run detail": json.loads(_get(f"/api/tunix/runs/{ids['run']}").content)["run_id"]
        == ids["run"],
        "trace detail": json.loads(_get(f"/api/traces/{ids['trace']}").content)["id"]
        == ids["trace"],
    }
    print("\nCorrectness (each read against the plain ORM query):", flush=True)
    for name, ok in result.items():
        print(f"- {name}: {'ok' if ok else 'WRONG'}", flush=True)
    return result


def etag_of(base_url: str, path: str) -> tuple[str | None, int | None]:
    """The ETag of a GET, and the status of the same GET sent with If-None-Match."""
    with urllib.request.urlopen(base_url + path, timeout=30) as response:
        etag = response.headers.get("ETag")
    if not etag:
        return None, None
    request = urllib.request.Request(base_url + path, headers={"If-None-Match": etag})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return etag, response.status
    except urllib.error.HTTPError as exc:
        return etag, exc.code


def status_of(base_url: str, path: str, body: str | None = None) -> int:
    data = body.encode() if body is not None else None
    request = urllib.request.Request(
        base_url + path, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def command() -> str:
    """The command line that reproduces this run, with the BENCH_ settings it used."""
    settings = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_"))
    return f"{settings} .venv/bin/python -m bench.reads_bench".strip()


def main() -> None:
    started = time.monotonic()
    with harness.postgres():
        print(f"seeding {RUNS:,} runs ...", flush=True)
        print(f"  {seed_runs(RUNS):.1f} s", flush=True)
        print(f"seeding {TRACES:,} traces ...", flush=True)
        print(f"  {seed_traces(TRACES):.1f} s", flush=True)
        key = seed_dataset(DATASET_TRACES)
        harness.analyze()
        vacuum_runs()

        from django.db import connections

        from runs.models import TunixRun
        from runs.selectors import cursor_encode
        from traces.models import Trace

        ordered = TunixRun.objects.order_by("-created_at", "-run_id")
        deep = ordered.only("created_at", "run_id")[RUNS // 2]
        finished = ordered.filter(status="completed").values_list("run_id", flat=True)[RUNS // 4]
        trace = Trace.objects.order_by("created_at", "id").values_list("id", flat=True)[TRACES // 2]
        ids = {
            "run": str(finished),
            "trace": str(trace),
            "cursor_path": f"/api/tunix/runs?cursor={cursor_encode(deep)}",
            "filtered_path": "/api/tunix/runs?dataset_key=ds-7-v1&status=failed",
        }
        correct = checks(ids)
        reads = [
            ("run list", "/api/tunix/runs"),
            ("run list, dataset_key + status", ids["filtered_path"]),
            ("run detail", f"/api/tunix/runs/{ids['run']}"),
            ("trace list", "/api/traces"),
            ("trace detail", f"/api/traces/{ids['trace']}"),
            (f"cursor page {RUNS // 2:,} deep", ids["cursor_path"]),
            (f"offset={OFFSET}", f"/api/tunix/runs?offset={OFFSET}"),
        ]
        for name, path in reads:
            harness.print_plans(name, path)

        hot = f"≥ {HOT * 100:.0f} % of calibration"
        endpoints = [
            harness.Endpoint("GET /api/tunix/runs", reads[0][1], hot, min_ratio=HOT,
                             check=correct["run list"]),
            harness.Endpoint("GET /api/tunix/runs?dataset_key=…&status=…", reads[1][1], hot,
                             min_ratio=HOT, check=correct["filtered run list"]),
            harness.Endpoint("GET /api/tunix/runs/{id}", reads[2][1], hot, min_ratio=HOT,
                             check=correct["run detail"]),
            harness.Endpoint("GET /api/traces", reads[3][1], hot, min_ratio=HOT,
                             check=correct["trace list"]),
            harness.Endpoint("GET /api/traces/{id}", reads[4][1], hot, min_ratio=HOT,
                             check=correct["trace detail"]),
            harness.Endpoint(f"GET /api/tunix/runs?cursor=<{RUNS // 2:,} deep>", reads[5][1],
                             hot, min_ratio=HOT, check=correct[f"cursor {RUNS // 2:,} deep"]),
            harness.Endpoint(f"GET /api/tunix/runs?offset={OFFSET}", reads[6][1],
                             "correct (speed reported)", check=correct[f"offset={OFFSET}"]),
        ]  # fmt: skip
        conditional = f"304, ≥ {CONDITIONAL * 100:.0f} % of calibration"
        for name, path in [
            ("304 GET /api/tunix/runs/{id} (finished run)", reads[2][1]),
            ("304 GET /api/traces/{id}", reads[4][1]),
            ("304 GET /api/datasets/{key}", f"/api/datasets/{key}"),
        ]:
            endpoints.append(harness.Endpoint(name, path, conditional, min_ratio=CONDITIONAL))
            etag = _get(path).headers.get("ETag")
            if etag:
                harness.print_plans(f"{name} (If-None-Match)", path, {"If-None-Match": etag})
        connections.close_all()
        export = f"/api/datasets/{key}/export.jsonl"
        dry_run = json.dumps({"dataset_key": key, "model_id": "google/gemma-2b-it"})
        endpoints += [
            harness.Endpoint(f"GET …/export.jsonl ({DATASET_TRACES:,} traces, trace), -c2",
                             export, "≥ 10/s at -c2", min_rate=10, connections=2),
            harness.Endpoint(f"GET …/export.jsonl?format=tunix_sft ({DATASET_TRACES:,} traces)",
                             export + "?format=tunix_sft", "≥ 21/s",
                             min_rate=21),
            harness.Endpoint(f"POST /api/tunix/run (dry-run, {DATASET_TRACES:,} traces)",
                             "/api/tunix/run", "≥ 162/s",
                             min_rate=162, method="POST",
                             body=dry_run),
        ]  # fmt: skip

        with harness.gunicorn() as server:
            for _ in range(40):  # let both workers finish booting
                status_of(server.base_url, "/api/health")
            for endpoint in endpoints:
                if endpoint.name.startswith("304"):
                    etag, status = etag_of(server.base_url, endpoint.path)
                    if etag is None:
                        endpoint.skip = "no ETag sent"
                    elif status != 304:
                        endpoint.skip = f"If-None-Match answered {status}"
                    else:
                        endpoint.headers = {"If-None-Match": etag}
                else:
                    status = status_of(server.base_url, endpoint.path, endpoint.body)
                    if status != 200:
                        endpoint.skip = f"answered {status}"
                if endpoint.skip:
                    print(f"{endpoint.name}: not measured, {endpoint.skip}", flush=True)
            print(f"\n{RUNS:,} runs, {TRACES:,} traces; {harness.machine()}\n", flush=True)
            calibration = harness.interleaved(server, endpoints, repetitions=REPETITIONS)
        created = TunixRun.objects.count() - RUNS
        print(f"\n(the dry-run rounds created {created:,} runs, all persisted)")
        print(f"\n### Goals: `{command()}`\n")
        print(f"{RUNS:,} runs, {TRACES:,} traces stored; wrk -t{harness.THREADS} "
              f"-c{harness.CONNECTIONS} -d{harness.DURATION}s unless the row says otherwise; "
              f"load average at the end {os.getloadavg()[0]:.2f}; "
              f"{(time.monotonic() - started) / 60:.1f} minutes in all\n")  # fmt: skip
        print(harness.goal_table(endpoints, calibration), flush=True)


if __name__ == "__main__":
    main()
