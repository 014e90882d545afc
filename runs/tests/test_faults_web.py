"""The web tier and the workers apart: a gunicorn restart under running runs, and load.

gunicorn (the production configuration) and `manage.py run_worker` processes,
each with its own data directory, on the test database (PostgreSQL pass);
launches go through `POST /api/tunix/run?mode=async`. Nothing is timed: waits
poll up to generous deadlines (runs/tests/faults.py). The load test runs for
TUNIX_FAULTS_LOAD_SECONDS (default 60).
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
import uuid
from typing import Any

import pytest

from datasets.tests.factories import dataset_with_traces
from runs.models import TERMINAL_STATUSES, RunEvent, RunStatus, TunixRun
from runs.tests.faults import Harness, NotYet, Web, request
from runs.tests.test_faults_workers import events, release, starts, wait_workers_live

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

DATASET = "faults-v1"
RUN_SECONDS = 120.0
LOAD_SECONDS = float(os.environ.get("TUNIX_FAULTS_LOAD_SECONDS", "60"))
CLIENTS = 16


def launch(web: Web, model_id: str, *, dry_run: bool = False) -> dict[str, Any]:
    body = {"dataset_key": DATASET, "model_id": model_id, "dry_run": dry_run}
    code, run = web.call("POST", "/api/tunix/run?mode=async", body)
    assert code == 200, run
    assert run["status"] == "pending", run
    return dict(run)


def test_runs_on_a_worker_are_unaffected_by_a_web_server_restart(fault_harness: Harness) -> None:
    harness = fault_harness
    dataset_with_traces(name="faults", count=2)
    worker = harness.worker("w1")
    wait_workers_live(harness, worker)
    web = harness.web("web")

    held = [launch(web, "fault-hold")["run_id"] for _ in range(2)]
    dry = launch(web, "tiny-qwen3", dry_run=True)["run_id"]

    def one_executing() -> bool:
        return TunixRun.objects.filter(pk__in=held, status=RunStatus.RUNNING).exists()

    harness.wait_for(one_executing, timeout=RUN_SECONDS, what="a launched run executing")

    # The web server dies (all of gunicorn, at once) and is started again.
    harness.stop(web.started, signal.SIGKILL)
    web = harness.web("web")
    release(worker)

    def all_ended() -> list[dict[str, Any]] | None:
        found = []
        for run_id in [*held, dry]:
            code, run = web.call("GET", f"/api/tunix/runs/{run_id}")
            assert code == 200, run
            if run["status"] not in TERMINAL_STATUSES:
                return None
            found.append(run)
        return found

    ended = harness.wait_for(all_ended, timeout=RUN_SECONDS, what="every launched run to end")
    assert ended is not None
    assert [run["status"] for run in ended] == ["completed"] * 3, ended
    for run in ended[:2]:
        assert "released" in run["stdout"]
        assert starts(worker, uuid.UUID(run["run_id"])) == 1
    for run_id in [*held, dry]:
        assert events(uuid.UUID(run_id)) == [
            (None, RunStatus.PENDING),
            (RunStatus.PENDING, RunStatus.RUNNING),
            (RunStatus.RUNNING, RunStatus.COMPLETED),
        ]
    assert worker.alive(), harness.diagnostics()


class Client(threading.Thread):
    """One user: launch a run, watch it and the list until it ends, launch the next.

    Every fourth launch is a local run (the fault trainer), the others dry-runs.
    Any answer but 200, and any connection error, is an error.
    """

    def __init__(self, web: Web, number: int, deadline: float, finish_by: float) -> None:
        super().__init__(name=f"client-{number}", daemon=True)
        self.web = web
        self.number = number
        self.deadline = deadline
        self.finish_by = finish_by
        self.launched: list[str] = []
        self.unfinished: list[str] = []
        self.errors: list[str] = []
        self.requests = 0
        self.conn = web.connection()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        self.requests += 1
        try:
            code, data = request(self.conn, method, path, body)
        except (OSError, http.client.HTTPException) as exc:
            self.errors.append(f"{method} {path}: {type(exc).__name__}: {exc}")
            self.conn.close()
            self.conn = self.web.connection()
            raise NotYet from exc
        if code != 200:
            self.errors.append(f"{method} {path}: HTTP {code}: {str(data)[:300]}")
            raise NotYet
        return data

    def run(self) -> None:
        try:
            while time.monotonic() < self.deadline:
                local = len(self.launched) % 4 == 3
                body = {
                    "dataset_key": DATASET,
                    "model_id": "fault-quick" if local else "tiny-qwen3",
                    "dry_run": not local,
                }
                try:
                    run = self.call("POST", "/api/tunix/run?mode=async", body)
                except NotYet:
                    continue
                self.launched.append(run["run_id"])
                self.follow(run["run_id"])
        finally:
            self.conn.close()

    def follow(self, run_id: str) -> None:
        while time.monotonic() < self.finish_by:
            try:
                self.call("GET", "/api/tunix/runs?limit=20")
                run = self.call("GET", f"/api/tunix/runs/{run_id}")
            except NotYet:
                continue
            if run["status"] in TERMINAL_STATUSES:
                return
            time.sleep(0.1)
        self.unfinished.append(run_id)


def test_sixteen_clients_launch_and_read_while_two_workers_execute(
    fault_harness: Harness,
) -> None:
    harness = fault_harness
    dataset_with_traces(name="faults", count=2)
    # A lease long enough that a starved heartbeat on a loaded machine is not a lost worker.
    workers = [harness.worker(name, lease_seconds=30) for name in ("w1", "w2")]
    wait_workers_live(harness, *workers)
    web = harness.web("web", workers=2)

    start = time.monotonic()
    deadline = start + LOAD_SECONDS
    clients = [Client(web, n, deadline, deadline + RUN_SECONDS) for n in range(CLIENTS)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=LOAD_SECONDS + RUN_SECONDS + 60)
    assert not any(client.is_alive() for client in clients), "a client hung"

    errors = [error for client in clients for error in client.errors]
    assert errors == [], errors[:20]
    assert [c.unfinished for c in clients] == [[]] * CLIENTS
    launched = [run_id for client in clients for run_id in client.launched]
    assert len(launched) >= CLIENTS, "every client launched at least one run"
    assert len(set(launched)) == len(launched)
    rows = TunixRun.objects.all()
    assert rows.count() == len(launched)
    assert rows.filter(status__in=TERMINAL_STATUSES).count() == len(launched)
    statuses = sorted(set(rows.values_list("status", flat=True)))
    assert statuses == [RunStatus.COMPLETED], statuses
    # Each executed once, by one of the two workers.
    claims = RunEvent.objects.filter(to_status=RunStatus.RUNNING)
    assert claims.count() == len(launched)
    assert set(rows.values_list("worker_id", flat=True)) <= {"w1", "w2"}
    assert all(w.alive() for w in workers), harness.diagnostics()
    print(
        f"{len(launched)} runs launched by {CLIENTS} clients in {LOAD_SECONDS:.0f} s, "
        f"{sum(c.requests for c in clients)} requests, all ended "
        f"{time.monotonic() - deadline:.1f} s after the last launch window closed"
    )
