"""A small harness for the HTTP benchmarks under bench/.

It stands on its own (no files outside this repository): a throwaway
PostgreSQL cluster (scripts/pg.sh), Django configured against it with
bench.settings (the product's settings and URLs, plus the calibration view
`/bench/calibrate` of bench/urls.py), your seed function, gunicorn with two
workers as in production, and wrk as the load generator (`apt-get install
wrk`). Figures per round: requests/s, latency percentiles, errors, and the CPU
milliseconds spent per request by the server and by PostgreSQL (read from
/proc before and after each round), plus the peak RSS of the gunicorn workers.

Every goal is judged against the calibration view measured in the same run:
`interleaved` runs calibrate, every endpoint, calibrate, ... and `goal_table`
prints each endpoint beside the calibration of its own repetition.

Typical use in a bench script::

    from bench import harness

    with harness.postgres():               # sets DATABASE_URL, migrates
        seed_my_data()                     # plain ORM code after harness.postgres()
        endpoints = [harness.Endpoint("GET /api/traces", "/api/traces", "≥ 90 %", min_ratio=0.9)]
        with harness.gunicorn() as server:
            calibration = harness.interleaved(server, endpoints, repetitions=3)
        print(harness.goal_table(endpoints, calibration))

Run from the project root: `.venv/bin/python -m bench.reads_bench`.
Everything (cluster, data dir) lives under a temporary directory removed at
the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The product's settings plus the calibration view's URL (bench/settings.py).
SETTINGS = "bench.settings"
CALIBRATION_PATH = "/bench/calibrate"

DURATION = int(os.environ.get("BENCH_DURATION", "15"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_ms(pid: int) -> tuple[float, float]:
    """(own, exited children's) user+system CPU of one process, in milliseconds (0 if gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0, 0.0
    own = int(fields[11]) + int(fields[12])
    children = int(fields[13]) + int(fields[14])
    return own * 1000.0 / CLK_TCK, children * 1000.0 / CLK_TCK


def _cpu_ms(pids: list[int]) -> float:
    """User+system CPU of the given processes and their exited children, in milliseconds."""
    # With the exited children's: PostgreSQL's parallel and autovacuum workers come
    # and go within a round.
    return sum(sum(process_cpu_ms(pid)) for pid in pids)


def cluster_cpu_ms() -> float:
    """CPU the benchmark's PostgreSQL has used so far (postmaster, backends, exited ones)."""
    return _cpu_ms(_cluster_processes())


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except FileNotFoundError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    try:
        out = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
        ).stdout
    except FileNotFoundError:
        return []
    return [int(p) for p in out.split()]


def _cluster_processes() -> list[int]:
    """The benchmark cluster's postmaster and its children (backends, background workers).

    Only this cluster's: other PostgreSQL servers on a shared machine are not counted.
    """
    try:
        postmaster = int(
            (Path(str(_state["pgdir"])) / "data" / "postmaster.pid").read_text().split()[0]
        )
    except (KeyError, OSError, ValueError, IndexError):
        return []
    return [postmaster, *_children(postmaster)]


_state: dict[str, object] = {}


@contextlib.contextmanager
def postgres(*, migrate: bool = True) -> Iterator[str]:
    """Start a throwaway cluster, point Django at it, migrate; yields the URL."""
    workdir = Path(tempfile.mkdtemp(prefix="tunix-bench-"))
    workdir.chmod(0o755)
    pgdir = workdir / "pg"
    data_dir = workdir / "data"
    data_dir.mkdir()
    url = subprocess.run(
        [str(ROOT / "scripts" / "pg.sh"), "start", str(pgdir)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    os.environ["DATABASE_URL"] = url
    os.environ["TUNIX_REGISTRY_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key")
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    os.environ.setdefault("TUNIX_REGISTRY_LOG_LEVEL", "WARNING")
    _state.update(workdir=workdir, url=url, data_dir=data_dir, pgdir=pgdir)
    try:
        import django

        django.setup()
        if migrate:
            from django.core.management import call_command

            call_command("migrate", verbosity=0)
        yield url
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        subprocess.run([str(ROOT / "scripts" / "pg.sh"), "stop", str(pgdir)], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


def data_dir() -> Path:
    return Path(str(_state["data_dir"]))


def analyze() -> None:
    """VACUUM ANALYZE so plans and index-only scans reflect the seeded data."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def explain(sql: str, params: Any = None) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of a query, as text (no params: `sql` is sent as it is)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params or None)
        return "\n".join(row[0] for row in cursor.fetchall())


def explain_queryset(queryset: object) -> str:
    sql, params = queryset.query.sql_with_params()  # type: ignore[attr-defined]
    return explain(sql, params)


def viewer_client(headers: dict[str, str] | None = None) -> Any:
    """A Django test client signed in as a viewer (every page needs a signed-in reader)."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from accounts.roles import VIEWER, assign_role

    users = get_user_model().objects
    user = users.filter(username="bench-viewer").first() or users.create_user(
        "bench-viewer", password=None
    )
    assign_role(user, VIEWER)
    client = Client(headers=headers or {})
    client.force_login(user)
    return client


def status(url: str, headers: dict[str, str] | None = None) -> int:
    """The status of a GET of `url`, redirects not followed (a 302 to sign in is a 302)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=30) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def session_header() -> dict[str, str]:
    """The Cookie header of a signed-in viewer's session, for wrk rounds against the pages."""
    from django.conf import settings

    name = settings.SESSION_COOKIE_NAME
    return {"Cookie": f"{name}={viewer_client().cookies[name].value}"}


def bearer_header(username: str, role: str) -> dict[str, str]:
    """The Authorization header of a new API token of a new user with `role`, made by the
    product's services (every API request needs credentials)."""
    from accounts.services import token_issue, user_create

    user = user_create(username, password=None, role=role)
    return {"Authorization": f"Bearer {token_issue(user, 'bench').secret}"}


@dataclass(frozen=True)
class RequestTimes:
    """Server time of one request repeated in this process: wall and CPU milliseconds."""

    median_ms: float
    p95_ms: float
    cpu_ms: float
    # The SQL of the last request.
    statements: list[str]


def request_times(client: Any, path: str, params: dict[str, str], samples: int) -> RequestTimes:
    """GET `path` with `params` `samples` times through Django's test `client`.

    CPU time (this process: view, ORM, template) is what the request costs; wall
    time also counts waiting for the CPU and for the database, which a busy shared
    machine inflates.
    """
    import statistics

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    wall, cpu = [], []
    statements: list[str] = []
    for _ in range(samples):
        with CaptureQueriesContext(connection) as captured:
            started, started_cpu = time.perf_counter(), time.process_time()
            response = client.get(path, params, SERVER_NAME="localhost")
            wall.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
        assert response.status_code == 200, (path, response.status_code)
        statements = [query["sql"] for query in captured.captured_queries]
    wall.sort()
    return RequestTimes(
        median_ms=statistics.median(wall),
        p95_ms=wall[int(len(wall) * 0.95) - 1],
        cpu_ms=statistics.median(cpu),
        statements=statements,
    )


def statements_of(
    path: str, headers: dict[str, str] | None = None, *, client: Any = None
) -> list[str]:
    """The SQL a GET of `path` sends, captured from a real request in this process.

    A first request is sent uncaptured, so per-process caches are warm as in a
    serving worker. Statements come with their parameters interpolated. `client`
    (say, viewer_client() for the pages) replaces a client without credentials;
    the answer must be a 200 or a 304, not a refusal or a redirect to sign in.
    """
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    if client is None:
        client = Client(HTTP_HOST="localhost", headers=headers or {})
    # The host as request_times sends it (a client given here may set none).
    client.get(path, SERVER_NAME="localhost")
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path, SERVER_NAME="localhost")
    assert response.status_code in (200, 304), (
        path, response.status_code, response.content[:300]
    )  # fmt: skip
    return [query["sql"] for query in captured.captured_queries]


def print_plans(
    title: str, path: str, headers: dict[str, str] | None = None, *, client: Any = None
) -> None:
    """Markdown: every statement a GET of `path` sends, and the EXPLAIN ANALYZE of each SELECT."""
    statements = statements_of(path, headers, client=client)
    print(f"\n#### {title}: `GET {path[:90]}`, {len(statements)} statement(s)\n", flush=True)
    for sql in statements:
        print(f"```\n{sql}\n```\n")
        if sql.lstrip().upper().startswith(("SELECT", "WITH")):
            print(f"```\n{explain(sql)}\n```\n", flush=True)


@dataclass
class Round:
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    server_cpu_ms_per_req: float
    db_cpu_ms_per_req: float
    peak_worker_rss_mb: float
    extra: dict[str, str] = field(default_factory=dict)


_LUA = r"""
local method, path, body, ctype = "{method}", "{path}", {body}, "{ctype}"
local headers = {{{headers}}}
if body ~= nil then headers["Content-Type"] = ctype end
-- Every request is the same: format it once, so wrk spends no CPU on it per request.
local req = nil
request = function()
  if req == nil then req = wrk.format(method, path, headers, body) end
  return req
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write("BENCH-JSON {{")
  io.write(string.format("\"requests\": %d, \"duration_us\": %d, ",
    summary.requests, summary.duration))
  io.write(string.format("\"p50\": %f, \"p90\": %f, \"p99\": %f, ",
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
  io.write(string.format("\"connect\": %d, \"read\": %d, \"write\": %d, ",
    e.connect, e.read, e.write))
  io.write(string.format("\"status\": %d, \"timeout\": %d}}\n", e.status, e.timeout))
end
"""


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


@dataclass
class Server:
    base_url: str
    master_pid: int
    workdir: Path

    def worker_pids(self) -> list[int]:
        return _children(self.master_pid)

    def wrk(
        self,
        path: str,
        *,
        method: str = "GET",
        body: str | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        duration: int = DURATION,
        connections: int = CONNECTIONS,
        threads: int = THREADS,
        warmup: int = 2,
    ) -> Round:
        script = self.workdir / f"wrk-{time.monotonic_ns()}.lua"
        script.write_text(
            _LUA.format(
                method=method,
                path=path,
                body=_lua_string(body) if body is not None else "nil",
                ctype=content_type,
                headers=", ".join(
                    f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in (headers or {}).items()
                ),
            )
        )
        if warmup:
            subprocess.run(
                ["wrk", f"-t{threads}", f"-c{connections}", f"-d{warmup}s", "-s", str(script),
                 self.base_url],
                capture_output=True, check=False,
            )  # fmt: skip
        workers = self.worker_pids()
        pids = [self.master_pid, *workers]
        pg = _cluster_processes()
        peak = {"rss": 0.0}
        stop = threading.Event()

        def sample() -> None:
            # Reads /proc only (no subprocess), a few times a second: the sampler
            # must not take CPU from the server it measures.
            while not stop.is_set():
                peak["rss"] = max([peak["rss"], *(_rss_mb(p) for p in workers)])
                stop.wait(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        server_before, db_before = _cpu_ms(pids), _cpu_ms(_cluster_processes() or pg)
        sampler.start()
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
             "--timeout", "30s", "-s", str(script), self.base_url],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        stop.set()
        sampler.join()
        server_after, db_after = _cpu_ms(pids), _cpu_ms(_cluster_processes() or pg)
        match = re.search(r"BENCH-JSON (\{.*\})", out.stdout)
        if not match:
            raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
        data = json.loads(match.group(1))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
        errors = sum(data[k] for k in ("connect", "read", "write", "timeout"))
        errors += int(non2xx.group(1)) if non2xx else 0
        requests = max(int(data["requests"]), 1)
        seconds = data["duration_us"] / 1e6
        return Round(
            requests_per_s=requests / seconds,
            p50_ms=data["p50"] / 1000,
            p90_ms=data["p90"] / 1000,
            p99_ms=data["p99"] / 1000,
            requests=requests,
            errors=errors,
            server_cpu_ms_per_req=(server_after - server_before) / requests,
            db_cpu_ms_per_req=(db_after - db_before) / requests,
            peak_worker_rss_mb=peak["rss"],
        )


@contextlib.contextmanager
def gunicorn(*, workers: int = 2) -> Iterator[Server]:
    """Serve the project against the bench database as production does.

    tunix_registry/gunicorn_conf.py as it is (gthread workers, keep-alive, one
    listening socket per worker), with `workers` worker processes and its
    defaults for everything else (no access log); settings bench.settings (the
    product's, plus the calibration view). Runs collectstatic first, as a
    deployment does.
    """
    from django.core.management import call_command
    from django.db import connections

    # The production settings serve static files from the collected manifest,
    # and the WSGI application refuses to load without it.
    call_command("collectstatic", interactive=False, verbosity=0)
    connections.close_all()
    port = _free_port()
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = SETTINGS
    for name in ("GUNICORN_CMD_ARGS", "GUNICORN_ACCESSLOG", "GUNICORN_THREADS", "WEB_CONCURRENCY"):
        env.pop(name, None)  # the production defaults, whatever this shell has
    workdir = Path(str(_state["workdir"]))
    log = (workdir / "gunicorn.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "tunix_registry.wsgi:application",
         "--config", "python:tunix_registry.gunicorn_conf",
         "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--log-level", "warning",
         # Not the control socket other gunicorns on this machine share.
         "--no-control-socket"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None:
                raise RuntimeError((workdir / "gunicorn.log").read_text())
            time.sleep(0.2)
        time.sleep(0.5)
        yield Server(base_url=base, master_pid=proc.pid, workdir=workdir)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


HEADER = (
    "| endpoint | req/s | p50 ms | p90 ms | p99 ms | errors | server CPU ms/req "
    "| DB CPU ms/req | peak worker RSS MB |\n|---|---|---|---|---|---|---|---|---|"
)


def print_header() -> None:
    print(HEADER, flush=True)


def report(name: str, result: Round, goal: str = "") -> str:
    row = (
        f"| {name} | {result.requests_per_s:,.0f} | {result.p50_ms:.1f} | {result.p90_ms:.1f} "
        f"| {result.p99_ms:.1f} | {result.errors} | {result.server_cpu_ms_per_req:.2f} "
        f"| {result.db_cpu_ms_per_req:.2f} | {result.peak_worker_rss_mb:.0f} |"
    )
    if goal:
        row += f" goal {goal}"
    print(row, flush=True)
    return row


# --- Interleaved rounds against the calibration view --------------------------


@dataclass
class Endpoint:
    """One measured endpoint and its goal.

    `min_ratio` is a goal relative to the calibration view's requests/s of the
    same repetition (0.9 = at least 90 %); `min_rate` an absolute one;
    `max_p99_ms` a bound on the 99th percentile latency. `check` is a
    correctness verdict found before the rounds (None: not checked).
    """

    name: str
    path: str
    goal: str
    min_ratio: float | None = None
    min_rate: float | None = None
    max_p99_ms: float | None = None
    method: str = "GET"
    body: str | None = None
    headers: dict[str, str] | None = None
    connections: int = CONNECTIONS
    threads: int = THREADS
    check: bool | None = None
    skip: str = ""  # why the endpoint cannot be measured (e.g. "no ETag sent")
    results: list[Round] = field(default_factory=list)


def _calibrate(server: Server, warmup: int) -> Round:
    return server.wrk(CALIBRATION_PATH, warmup=warmup)


def interleaved(
    server: Server,
    endpoints: list[Endpoint],
    *,
    repetitions: int,
    warmup: int = 2,
    alternate: bool = False,
) -> list[float]:
    """Measure every endpoint `repetitions` times, a calibration round around each repetition.

    The order is calibrate, every endpoint, calibrate, every endpoint, ...,
    calibrate; with `alternate`, every second repetition takes the endpoints in
    reverse order, so that of two endpoints compared with each other neither
    always runs first. A repetition's calibration figure is the mean of the two
    calibration rounds on either side of it, so slow drift of the machine's
    speed affects both sides of a ratio alike. Returns those figures; each
    endpoint's rounds are in its `results`. Prints every round as it ends.
    """
    print_header()
    calibrations = [_calibrate(server, warmup=5)]
    report("calibration (start)", calibrations[0])
    for repetition in range(1, repetitions + 1):
        print(f"| *repetition {repetition}, load average {os.getloadavg()[0]:.2f}* |||||||||",
              flush=True)  # fmt: skip
        reverse = alternate and repetition % 2 == 0
        for endpoint in reversed(endpoints) if reverse else endpoints:
            if endpoint.skip:
                continue
            result = server.wrk(
                endpoint.path,
                method=endpoint.method,
                body=endpoint.body,
                headers=endpoint.headers,
                connections=endpoint.connections,
                threads=endpoint.threads,
                warmup=warmup,
            )
            endpoint.results.append(result)
            report(endpoint.name, result)
        calibrations.append(_calibrate(server, warmup=warmup))
        report("calibration", calibrations[-1])
    return [
        (calibrations[i].requests_per_s + calibrations[i + 1].requests_per_s) / 2
        for i in range(repetitions)
    ]


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.0f} %" if ratio >= 0.1 else f"{ratio * 100:.1f} %"


def goal_table(endpoints: list[Endpoint], calibration: list[float]) -> str:
    """The goals as a markdown table: the repetition whose ratio is the median, per endpoint.

    "met" needs every goal of the row (ratio, absolute rate, p99 latency,
    correctness) and no errors in that repetition.
    """
    lines = [
        "| endpoint | req/s | calibration req/s | ratio | p99 ms | goal | met "
        "| every repetition: req/s / calibration |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for endpoint in endpoints:
        if endpoint.skip or not endpoint.results:
            lines.append(f"| {endpoint.name} | — | — | — | — | {endpoint.goal} "
                         f"| not measured: {endpoint.skip or 'no rounds'} | |")  # fmt: skip
            continue
        pairs = sorted(
            zip(endpoint.results, calibration, strict=False),
            key=lambda pair: pair[0].requests_per_s / pair[1],
        )
        result, cal = pairs[len(pairs) // 2]
        ratio = result.requests_per_s / cal
        verdicts = []
        if endpoint.min_ratio is not None:
            verdicts.append(ratio >= endpoint.min_ratio)
        if endpoint.min_rate is not None:
            verdicts.append(result.requests_per_s >= endpoint.min_rate)
        if endpoint.max_p99_ms is not None:
            verdicts.append(result.p99_ms < endpoint.max_p99_ms)
        if endpoint.check is not None:
            verdicts.append(endpoint.check)
        verdicts.append(result.errors == 0)
        judged = len(verdicts) > 1  # more than "no errors": the row has a goal
        met = ("yes" if all(verdicts) else "**no**") if judged else "—"
        if result.errors:
            met += f" ({result.errors} errors)"
        if endpoint.check is False:
            met += " (wrong answer)"
        every = ", ".join(
            f"{_rate(r.requests_per_s)} / {_rate(c)}"
            for r, c in zip(endpoint.results, calibration, strict=False)
        )
        lines.append(
            f"| {endpoint.name} | {_rate(result.requests_per_s)} | {_rate(cal)} "
            f"| {_percent(ratio)} | {result.p99_ms:.1f} | {endpoint.goal} | {met} | {every} |"
        )
    return "\n".join(lines)


def machine() -> str:
    """One line about where the figures were taken."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {memory:.0f} GiB, PostgreSQL {pg} on loopback, "
        f"gunicorn with tunix_registry/gunicorn_conf.py, wrk {THREADS} threads, "
        f"{DURATION} s rounds; load average {os.getloadavg()[0]:.2f}"
    )
