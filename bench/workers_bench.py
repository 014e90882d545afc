"""Runs on workers, on PostgreSQL: async launch, start latency, live logs, supervision, drain.

    .venv/bin/python -m bench.workers_bench   # ~8 min on a quiet 2-core machine, ~18 at load 15

A throwaway PostgreSQL (bench.harness) holding BENCH_DATASET_TRACES (200) short arithmetic
traces and a dataset of them built by the product's service (short sequences, so the tiny model
trains at full speed). Then, in order:

1. Async launch. gunicorn as in production (two workers, tunix_registry/gunicorn_conf.py,
   bench.settings) and no worker: wrk rounds of `POST /api/tunix/run?mode=async` with a dry-run
   body and a local-run body, interleaved with the calibration view (`/bench/calibrate`),
   BENCH_REPETITIONS (2) times, BENCH_DURATION s (15) at BENCH_CONNECTIONS (16). Goal ≥ 300/s
   with p99 < 50 ms. The runs it queues are checked (all `pending`) and then removed.
2. Launch to trainer start. One idle `manage.py run_worker` (its defaults: 1 s between looks at
   an empty queue) whose TUNIX_TRAINER_COMMAND is bench/workers_trainer.py, a stand-in that
   writes its `time.time()` at start into its run directory and prints a timestamped line.
   BENCH_LAUNCHES (20) local runs launched over HTTP one after another, each at a random moment
   1 to 2 s after the previous run ended: the trainer's start minus the moment the HTTP answer
   arrived (and the claim event's time, to show where it goes). Goal: median < 1 s.
3. Live log. The same runs: the logs endpoint (`Accept: application/json`, `since_seq`) polled
   every 50 ms from the launch; the moment the trainer's line is first in an answer minus the
   timestamp the trainer printed on it. The stand-in stays alive BENCH_TRAINER_SECONDS (2.5)
   after printing, so the line travels by the supervisor's periodic shipping. Goal: median < 2 s.
4. Supervision cost. The real trainer (`python -m runs.trainer`, tiny-qwen3) on the dataset,
   BENCH_TRAINER_EPOCHS (5) epochs: through a worker (launched over HTTP) and by hand on the
   same manifest and dataset (a copy of the worker's run directory, the same environment),
   interleaved, BENCH_TRAINER_RUNS (5) each after one uncounted warm-up. Steady steps/s as
   bench/trainer_bench.py (the first step, which compiles, left out). Goal: < 2 % cost, the
   median of the rounds' worker / by-hand ratios. Beside it, from /proc: the CPU the worker
   process itself used during its rounds (supervisor loop, heartbeats, housekeeping thread)
   and PostgreSQL's extra CPU over a by-hand round, as a share of the trainer's own CPU.
5. Drain. BENCH_DRAIN_RUNS (1,000) dry-runs queued (run_enqueue), then BENCH_DRAIN_WORKERS (4)
   `run_worker --batch` processes: runs/s from the first claim to the last completion, and
   proof of exactly-once execution (one pending→running event per run, all completed, one
   finished task row per run).

BENCH_SKIP (comma-separated among launch,start,supervision,drain) leaves sections out.
Prints markdown tables; the last one holds the goal rows. Needs wrk.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from bench import harness
from bench.seed import seed_dataset

ROOT = harness.ROOT
PYTHON = sys.executable
DATASET_TRACES = int(os.environ.get("BENCH_DATASET_TRACES", "200"))
REPETITIONS = int(os.environ.get("BENCH_REPETITIONS", "2"))
LAUNCHES = int(os.environ.get("BENCH_LAUNCHES", "20"))
TRAINER_SECONDS = float(os.environ.get("BENCH_TRAINER_SECONDS", "2.5"))
TRAINER_RUNS = int(os.environ.get("BENCH_TRAINER_RUNS", "5"))
TRAINER_EPOCHS = int(os.environ.get("BENCH_TRAINER_EPOCHS", "5"))
DRAIN_RUNS = int(os.environ.get("BENCH_DRAIN_RUNS", "1000"))
DRAIN_WORKERS = int(os.environ.get("BENCH_DRAIN_WORKERS", "4"))
SKIP = {s.strip() for s in os.environ.get("BENCH_SKIP", "").split(",") if s.strip()}
# The launcher's bearer token every request of the bench sends (set by main()).
AUTH: dict[str, str] = {}

LAUNCH_RATE = 300.0
LAUNCH_P99_MS = 50.0
START_SECONDS = 1.0
LOG_SECONDS = 2.0
SUPERVISION_COST = 0.02
POLL_SECONDS = 0.05
STUB_TRAINER = ROOT / "bench" / "workers_trainer.py"

goals: list[str] = []


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def say(text: str) -> None:
    print(text, flush=True)


def seed_arithmetic(count: int) -> None:
    """`count` short traces ("What is a+b?", two steps), one second apart, with the ORM."""
    import random
    from datetime import timedelta

    from django.utils import timezone

    from traces.models import Trace

    rng = random.Random(1)
    base = timezone.now() - timedelta(seconds=count)
    traces = []
    for n in range(count):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        payload = {
            "trace_version": "1.0",
            "prompt": f"What is {a}+{b}?",
            "final_answer": str(a + b),
            "steps": [
                {"i": 0, "type": "compute", "content": f"Add {a} and {b}"},
                {"i": 1, "type": "check", "content": "Verify"},
            ],
            "meta": None,
        }
        created = base + timedelta(seconds=n)
        traces.append(Trace(created_at=created, trace_version="1.0", payload=payload))
    Trace.objects.bulk_create(traces)


# --- HTTP ---------------------------------------------------------------------------------


class Http:
    """One keep-alive connection to the server (reopened when the server closes it)."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", **AUTH}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                payload = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                return response.status, json.loads(payload) if payload else None
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def launch(http: Http, body: dict[str, Any]) -> tuple[str, float]:
    """POST ?mode=async; the run id and the wall-clock moment the answer arrived."""
    status, answer = http.request("POST", "/api/tunix/run?mode=async", body)
    answered = time.time()
    if status != 200 or answer.get("status") != "pending":
        raise RuntimeError(f"async launch answered {status}: {answer}")
    return str(answer["run_id"]), answered


# --- Workers ------------------------------------------------------------------------------


@contextlib.contextmanager
def worker(
    worker_id: str, *, extra: list[str] | None = None, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`manage.py run_worker` on the bench database, stopped (SIGTERM) on exit."""
    log = harness.data_dir().parent / f"worker-{worker_id}.log"
    full_env = dict(os.environ)
    full_env.update(env or {})
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PYTHON, "manage.py", "run_worker", "--queues", "default",
             "--worker-id", worker_id, *(extra or [])],
            cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def worker_log(worker_id: str) -> str:
    path = harness.data_dir().parent / f"worker-{worker_id}.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def wait_for_worker(worker_id: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    from django.db import connection

    from runs.models import TunixWorker

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker {worker_id} exited:\n{worker_log(worker_id)}")
        if TunixWorker.objects.filter(pk=worker_id, stopped_at__isnull=True).exists():
            connection.close()
            return
        time.sleep(0.1)
    raise RuntimeError(f"worker {worker_id} did not register:\n{worker_log(worker_id)}")


def wait_terminal(run_id: str, timeout: float, poll: float = 0.1) -> str:
    from django.db import connection

    from runs.models import TERMINAL_STATUSES, TunixRun

    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = TunixRun.objects.filter(pk=run_id).values_list("status", flat=True).first() or ""
        if status in TERMINAL_STATUSES:
            connection.close()
            return status
        time.sleep(poll)
    raise RuntimeError(f"run {run_id} still {status or 'missing'} after {timeout:.0f} s")


def clear_runs() -> int:
    """Remove every run and task row (what the launch rounds queued); how many runs there were."""
    from django.db import connection
    from django_tasks_db.models import DBTaskResult

    from runs.models import TunixRun, TunixWorker

    count = TunixRun.objects.count()
    with connection.cursor() as cursor:
        cursor.execute(
            f'TRUNCATE "{TunixRun._meta.db_table}", "{DBTaskResult._meta.db_table}", '
            f'"{TunixWorker._meta.db_table}" CASCADE'
        )
    return count


def median_text(values: list[float], unit: str = "s", digits: int = 3) -> str:
    return f"{statistics.median(values):.{digits}f} {unit}"


# --- 1. Async launch ----------------------------------------------------------------------


def section_launch(server: harness.Server, key: str) -> None:
    from django.db.models import Count

    from runs.models import TunixRun

    say(f"\n## 1. Async launch, no worker draining (load average {load()})\n")
    bodies: dict[str, dict[str, Any]] = {
        f"POST /api/tunix/run?mode=async (dry-run, {DATASET_TRACES} traces)": {
            "dataset_key": key, "model_id": "tiny-qwen3"},
        "POST /api/tunix/run?mode=async (local run, tiny-qwen3)": {
            "dataset_key": key, "model_id": "tiny-qwen3", "dry_run": False, "num_epochs": 1},
    }  # fmt: skip
    endpoints = []
    http = Http(server.base_url)
    for name, body in bodies.items():
        launch(http, body)  # answers 200 pending, or raises
        endpoints.append(
            harness.Endpoint(name, "/api/tunix/run?mode=async",
                             f"≥ {LAUNCH_RATE:.0f}/s, p99 < {LAUNCH_P99_MS:.0f} ms",
                             min_rate=LAUNCH_RATE, max_p99_ms=LAUNCH_P99_MS, method="POST",
                             body=json.dumps(body),
                             headers=dict(AUTH))
        )  # fmt: skip
    http.close()
    calibration = harness.interleaved(server, endpoints, repetitions=REPETITIONS)
    say("")
    say(harness.goal_table(endpoints, calibration))
    statuses = dict(TunixRun.objects.values_list("status").annotate(n=Count("pk")))
    say(f"\nruns queued by the rounds (warm-ups included): {statuses}; load average {load()}")
    for endpoint in endpoints:
        pairs = sorted(
            zip(endpoint.results, calibration, strict=False),
            key=lambda pair: pair[0].requests_per_s / pair[1],
        )
        result, cal = pairs[len(pairs) // 2]
        met = (
            result.requests_per_s >= LAUNCH_RATE
            and result.p99_ms < LAUNCH_P99_MS
            and result.errors == 0
        )
        goals.append(
            f"| {endpoint.name}, wrk -t{harness.THREADS} -c{harness.CONNECTIONS} "
            f"-d{harness.DURATION}s | ≥ {LAUNCH_RATE:.0f}/s, p99 < {LAUNCH_P99_MS:.0f} ms "
            f"| {result.requests_per_s:,.0f}/s, p99 {result.p99_ms:.1f} ms, "
            f"{result.errors} errors (calibration {cal:,.0f}/s, "
            f"{result.requests_per_s / cal * 100:.0f} %) | {'yes' if met else '**no**'} |"
        )
    if set(statuses) - {"pending"}:
        say("**some queued runs are not pending: something executed them**")


# --- 2 + 3. Launch to trainer start, and a printed line to the logs endpoint ---------------


def first_line_visible(http: Http, run_id: str, timeout: float) -> tuple[float, float] | None:
    """Poll the logs endpoint every 50 ms: (seen at, printed at) of the stand-in's line."""
    since = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, answer = http.request("GET", f"/api/tunix/runs/{run_id}/logs?since_seq={since}")
        seen = time.time()
        if status != 200:
            raise RuntimeError(f"logs endpoint answered {status}: {answer}")
        for chunk in answer["chunks"]:
            for line in chunk["chunk"].splitlines():
                if line.startswith("bench-line "):
                    return seen, float(line.split()[1])
        since = answer["next_seq"]
        if (
            answer["status"] in {"completed", "failed", "timeout", "cancelled"}
            and not answer["chunks"]
        ):
            return None
        time.sleep(POLL_SECONDS)
    return None


def section_start(server: harness.Server, key: str) -> None:
    import random

    from runs.models import RunEvent
    from runs.selectors import run_directory

    rng = random.Random(12)

    say(f"\n## 2. Launch to trainer start, 3. printed line to the logs endpoint "
        f"(load average {load()})\n")  # fmt: skip
    command = f"{PYTHON} {STUB_TRAINER} {TRAINER_SECONDS}"
    body = {"dataset_key": key, "model_id": "tiny-qwen3", "dry_run": False, "num_epochs": 1}
    starts: list[float] = []
    lines: list[float] = []
    http = Http(server.base_url)
    with worker("idle-1", env={"TUNIX_TRAINER_COMMAND": command}) as proc:
        wait_for_worker("idle-1", proc)
        time.sleep(2.0)  # idle: past its start-up, waiting on an empty queue
        say(
            "| launch | claimed after the answer | trainer start after the answer "
            "| line visible after printed | status |"
        )
        say("|---|---|---|---|---|")
        for n in range(1, LAUNCHES + 1):
            run_id, answered = launch(http, body)
            visible = first_line_visible(http, run_id, timeout=30)
            status = wait_terminal(run_id, timeout=60)
            marker = run_directory(run_id=uuid.UUID(run_id)) / "workers_started"
            start = float(marker.read_text()) - answered if marker.exists() else None
            line = visible[0] - visible[1] if visible else None
            if start is not None:
                starts.append(start)
            if line is not None:
                lines.append(line)
            claim = RunEvent.objects.filter(run_id=uuid.UUID(run_id), to_status="running").first()
            claimed = f"{claim.created_at.timestamp() - answered:.3f} s" if claim else "-"
            start_text = f"{start:.3f} s" if start is not None else "no start recorded"
            line_text = f"{line:.3f} s" if line is not None else "never seen"
            say(f"| {n} | {claimed} | {start_text} | {line_text} | {status} |")
            # The worker looks at the empty queue once a second: launch at a random
            # moment of that wait, not always at the same phase after its last run.
            time.sleep(rng.uniform(1.0, 2.0))
    http.close()
    if starts:
        say(f"\nstart: median {median_text(starts)}, min {min(starts):.3f}, "
            f"max {max(starts):.3f} ({len(starts)} of {LAUNCHES})")  # fmt: skip
    if lines:
        say(f"line: median {median_text(lines)}, min {min(lines):.3f}, max {max(lines):.3f} "
            f"({len(lines)} of {LAUNCHES}); load average {load()}")  # fmt: skip
    ok = len(starts) == LAUNCHES and statistics.median(starts) < START_SECONDS
    goals.append(
        f"| launch (HTTP answer) to trainer start, idle worker, median of {LAUNCHES} "
        f"| < {START_SECONDS:.0f} s | "
        + (f"{median_text(starts)} (range {min(starts):.2f}–{max(starts):.2f} s, "
           f"{len(starts)} of {LAUNCHES} started)" if starts else "no trainer started")
        + f" | {'yes' if ok else '**no**'} |"
    )  # fmt: skip
    ok = len(lines) == LAUNCHES and statistics.median(lines) < LOG_SECONDS
    goals.append(
        f"| printed line visible through the logs endpoint (JSON, 50 ms polls), median of "
        f"{LAUNCHES} | < {LOG_SECONDS:.0f} s | "
        + (f"{median_text(lines)} (range {min(lines):.2f}–{max(lines):.2f} s, "
           f"{len(lines)} of {LAUNCHES} seen)" if lines else "never seen")
        + f" | {'yes' if ok else '**no**'} |"
    )  # fmt: skip


# --- 4. Supervision cost ------------------------------------------------------------------


def steady_steps_per_second(metrics: Path) -> tuple[int, float]:
    rows = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line]
    steady = rows[-1]["elapsed_seconds"] - rows[0]["elapsed_seconds"]
    return len(rows), (len(rows) - 1) / steady if steady > 0 else float("nan")


def by_hand(source: Path, workdir: Path) -> Path:
    """`python -m runs.trainer --config manifest.yaml` on a copy of a worker run's directory."""
    from runs.execution import trainer_environment
    from runs.outputs import outputs_root

    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    shutil.copytree(source / "datasets", workdir / "datasets")
    manifest = yaml.safe_load((source / "manifest.yaml").read_text(encoding="utf-8"))
    output = outputs_root() / f"bench_hand_{workdir.name}"
    shutil.rmtree(output, ignore_errors=True)
    manifest["output"]["output_dir"] = str(output)
    (workdir / "manifest.yaml").write_text(
        yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False), encoding="utf-8"
    )
    # As runs.execution starts it: own session, scrubbed environment, output to files.
    with (workdir / "stdout.log").open("wb") as out, (workdir / "stderr.log").open("wb") as err:
        code = subprocess.run(
            [PYTHON, "-m", "runs.trainer", "--config", str(workdir / "manifest.yaml")],
            cwd=workdir, env=trainer_environment(), stdin=subprocess.DEVNULL,
            stdout=out, stderr=err, start_new_session=True, timeout=900, check=False,
        ).returncode  # fmt: skip
    if code != 0:
        tail = (workdir / "stderr.log").read_text(errors="replace")[-1500:]
        raise RuntimeError(f"trainer by hand exited {code}: {tail}")
    return workdir / "metrics.jsonl"


def section_supervision(server: harness.Server, key: str) -> None:
    from runs.metrics import METRICS_FILE
    from runs.selectors import run_directory

    say(f"\n## 4. Supervision cost: tiny-qwen3, {TRAINER_EPOCHS} epochs on {DATASET_TRACES} "
        f"traces, worker vs by hand, interleaved (load average {load()})\n")  # fmt: skip
    body = {
        "dataset_key": key, "model_id": "tiny-qwen3", "dry_run": False,
        "num_epochs": TRAINER_EPOCHS, "batch_size": 8, "max_seq_length": 256,
        "learning_rate": 3e-3,
    }  # fmt: skip
    hand_root = harness.data_dir().parent / "by-hand"
    worker_rates: list[float] = []
    hand_rates: list[float] = []
    # Per round: (trainer, worker process, PostgreSQL) CPU milliseconds.
    cpu: dict[str, list[tuple[float, float, float]]] = {"worker": [], "hand": []}
    http = Http(server.base_url)
    env = {"TUNIX_TRAINER_COMMAND": ""}
    with worker("train-1", env=env) as proc:
        wait_for_worker("train-1", proc)

        def through_worker() -> tuple[int, float, Path]:
            run_id, _ = launch(http, body)
            # Slow polls: the bench's own queries must not take CPU from the trainer.
            status = wait_terminal(run_id, timeout=900, poll=1.0)
            directory = run_directory(run_id=uuid.UUID(run_id))
            if status != "completed":
                raise RuntimeError(
                    f"worker run {run_id} ended {status}: "
                    f"{(directory / 'stderr.log').read_text(errors='replace')[-1500:]}"
                )
            steps, rate = steady_steps_per_second(directory / METRICS_FILE)
            return steps, rate, directory

        def accounted(which: str, n: int) -> float:
            """One round's steady steps/s; notes the CPU of trainer, worker and PostgreSQL."""
            worker_before, trainer_before = harness.process_cpu_ms(proc.pid)
            hand_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            db_before = harness.cluster_cpu_ms()
            if which == "worker":
                _, rate, _ = through_worker()
            else:
                _, rate = steady_steps_per_second(by_hand(source, hand_root / str(n)))
            db = harness.cluster_cpu_ms() - db_before
            worker_after, trainer_after = harness.process_cpu_ms(proc.pid)
            hand_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if which == "worker":
                trainer = trainer_after - trainer_before
            else:
                trainer = 1000 * (
                    hand_after.ru_utime + hand_after.ru_stime
                    - hand_before.ru_utime - hand_before.ru_stime
                )  # fmt: skip
            cpu[which].append((trainer, worker_after - worker_before, db))
            return rate

        t = time.monotonic()
        steps, rate, source = through_worker()
        say(f"warm-up through the worker: {steps} steps, {rate:.1f} steps/s, "
            f"{time.monotonic() - t:.0f} s wall")  # fmt: skip
        say("| round | first | worker steps/s | by hand steps/s | worker / by hand "
            "| trainer CPU s (worker / by hand) | worker process CPU ms | PostgreSQL CPU ms "
            "(worker round / by-hand round) | load average |")  # fmt: skip
        say("|---|---|---|---|---|---|---|---|---|")
        for n in range(1, TRAINER_RUNS + 1):
            order = ("worker", "hand") if n % 2 else ("hand", "worker")
            got = {which: accounted(which, n) for which in order}
            worker_rates.append(got["worker"])
            hand_rates.append(got["hand"])
            (wt, wp, wd), (ht, _, hd) = cpu["worker"][-1], cpu["hand"][-1]
            say(f"| {n} | {order[0]} | {got['worker']:.2f} | {got['hand']:.2f} "
                f"| {got['worker'] / got['hand'] * 100:.1f} % | {wt / 1000:.1f} / {ht / 1000:.1f} "
                f"| {wp:.0f} | {wd:.0f} / {hd:.0f} | {load()} |")  # fmt: skip
    http.close()
    w, h = statistics.median(worker_rates), statistics.median(hand_rates)
    # Each round's pair ran back to back: the median of the pairs' ratios is the cost.
    paired = statistics.median(a / b for a, b in zip(worker_rates, hand_rates, strict=True))
    cost = 1 - paired
    # What supervising took beside the trainer, as a share of the trainer's own CPU: the
    # worker process (supervisor loop, heartbeats, housekeeping thread) and the extra
    # PostgreSQL work of a worker round over a by-hand round.
    overhead = statistics.median(
        (wp + max(0.0, wd - hd)) / wt
        for (wt, wp, wd), (_, _, hd) in zip(cpu["worker"], cpu["hand"], strict=True)
    )
    say(f"\nmedians: worker {w:.2f} steps/s, by hand {h:.2f} steps/s; median of the rounds' "
        f"ratios {paired * 100:.1f} %, cost {cost * 100:+.1f} % ({steps} steps a run); "
        f"supervision CPU {overhead * 100:.2f} % of the trainer's; load {load()}")  # fmt: skip
    # How far apart the by-hand rounds alone are: a cost smaller than that is not resolved.
    spread = (max(hand_rates) - min(hand_rates)) / h
    verdict = "yes" if cost < SUPERVISION_COST else "**no**"
    if spread > SUPERVISION_COST:
        verdict += f" (by-hand rounds alone spread {spread * 100:.0f} %: the machine's noise)"
    goals.append(
        f"| supervision cost: tiny-qwen3 {steps} steps, worker vs `python -m runs.trainer`, "
        f"interleaved, {TRAINER_RUNS} each | < {SUPERVISION_COST * 100:.0f} % | worker "
        f"{w:.2f} steps/s, by hand {h:.2f} steps/s (medians; ranges "
        f"{min(worker_rates):.2f}–{max(worker_rates):.2f} and "
        f"{min(hand_rates):.2f}–{max(hand_rates):.2f}); median of the rounds' ratios "
        f"{paired * 100:.1f} %: {cost * 100:+.1f} %; supervision's own CPU (worker process and "
        f"PostgreSQL) {overhead * 100:.2f} % of the trainer's | {verdict} |"
    )


# --- 5. Drain -----------------------------------------------------------------------------


def section_drain(key: str) -> None:
    from django.db import connection
    from django.db.models import Count, Max, Min
    from django_tasks_db.models import DBTaskResult

    from runs.models import RunEvent, TunixRun
    from runs.schemas import TunixRunRequest
    from runs.services import run_enqueue
    from tunix_registry.actors import COMMAND

    say(f"\n## 5. Drain: {DRAIN_RUNS:,} queued dry-runs, {DRAIN_WORKERS} workers "
        f"(load average {load()})\n")  # fmt: skip
    clear_runs()
    request = TunixRunRequest(dataset_key=key, model_id="tiny-qwen3")
    t = time.perf_counter()
    ids = {run_enqueue(request=request, actor=COMMAND).run_id for _ in range(DRAIN_RUNS)}
    say(f"queued {len(ids):,} runs in {time.perf_counter() - t:.1f} s")
    connection.close()
    spawned = time.perf_counter()
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(worker(f"drain-{n}", extra=["--batch"]))
            for n in range(1, DRAIN_WORKERS + 1)
        ]
        for n, proc in enumerate(procs, start=1):
            try:
                proc.wait(timeout=600)
            except subprocess.TimeoutExpired:
                say(f"worker drain-{n} still running after 600 s:\n{worker_log(f'drain-{n}')}")
        wall = time.perf_counter() - spawned
    codes = [proc.returncode for proc in procs]
    runs = TunixRun.objects.filter(pk__in=ids)
    statuses = dict(runs.values_list("status").annotate(n=Count("pk")))
    claims = RunEvent.objects.filter(run_id__in=ids, from_status="pending", to_status="running")
    per_run = dict(claims.values_list("run_id").annotate(n=Count("pk")))
    once = sum(1 for run_id in ids if per_run.get(run_id) == 1)
    twice = sum(1 for n in per_run.values() if n > 1)
    window = (
        claims.aggregate(first=Min("created_at"))["first"],
        runs.aggregate(last=Max("completed_at"))["last"],
    )
    by_worker = dict(runs.values_list("worker_id").annotate(n=Count("pk")))
    tasks = DBTaskResult.objects.filter(
        id__in=[uuid.UUID(t) for t in runs.values_list("task_id", flat=True)]
    )
    task_status = dict(tasks.values_list("status").annotate(n=Count("pk")))
    # A task delivered to more than one worker lists each of them.
    finished_twice = sum(1 for w in tasks.values_list("worker_ids", flat=True) if len(w) > 1)
    seconds = (window[1] - window[0]).total_seconds() if all(window) else float("nan")
    rate = DRAIN_RUNS / seconds if seconds > 0 else float("nan")
    say(f"run statuses: {statuses}; task rows: {task_status}; workers' exit codes: {codes}")
    say(f"runs per worker: {by_worker}")
    say(f"pending→running events: exactly one for {once:,} of {len(ids):,} runs, more than one "
        f"for {twice}")  # fmt: skip
    say(f"first claim to last completion: {seconds:.1f} s = {rate:.0f} runs/s; workers' wall time "
        f"from spawn to exit (start-up included): {wall:.1f} s = {DRAIN_RUNS / wall:.0f} runs/s; "
        f"load average {load()}")  # fmt: skip
    exact = once == len(ids) == DRAIN_RUNS and statuses == {"completed": DRAIN_RUNS}
    exact = exact and task_status == {"SUCCESSFUL": DRAIN_RUNS} and finished_twice == 0
    goals.append(
        f"| {DRAIN_RUNS:,} queued dry-runs drained by {DRAIN_WORKERS} workers | each executed "
        f"once; drain rate reported | {rate:.0f} runs/s (first claim to last completion, "
        f"{seconds:.1f} s; {DRAIN_RUNS / wall:.0f}/s counting the workers' start-up); "
        f"{once:,} runs with exactly one pending→running event, {twice} with more; "
        f"{statuses.get('completed', 0):,} completed; split {sorted(by_worker.values())} "
        f"| {'yes' if exact else '**no**'} |"
    )


def main() -> None:
    started = time.monotonic()
    with harness.postgres():
        seed_arithmetic(DATASET_TRACES)
        key = seed_dataset(DATASET_TRACES, name="arith")
        harness.analyze()
        from accounts.roles import LAUNCHER

        AUTH.update(harness.bearer_header("bench-launcher", LAUNCHER))
        say(f"dataset {key}; {harness.machine()}")
        with harness.gunicorn() as server:
            http = Http(server.base_url)
            for _ in range(40):  # both gunicorn workers booted
                http.request("GET", "/api/health")
            http.close()
            if "launch" not in SKIP:
                section_launch(server, key)
            say(f"\nremoved {clear_runs():,} runs queued so far")
            if "start" not in SKIP:
                section_start(server, key)
            if "supervision" not in SKIP:
                section_supervision(server, key)
        if "drain" not in SKIP:
            section_drain(key)
        knobs = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_")]
        say(f"\n### Goals: `{' '.join([*knobs, '.venv/bin/python -m bench.workers_bench'])}`\n")
        say(f"PostgreSQL; load average at the end {load()}; "
            f"{(time.monotonic() - started) / 60:.1f} minutes in all\n")  # fmt: skip
        say("| what | goal | figure | met |\n|---|---|---|---|")
        for row in goals:
            say(row)


if __name__ == "__main__":
    main()
