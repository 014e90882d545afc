"""What authentication costs the hot reads: the same reads with a bearer token and without.

    .venv/bin/python -m bench.auth_bench            # about 15 minutes on 2 cores

Seeds a throwaway PostgreSQL (bench.harness) with BENCH_RUNS runs (100,000)
and BENCH_TRACES traces (20,000), analyses them, and creates a viewer with an
API token through the product's services. The server runs as in production
(gunicorn, two workers, tunix_registry/gunicorn_conf.py) with
TUNIX_ANONYMOUS_ACCESS=read, so that one server answers both kinds of request:

- anonymous: no credentials at all, the reads a viewer may make (the baseline:
  no authentication work);
- token: `Authorization: Bearer <secret>` on every request, the product's
  normal way in for scripts (TUNIX_TOKEN_CACHE_SECONDS and
  TUNIX_TOKEN_TOUCH_SECONDS are left at their defaults, so each server
  process looks the token up again every couple of seconds).

For each hot read (run list, run detail, trace list, trace detail, 304 of a
finished run) the two rounds run back to back, anonymous first in the odd
repetitions and the token first in the even ones, in each of
BENCH_REPETITIONS repetitions (4 by default), with the harness' calibration view around
every repetition. Before the rounds it prints every statement a token request
sends beside an anonymous one, and the CPU of each read with and without the
token in this process (bench.layers_bench's WSGI handler), and the token
lookup alone, found in the process's cache and after the cache is emptied. The last output is
the table: per endpoint the median requests/s of each kind, the ratio of the
medians, every repetition's ratio, and whether the token costs at most
BENCH_MAX_COST (10 %) of the requests/s.

Environment: BENCH_RUNS, BENCH_TRACES, BENCH_REPETITIONS, BENCH_DURATION (s
per round, 15), BENCH_CONNECTIONS (16), BENCH_THREADS (2), BENCH_MAX_COST,
BENCH_READS (some of runs,run,traces,trace,304: only those).
Needs wrk.
"""

from __future__ import annotations

import os
import statistics
import time
import urllib.request
from dataclasses import dataclass

from bench import harness
from bench.layers_bench import Wsgi, cpu_ms
from bench.seed import seed_runs, seed_traces, vacuum_runs

RUNS = int(os.environ.get("BENCH_RUNS", "100000"))
TRACES = int(os.environ.get("BENCH_TRACES", "20000"))
REPETITIONS = max(2, int(os.environ.get("BENCH_REPETITIONS", "4")))
MAX_COST = float(os.environ.get("BENCH_MAX_COST", "0.10"))
# Which reads to measure (comma-separated among runs, run, traces, trace, 304; all by default).
ONLY = {r.strip() for r in os.environ.get("BENCH_READS", "").split(",") if r.strip()}
# In-process timing: anonymous and token requests measured in turn, this many times each.
LAYER_ROUNDS = 5

# Before django.setup() (harness.postgres): the in-process checks and the
# server read the same setting.
os.environ["TUNIX_ANONYMOUS_ACCESS"] = "read"


@dataclass
class Pair:
    name: str
    anonymous: harness.Endpoint
    token: harness.Endpoint


def _etag(base_url: str, path: str) -> str:
    request = urllib.request.Request(base_url + path)
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.headers.get("ETag") or "")


def print_statements(pairs: list[Pair]) -> None:
    """Every statement each read sends, without credentials and with the token."""
    print("\n### Statements per request (captured in this process)\n", flush=True)
    for pair in pairs:
        for kind, endpoint in (("anonymous", pair.anonymous), ("token", pair.token)):
            statements = harness.statements_of(endpoint.path, endpoint.headers)
            print(f"- {pair.name}, {kind}: {len(statements)} statement(s)", flush=True)
            if kind == "token":
                for sql in statements:
                    print(f"  - `{sql[:400]}`", flush=True)


def layers(pairs: list[Pair], secret: str) -> None:
    """Where a token request's CPU goes, in this process (best of 5 batches, CPU ms per call)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.services import token_user, tokens_forget

    wsgi = Wsgi()
    print(f"\n### CPU per request in this process (ms; medians of {LAYER_ROUNDS} alternating "
          "rounds, each the best of 5 batches)\n", flush=True)  # fmt: skip
    print("| read | anonymous | token | token adds |\n|---|---|---|---|", flush=True)
    for pair in pairs:
        anon: list[float] = []
        token: list[float] = []
        for _ in range(LAYER_ROUNDS):
            anon.append(wsgi.timed("GET", pair.anonymous.path, headers=pair.anonymous.headers))
            token.append(wsgi.timed("GET", pair.token.path, headers=pair.token.headers))
        adds = statistics.median(t - a for a, t in zip(anon, token, strict=True))
        print(f"| {pair.name} | {statistics.median(anon):.3f} | {statistics.median(token):.3f} "
              f"| {adds:.3f} |", flush=True)  # fmt: skip
    hit = cpu_ms(lambda: token_user(secret))

    def miss() -> None:
        tokens_forget()
        token_user(secret)

    tokens_forget()
    with CaptureQueriesContext(connection) as captured:
        token_user(secret)
    print(f"\n- `token_user(secret)` found in the process's cache: {hit:.3f} ms", flush=True)
    print(f"- the same after the cache is emptied: {cpu_ms(miss):.2f} ms, "
          f"{len(captured.captured_queries)} statements:", flush=True)  # fmt: skip
    for query in captured.captured_queries:
        print(f"  - `{query['sql'][:150]}`", flush=True)


def ratio_table(pairs: list[Pair]) -> str:
    lines = [
        "| endpoint | anonymous req/s | token req/s | token / anonymous | p99 ms (anon / token) "
        f"| ≤ {MAX_COST * 100:.0f} % cost | every repetition: token / anonymous |",
        "|---|---|---|---|---|---|---|",
    ]
    for pair in pairs:
        anon, token = pair.anonymous.results, pair.token.results
        anon_rate = statistics.median(r.requests_per_s for r in anon)
        token_rate = statistics.median(r.requests_per_s for r in token)
        ratio = token_rate / anon_rate
        errors = sum(r.errors for r in anon + token)
        met = "yes" if ratio >= 1 - MAX_COST and not errors else "**no**"
        if errors:
            met += f" ({errors} errors)"
        every = ", ".join(
            f"{t.requests_per_s / a.requests_per_s * 100:.0f} %"
            for a, t in zip(anon, token, strict=True)
        )
        anon_p99 = statistics.median(r.p99_ms for r in anon)
        token_p99 = statistics.median(r.p99_ms for r in token)
        lines.append(
            f"| {pair.name} | {anon_rate:,.0f} | {token_rate:,.0f} | {ratio * 100:.0f} % "
            f"| {anon_p99:.1f} / {token_p99:.1f} | {met} | {every} |"
        )
    return "\n".join(lines)


def command() -> str:
    settings = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_"))
    return f"{settings} .venv/bin/python -m bench.auth_bench".strip()


def main() -> None:
    started = time.monotonic()
    with harness.postgres():
        print(f"seeding {RUNS:,} runs ...", flush=True)
        print(f"  {seed_runs(RUNS):.1f} s", flush=True)
        print(f"seeding {TRACES:,} traces ...", flush=True)
        print(f"  {seed_traces(TRACES):.1f} s", flush=True)
        harness.analyze()
        vacuum_runs()

        from django.db import connections

        from accounts.roles import VIEWER
        from runs.models import TunixRun
        from traces.models import Trace

        bearer = harness.bearer_header("bench-reader", VIEWER)
        ordered = TunixRun.objects.order_by("-created_at", "-run_id")
        finished = ordered.filter(status="completed").values_list("run_id", flat=True)[RUNS // 4]
        trace = Trace.objects.order_by("created_at", "id").values_list("id", flat=True)[TRACES // 2]
        every_read = (
            ("runs", "GET /api/tunix/runs", "/api/tunix/runs"),
            ("run", "GET /api/tunix/runs/{id}", f"/api/tunix/runs/{finished}"),
            ("traces", "GET /api/traces", "/api/traces"),
            ("trace", "GET /api/traces/{id}", f"/api/traces/{trace}"),
            ("304", "304 GET /api/tunix/runs/{id} (finished run)", f"/api/tunix/runs/{finished}"),
        )
        reads = [(key, name, path) for key, name, path in every_read if not ONLY or key in ONLY]
        pairs = [
            Pair(
                name,
                harness.Endpoint(f"{name}, anonymous", path, "baseline"),
                harness.Endpoint(f"{name}, token", path, "token", headers=dict(bearer)),
            )
            for _, name, path in reads
        ]
        connections.close_all()

        with harness.gunicorn() as server:
            for _ in range(40):  # let both workers finish booting
                harness.status(server.base_url + "/api/health")
            for pair in pairs:
                if pair.name.startswith("304"):
                    etag = _etag(server.base_url, pair.anonymous.path)
                    assert etag, "the finished run sent no ETag"
                    pair.anonymous.headers = {"If-None-Match": etag}
                    pair.token.headers = {**bearer, "If-None-Match": etag}
                expected = 304 if pair.name.startswith("304") else 200
                for endpoint in (pair.anonymous, pair.token):
                    status = harness.status(server.base_url + endpoint.path, endpoint.headers)
                    assert status == expected, (endpoint.name, status)
                no_credentials = {
                    k: v for k, v in (pair.token.headers or {}).items() if k != "Authorization"
                }
                assert harness.status(
                    server.base_url + pair.token.path,
                    {**no_credentials, "Authorization": "Bearer tnx_not-a-token"},
                ) == 401, "a bad token must be refused"  # fmt: skip
            print_statements(pairs)
            layers(pairs, bearer["Authorization"].split(" ", 1)[1])
            connections.close_all()
            print(f"\n{RUNS:,} runs, {TRACES:,} traces; {harness.machine()}\n", flush=True)
            endpoints = [e for pair in pairs for e in (pair.anonymous, pair.token)]
            harness.interleaved(server, endpoints, repetitions=REPETITIONS, alternate=True)
        print(f"\n### Authentication: `{command()}`\n")
        print(f"{RUNS:,} runs, {TRACES:,} traces stored; wrk -t{harness.THREADS} "
              f"-c{harness.CONNECTIONS} -d{harness.DURATION}s per round, medians of "
              f"{REPETITIONS} repetitions; load average at the end {os.getloadavg()[0]:.2f}; "
              f"{(time.monotonic() - started) / 60:.1f} minutes in all\n")  # fmt: skip
        print(ratio_table(pairs), flush=True)


if __name__ == "__main__":
    main()
