"""Faults with real worker processes on PostgreSQL: sharing a queue, a killed worker, cancellation.

Each worker is `manage.py run_worker` in its own process and data directory, as
on separate machines, against the test database; the trainer is
runs/tests/fault_trainer.py. Nothing here is timed: every wait polls a condition
up to a generous deadline (runs/tests/faults.py).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django_tasks_db.models import DBTaskResult

from datasets.tests.factories import dataset_with_traces
from runs.models import TERMINAL_STATUSES, RunEvent, RunLogChunk, RunStatus, TunixRun
from runs.schemas import TunixRunRequest
from runs.services import CANCELLED_BEFORE_START, run_enqueue
from runs.tests.faults import Harness, Started
from tunix_registry.actors import COMMAND

pytestmark = [
    pytest.mark.postgres_only,
    # The subprocesses' pipes and files are closed by the harness, not by the GC.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

DATASET = "faults-v1"
# Bounds for hangs only, far above what each step takes on a loaded machine.
RUN_SECONDS = 90.0


def enqueue(model_id: str, *, dry_run: bool = False, queue: str | None = None) -> uuid.UUID:
    request = TunixRunRequest(dataset_key=DATASET, model_id=model_id, dry_run=dry_run)
    return run_enqueue(actor=COMMAND, request=request, queue=queue).run_id


def events(run_id: uuid.UUID) -> list[tuple[str | None, str]]:
    return list(
        RunEvent.objects.filter(run_id=run_id)
        .order_by("created_at", "id")
        .values_list("from_status", "to_status")
    )


def log_text(run_id: uuid.UUID) -> str:
    return "".join(
        RunLogChunk.objects.filter(run_id=run_id).order_by("seq").values_list("chunk", flat=True)
    )


def wait_workers_live(harness: Harness, *workers: Started) -> None:
    """Until every worker has its row (it is polling its queues)."""
    from runs.models import TunixWorker

    names = {w.name for w in workers}

    def live() -> bool:
        for worker in workers:
            if not worker.alive():
                raise AssertionError(f"{worker.name} exited:\n{worker.output()}")
        rows = TunixWorker.objects.filter(worker_id__in=names, stopped_at__isnull=True)
        return rows.count() == len(names)

    harness.wait_for(live, timeout=60, what=f"worker rows of {sorted(names)}")


def wait_status(harness: Harness, run_id: uuid.UUID, statuses: Any, what: str = "") -> TunixRun:
    def reached() -> TunixRun | None:
        run = TunixRun.objects.get(pk=run_id)
        return run if run.status in statuses else None

    run = harness.wait_for(
        reached, timeout=RUN_SECONDS, what=what or f"run {run_id} to be one of {sorted(statuses)}"
    )
    assert run is not None
    return run


def wait_terminal(harness: Harness, run_id: uuid.UUID) -> TunixRun:
    return wait_status(harness, run_id, TERMINAL_STATUSES, f"run {run_id} to end")


def wait_log(harness: Harness, run_id: uuid.UUID, text: str) -> None:
    def shipped() -> bool:
        return text in log_text(run_id)

    harness.wait_for(shipped, timeout=RUN_SECONDS, what=f"{text!r} in the log chunks of {run_id}")


def release(worker: Started) -> None:
    """Let every `fault-hold` trainer of this worker's data directory finish."""
    runs_dir = worker.data_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    (runs_dir / "go.flag").write_text("go")


def starts(worker: Started, run_id: uuid.UUID) -> int:
    """How many times a trainer was started for this run in this worker's data directory."""
    path = worker.data_dir / "runs" / str(run_id) / "starts"
    return len(path.read_text().splitlines()) if path.exists() else 0


def run_dir(worker: Started, run_id: uuid.UUID) -> Path:
    return worker.data_dir / "runs" / str(run_id)


# --- Two workers share the queue ---------------------------------------------------------


def test_two_workers_execute_ten_queued_runs_each_exactly_once(fault_harness: Harness) -> None:
    harness = fault_harness
    dataset_with_traces(name="faults", count=2)
    workers = [harness.worker("w1"), harness.worker("w2")]
    wait_workers_live(harness, *workers)

    ids = [enqueue("fault-hold") for _ in range(10)]

    # A worker executes one run at a time: two runs held at once means both took one.
    def both_executing() -> bool:
        holders = TunixRun.objects.filter(pk__in=ids, status=RunStatus.RUNNING)
        return set(holders.values_list("worker_id", flat=True)) == {"w1", "w2"}

    harness.wait_for(both_executing, timeout=RUN_SECONDS, what="w1 and w2 each holding a run")
    for worker in workers:
        release(worker)
    finished = [wait_terminal(harness, run_id) for run_id in ids]

    assert [run.status for run in finished] == [RunStatus.COMPLETED] * 10, [
        (run.status, run.message, run.stderr) for run in finished
    ]
    assert {run.worker_id for run in finished} == {"w1", "w2"}
    by_name = {worker.name: worker for worker in workers}
    for run in finished:
        assert events(run.run_id) == [
            (None, RunStatus.PENDING),
            (RunStatus.PENDING, RunStatus.RUNNING),
            (RunStatus.RUNNING, RunStatus.COMPLETED),
        ]
        claim = RunEvent.objects.get(run_id=run.run_id, to_status=RunStatus.RUNNING)
        assert f"worker {run.worker_id}" in claim.reason
        # Its trainer started once, on the worker that claimed it, and nowhere else.
        assert starts(by_name[run.worker_id], run.run_id) == 1
        other = next(w for w in workers if w.name != run.worker_id)
        assert starts(other, run.run_id) == 0
        assert "step 3" in run.stdout and "released" in run.stdout
    tasks = DBTaskResult.objects.filter(id__in=[run.task_id for run in finished])
    assert sorted(tasks.values_list("status", flat=True)) == ["SUCCESSFUL"] * 10
    assert all(w.alive() for w in workers), harness.diagnostics()


# --- A worker killed mid-run ---------------------------------------------------------------


def test_a_worker_killed_mid_run_loses_its_run_and_the_other_worker_keeps_working(
    fault_harness: Harness, client: Client
) -> None:
    harness = fault_harness
    dataset_with_traces(name="faults", count=2)
    workers = [harness.worker("w1"), harness.worker("w2")]
    wait_workers_live(harness, *workers)

    run_id = enqueue("fault-hold")
    held = wait_status(harness, run_id, {RunStatus.RUNNING})
    wait_log(harness, run_id, "step 3")
    victim = next(w for w in workers if w.name == held.worker_id)
    survivor = next(w for w in workers if w is not victim)
    assert harness.trainers(), "the held run's trainer is running"

    harness.kill9(victim)

    lost = wait_terminal(harness, run_id)
    assert lost.status == RunStatus.FAILED, (lost.status, lost.message)
    assert victim.name in lost.message, lost.message
    # The trainer died with its worker: nothing trains unsupervised.
    harness.wait_no_trainers(under=victim.data_dir)
    assert starts(victim, run_id) == 1 and starts(survivor, run_id) == 0
    assert events(run_id)[-1] == (RunStatus.RUNNING, RunStatus.FAILED)
    # Its queue row is closed, not left running for ever.
    task = DBTaskResult.objects.get(id=lost.task_id)
    assert task.status != "RUNNING", task.status

    # The output so far stays readable, from the database and through the API.
    assert all(f"step {n}" in log_text(run_id) for n in (1, 2, 3)), log_text(run_id)
    response = client.get(f"/api/tunix/runs/{run_id}/logs", HTTP_ACCEPT="application/json")
    assert response.status_code == 200, response.content
    assert "step 3" in json.dumps(response.json())

    # The other worker goes on taking runs.
    next_id = enqueue("fault-quick")
    after = wait_terminal(harness, next_id)
    assert (after.status, after.worker_id) == (RunStatus.COMPLETED, survivor.name), (
        after.status,
        after.message,
    )
    assert survivor.alive(), harness.diagnostics()


# --- Cancellation ---------------------------------------------------------------------------


def test_cancel_a_pending_run_and_a_running_run_whose_trainer_ignores_sigterm(
    fault_harness: Harness, client: Client
) -> None:
    harness = fault_harness
    dataset_with_traces(name="faults", count=2)
    worker = harness.worker("w1")
    wait_workers_live(harness, worker)

    stubborn = enqueue("fault-stubborn")
    # No worker takes this queue: the run stays pending until it is cancelled.
    waiting = enqueue("fault-quick", queue="faults-idle")
    wait_status(harness, stubborn, {RunStatus.RUNNING})
    wait_log(harness, stubborn, "stubborn")

    def trainer_and_child() -> bool:
        return len(harness.trainers()) == 2

    harness.wait_for(trainer_and_child, timeout=RUN_SECONDS, what="the trainer and its child")

    response = client.post(f"/api/tunix/runs/{waiting}/cancel", content_type="application/json")
    assert response.status_code == 200, response.content
    assert response.json()["message"] == "Run cancellation requested"
    cancelled = TunixRun.objects.get(pk=waiting)
    assert cancelled.status == RunStatus.CANCELLED
    assert cancelled.completed_at is not None
    assert CANCELLED_BEFORE_START in cancelled.stderr
    assert events(waiting) == [(None, RunStatus.PENDING), (RunStatus.PENDING, RunStatus.CANCELLED)]
    task = DBTaskResult.objects.get(id=cancelled.task_id)
    assert task.status != "READY", "a cancelled run's task is not left for a worker"

    response = client.post(f"/api/tunix/runs/{stubborn}/cancel", content_type="application/json")
    assert response.status_code == 200, response.content
    assert response.json()["message"] == "Run cancellation requested"
    ended = wait_terminal(harness, stubborn)

    assert ended.status == RunStatus.CANCELLED, (ended.status, ended.message, ended.stderr)
    assert events(stubborn) == [
        (None, RunStatus.PENDING),
        (RunStatus.PENDING, RunStatus.RUNNING),
        (RunStatus.RUNNING, RunStatus.CANCEL_REQUESTED),
        (RunStatus.CANCEL_REQUESTED, RunStatus.CANCELLED),
    ]
    # The output so far is kept, including the proof that SIGTERM came first.
    assert "stubborn" in ended.stdout and "SIGTERM ignored" in ended.stdout, ended.stdout
    assert "SIGTERM ignored" in log_text(stubborn)
    # SIGKILL after the grace period took the trainer and the child that ignored SIGTERM.
    harness.wait_no_trainers()

    response = client.post(f"/api/tunix/runs/{stubborn}/cancel", content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"detail": "Run is already in terminal state: cancelled"}

    # The pending run never reached a trainer; the worker takes the next run.
    assert not run_dir(worker, waiting).exists()
    next_id = enqueue("fault-quick")
    assert wait_terminal(harness, next_id).status == RunStatus.COMPLETED
    assert worker.alive(), harness.diagnostics()
