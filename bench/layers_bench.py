"""Where a read's CPU goes, layer by layer, in this process (no HTTP server, no load generator).

    .venv/bin/python -m bench.layers_bench      # about 2 minutes

Seeds a throwaway PostgreSQL (bench.harness) with BENCH_RUNS runs (100,000),
BENCH_TRACES traces (20,000) and a 5,000-trace dataset, then times, in CPU
milliseconds per call (the best of 5 batches of BENCH_CALLS, 300), each whole
request through Django's WSGI handler exactly as gunicorn calls it (request
signals, persistent connection and its health check included), and the parts
of those requests called on their own: the connection health check, the
ORM query of each read, ninja's response validation and the JSON rendering.
Some parts are measured by replacing one layer with a constant in this process
only (say, a 304 whose existence query is answered `True`): the difference is
what that layer costs. The product is not changed.

The `.values()` rows are the alternative the run list could read: the
same query returning the listed columns as dicts instead of model instances.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable
from typing import Any

from bench import harness
from bench.seed import seed_dataset, seed_runs, seed_traces, vacuum_runs

RUNS = int(os.environ.get("BENCH_RUNS", "100000"))
TRACES = int(os.environ.get("BENCH_TRACES", "20000"))
CALLS = int(os.environ.get("BENCH_CALLS", "300"))
BATCHES = 5


def cpu_ms(function: Callable[[], Any], calls: int = CALLS) -> float:
    """Best-of-BATCHES CPU milliseconds per call (process time: no waiting counted)."""
    for _ in range(20):
        function()
    best = float("inf")
    for _ in range(BATCHES):
        started = time.process_time()
        for _ in range(calls):
            function()
        best = min(best, (time.process_time() - started) / calls * 1000)
    return best


class Wsgi:
    """Requests through django.core.handlers.wsgi.WSGIHandler, as a WSGI server sends them.

    Every request carries `auth` (say, a launcher's bearer token: the API answers a
    request without credentials with a 401, unless TUNIX_ANONYMOUS_ACCESS allows it),
    and an answer that is not a 200, 201 or 304 stops the benchmark.
    """

    def __init__(self, auth: dict[str, str] | None = None) -> None:
        from django.core.handlers.wsgi import WSGIHandler
        from django.test.client import RequestFactory

        self.handler = WSGIHandler()
        self.factory = RequestFactory(HTTP_HOST="localhost", headers=auth or {})

    def __call__(
        self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[str, bytes]:
        if method == "GET":
            request = self.factory.get(path, headers=headers or {})
        else:
            request = self.factory.post(path, data=body, content_type="application/json")
        environ = dict(request.META)
        environ["wsgi.input"] = io.BytesIO(body.encode() if body else b"")
        status: list[str] = []
        result = self.handler(environ, lambda s, h, exc=None: status.append(s))  # type: ignore[arg-type]
        content = b"".join(result)
        result.close()
        assert status[0].split()[0] in ("200", "201", "304"), (path, status[0], content[:300])
        return status[0], content

    def timed(self, method: str, path: str, **kwargs: Any) -> float:
        return cpu_ms(lambda: self(method, path, **kwargs))


def main() -> None:
    with harness.postgres():
        seed_runs(RUNS)
        seed_traces(TRACES)
        key = seed_dataset(5000)
        harness.analyze()
        vacuum_runs()

        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from accounts.roles import LAUNCHER
        from datasets.selectors import dataset_trace_count
        from runs import selectors as run_selectors
        from runs.models import TunixRun
        from runs.schemas import TunixRunListResponse
        from traces import selectors as trace_selectors
        from traces.models import Trace
        from tunix_registry.rendering import json_text

        auth = harness.bearer_header("bench-launcher", LAUNCHER)
        wsgi = Wsgi(auth)
        run_id = TunixRun.objects.filter(status="completed").values_list("pk", flat=True)[100]
        trace_id = Trace.objects.values_list("pk", flat=True)[100]
        paths = {
            "run": f"/api/tunix/runs/{run_id}",
            "trace": f"/api/traces/{trace_id}",
            "dataset": f"/api/datasets/{key}",
        }
        etags = {name: wsgi_etag(path, auth) for name, path in paths.items()}
        rows: list[tuple[str, float]] = []

        def row(name: str, value: float) -> None:
            rows.append((name, value))
            print(f"| {name} | {value:.3f} |", flush=True)

        print("| what | CPU ms |\n|---|---|")
        row(
            "calibration view (`/bench/calibrate`, whole request)",
            wsgi.timed("GET", "/bench/calibrate"),
        )
        row("`GET /api/health` (whole request: one `SELECT 1`)", wsgi.timed("GET", "/api/health"))
        row("connection health check alone (`is_usable()`, one round trip)",
            cpu_ms(connection.is_usable))  # fmt: skip
        for name, path in paths.items():
            row(f"304 {name} (whole request)",
                wsgi.timed("GET", path, headers={"If-None-Match": etags[name]}))  # fmt: skip
        original = run_selectors.run_finished_exists
        run_selectors.run_finished_exists = lambda **_: True
        conditional = {"If-None-Match": etags["run"]}
        try:
            row("304 run with its existence query answered `True` (request path, routing, "
                "middleware, ninja; no query, so no health check)",
                wsgi.timed("GET", paths["run"], headers=conditional))  # fmt: skip
        finally:
            run_selectors.run_finished_exists = original
        row("run existence query alone (`run_finished_exists`: ORM build, compile, round trip)",
            cpu_ms(lambda: run_selectors.run_finished_exists(run_id=run_id)))  # fmt: skip
        row("the same query, ORM build and SQL compile only (no round trip)",
            cpu_ms(lambda: exists_sql(run_id)))  # fmt: skip
        row("trace existence query alone (`trace_exists`)",
            cpu_ms(lambda: trace_selectors.trace_exists(trace_id=trace_id)))  # fmt: skip

        row("`GET /api/tunix/runs` (whole request)", wsgi.timed("GET", "/api/tunix/runs"))
        row("run list selector alone (`runs.selectors.run_list`: 21 model instances)",
            cpu_ms(lambda: run_selectors.run_list()))  # fmt: skip
        listed = ("run_id", "dataset_key", "model_id", "mode", "status", "started_at",
                  "duration_seconds", "created_at")  # fmt: skip

        def values_page() -> list[dict[str, Any]]:
            return list(TunixRun.objects.order_by("-created_at", "-run_id").values(*listed)[:21])

        row("the same page as `.values()` rows of the listed columns", cpu_ms(values_page))
        page = run_selectors.run_list()
        body = {"data": page.items, "pagination": page.pagination}
        row("ninja response validation + dump of the page (model instances)",
            cpu_ms(lambda: TunixRunListResponse.model_validate(body).model_dump()))  # fmt: skip
        dict_body = {"data": values_page()[:20], "pagination": page.pagination}
        row(
            "the same over `.values()` rows",
            cpu_ms(lambda: TunixRunListResponse.model_validate(dict_body).model_dump()),
        )
        dumped = TunixRunListResponse.model_validate(body).model_dump()
        row("JSON rendering of the page (the API's renderer)", cpu_ms(lambda: json_text(dumped)))

        row("`GET /api/tunix/runs/{id}` (whole request)", wsgi.timed("GET", paths["run"]))
        row("run detail selector alone (`run_get`)",
            cpu_ms(lambda: run_selectors.run_get(run_id=run_id)))  # fmt: skip
        row("`GET /api/traces` (whole request)", wsgi.timed("GET", "/api/traces"))
        row("trace list selector alone (`trace_summary_page`)",
            cpu_ms(lambda: trace_selectors.trace_summary_page(limit=20, offset=0)))  # fmt: skip
        row("`GET /api/traces/{id}` (whole request)", wsgi.timed("GET", paths["trace"]))
        row("trace detail selector alone (`trace_get`)",
            cpu_ms(lambda: trace_selectors.trace_get(trace_id=trace_id)))  # fmt: skip

        dry_run = json.dumps({"dataset_key": key, "model_id": "google/gemma-2b-it"})
        row("`POST /api/tunix/run` dry-run, 5,000 traces (whole request)",
            cpu_ms(lambda: wsgi("POST", "/api/tunix/run", body=dry_run), calls=60))  # fmt: skip
        row("of which `dataset_trace_count` (server side only)",
            cpu_ms(lambda: dataset_trace_count(key=key), calls=60))  # fmt: skip
        with CaptureQueriesContext(connection) as captured:
            wsgi("POST", "/api/tunix/run", body=dry_run)
        print(f"\nA dry-run sends {len(captured.captured_queries)} statements "
              "(after the health check):")  # fmt: skip
        for query in captured.captured_queries:
            print(f"- `{query['sql'][:110]}`")
        print(f"\n{RUNS:,} runs, {TRACES:,} traces; load average {os.getloadavg()[0]:.2f}")


def exists_sql(run_id: Any) -> Any:
    """What `run_finished_exists` does before it sends anything: build the query, compile it."""
    from runs.models import TERMINAL_STATUSES, TunixRun

    queryset = TunixRun.objects.filter(pk=run_id, status__in=TERMINAL_STATUSES)
    return queryset.query.exists().get_compiler("default").as_sql()


def wsgi_etag(path: str, auth: dict[str, str]) -> str:
    from django.test import Client

    response = Client(HTTP_HOST="localhost", headers=auth).get(path)
    etag = response.headers.get("ETag")
    assert response.status_code == 200 and etag, (path, response.status_code)
    return str(etag)


if __name__ == "__main__":
    main()
