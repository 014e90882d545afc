"""The run's state transitions (start, enqueue, claim, cancel, finish) and execution using them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import DatabaseError, connection
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from datasets.tests.factories import dataset_with_traces
from runs.execution import run_execute
from runs.models import RunEvent, RunMetric, RunStatus, TunixRun
from runs.outcomes import OUTCOME_FILE, RunOutcome, pending_outcome_load
from runs.schemas import TunixRunRequest
from runs.selectors import run_directory
from runs.services import (
    CANCELLED_BEFORE_START,
    InvalidRunRequest,
    QueueUnavailable,
    RunAlreadyFinished,
    RunNotFound,
    StartedRun,
    TunixRuntimeUnavailable,
    run_cancel,
    run_claim,
    run_enqueue,
    run_finish,
    run_heartbeat,
    run_start,
)
from runs.tests.factories import TunixRunFactory
from tunix_registry.actors import COMMAND

pytestmark = pytest.mark.django_db


def request(**fields: Any) -> TunixRunRequest:
    return TunixRunRequest(**{"dataset_key": "demo-v1", "model_id": "tiny-qwen3", **fields})


def outcome(status: str, *, metrics: int = 0) -> RunOutcome:
    return RunOutcome(
        status=status,
        message=f"ended {status}",
        metrics=[
            {
                "step": step,
                "loss": 1.0 / step,
                "eval_loss": None,
                "tokens_per_second": None,
                "elapsed_seconds": None,
            }
            for step in range(1, metrics + 1)
        ],
    )


def test_run_start_creates_the_running_row_its_event_and_names_its_directory() -> None:
    started = run_start(actor=COMMAND, request=request(num_epochs=4))
    assert isinstance(started, StartedRun)
    assert started.recorded
    assert started.directory == run_directory(run_id=started.run.run_id)
    stored = TunixRun.objects.get()
    assert stored.pk == started.run.pk
    assert (stored.status, stored.mode, stored.config["num_epochs"]) == ("running", "dry-run", 4)
    assert stored.supervisor_pid == os.getpid()
    assert stored.completed_at is None
    event = RunEvent.objects.get()
    assert (event.from_status, event.to_status, event.reason) == (
        None,
        "running",
        "launched (dry-run)",
    )


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"dataset_key": "../etc"}, "dataset_key", "may contain only letters"),
        ({"output_dir": "../../x"}, "output_dir", "must stay inside the outputs directory"),
        ({"output_dir": "/etc/x"}, "output_dir", "allowed output roots"),
        ({"output_dir": " "}, "output_dir", "non-empty path"),
    ],
)
def test_run_start_refuses_a_bad_request_naming_the_field_and_writes_nothing(
    fields: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidRunRequest, match=message) as caught:
        run_start(actor=COMMAND, request=request(**fields))
    assert caught.value.field == field
    assert not TunixRun.objects.exists()


@pytest.mark.usefixtures("tunix_missing")
def test_run_start_refuses_a_local_run_without_the_runtime() -> None:
    with pytest.raises(TunixRuntimeUnavailable):
        run_start(actor=COMMAND, request=request(dry_run=False))
    assert not TunixRun.objects.exists()


def test_run_finish_tells_the_winner_from_the_loser() -> None:
    row = TunixRunFactory.create(status=RunStatus.RUNNING, message="")
    # Two finishers holding their own copy of the running row.
    first, second = TunixRun.objects.get(pk=row.pk), TunixRun.objects.get(pk=row.pk)
    assert (
        run_finish(actor=COMMAND, run=first, outcome=outcome("completed", metrics=2), reason="a")
        is True
    )
    assert (
        run_finish(actor=COMMAND, run=second, outcome=outcome("failed", metrics=5), reason="b")
        is False
    )
    row.refresh_from_db()
    assert (row.status, row.message, row.metrics_steps) == ("completed", "ended completed", 2)
    assert list(RunEvent.objects.values_list("from_status", "to_status", "reason")) == [
        ("running", "completed", "a")
    ]
    assert RunMetric.objects.filter(run=row).count() == 2
    # The loser's copy is left as it was: run_finish writes the database only.
    assert second.status == "running"


def test_run_finish_of_a_finished_run_changes_nothing() -> None:
    row = TunixRunFactory.create(status=RunStatus.TIMEOUT, message="kept")
    assert run_finish(actor=COMMAND, run=row, outcome=outcome("completed"), reason="late") is False
    row.refresh_from_db()
    assert (row.status, row.message) == ("timeout", "kept")
    assert not RunEvent.objects.exists()


def failing_updates(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
    if sql.lstrip().upper().startswith("UPDATE"):
        raise DatabaseError("the database is gone")
    return execute(sql, *args)


def test_run_finish_keeps_the_outcome_when_the_database_fails(data_dir: Path) -> None:
    row = TunixRunFactory.create(status=RunStatus.RUNNING, message="")
    finished = outcome("completed", metrics=1)
    finished.completed_at = row.started_at + timedelta(seconds=2)
    with connection.execute_wrapper(failing_updates):
        won = run_finish(actor=COMMAND, run=row, outcome=finished, reason="x")
    assert won is False
    assert (run_directory(run_id=row.run_id) / OUTCOME_FILE).is_file()
    assert pending_outcome_load(run_id=row.run_id) == finished
    row.refresh_from_db()
    assert row.status == "running"
    assert not RunEvent.objects.exists()


def test_a_run_the_database_could_not_record_is_executed_and_nothing_written(
    data_dir: Path,
) -> None:
    dataset_with_traces(count=2)
    unsaved = TunixRun(
        dataset_key="demo-v1",
        model_id="tiny-qwen3",
        mode="dry-run",
        status=RunStatus.RUNNING,
        started_at=timezone.now(),
        output_dir="outputs/x",
        config=request().model_dump(mode="json"),
    )
    started = StartedRun(
        run=unsaved,
        directory=run_directory(run_id=unsaved.run_id),
        recorded=False,
        actor=COMMAND,
    )
    run = run_execute(started=started)
    assert run is unsaved
    assert (run.status, run.message) == ("completed", "Dry-run validation successful")
    assert "2 traces sampled" in run.stdout
    assert run.completed_at is not None and run.duration_seconds is not None
    assert not TunixRun.objects.exists()
    assert not started.directory.exists()


def test_run_execute_records_the_outcome_on_the_started_row() -> None:
    dataset_with_traces(count=1)
    started = run_start(actor=COMMAND, request=request())
    run = run_execute(started=started)
    assert run.status == "completed"
    stored = TunixRun.objects.get()
    assert (stored.status, stored.stdout, stored.message) == (
        "completed",
        run.stdout,
        "Dry-run validation successful",
    )
    assert list(RunEvent.objects.order_by("created_at").values_list("to_status", flat=True)) == [
        "running",
        "completed",
    ]


# --- Queued runs -------------------------------------------------------------------------


def test_run_enqueue_writes_the_pending_row_its_event_and_its_task_together() -> None:
    run = run_enqueue(actor=COMMAND, request=request(dry_run=False))
    stored = TunixRun.objects.get()
    assert (stored.status, stored.mode, stored.queue, stored.message) == (
        "pending",
        "local",
        "default",
        "Local execution pending",
    )
    assert stored.task_id == run.task_id
    task = DBTaskResult.objects.get(id=run.task_id)
    assert (task.status, task.queue_name, task.args_kwargs["args"]) == (
        "READY",
        "default",
        [str(run.run_id)],
    )
    assert list(RunEvent.objects.values_list("from_status", "to_status", "reason")) == [
        (None, "pending", "queued (local) on default")
    ]


@pytest.mark.parametrize(
    ("fields", "queue", "field"),
    [({}, "nope", "queue"), ({"dataset_key": "../x"}, None, "dataset_key")],
)
def test_run_enqueue_refuses_before_writing_anything(
    fields: dict[str, Any], queue: str | None, field: str
) -> None:
    with pytest.raises(InvalidRunRequest) as caught:
        run_enqueue(actor=COMMAND, request=request(**fields), queue=queue)
    assert caught.value.field == field
    assert not TunixRun.objects.exists() and not DBTaskResult.objects.exists()


def test_run_enqueue_queues_nothing_when_the_database_refuses() -> None:
    def failing_inserts(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        if sql.lstrip().upper().startswith("INSERT"):
            raise DatabaseError("the database is gone")
        return execute(sql, *args)

    with connection.execute_wrapper(failing_inserts), pytest.raises(QueueUnavailable):
        run_enqueue(actor=COMMAND, request=request())
    assert not TunixRun.objects.exists() and not DBTaskResult.objects.exists()


def test_run_claim_wins_once() -> None:
    run = run_enqueue(actor=COMMAND, request=request())
    started = run_claim(run_id=run.run_id, worker_id="w1")
    assert started is not None and started.recorded
    assert (started.run.status, started.run.worker_id, started.run.message) == (
        "running",
        "w1",
        "Dry-run execution in progress",
    )
    assert started.run.supervisor_pid == os.getpid() and started.run.heartbeat_at is not None
    assert run_claim(run_id=run.run_id, worker_id="w2") is None
    assert list(RunEvent.objects.values_list("to_status", flat=True)) == ["pending", "running"]
    assert RunEvent.objects.last().reason.startswith("claimed by worker w1 on ")  # type: ignore[union-attr]


def test_run_cancel_of_a_pending_a_running_and_a_finished_run() -> None:
    pending = run_enqueue(actor=COMMAND, request=request())
    assert run_cancel(actor=COMMAND, run_id=pending.run_id) == "cancelled"
    stored = TunixRun.objects.get(pk=pending.pk)
    assert (stored.stderr, stored.message) == (
        CANCELLED_BEFORE_START,
        "Dry-run execution cancelled",
    )
    assert stored.completed_at is not None
    assert DBTaskResult.objects.get(id=pending.task_id).status == "FAILED"
    assert run_claim(run_id=pending.run_id, worker_id="w1") is None

    running = run_enqueue(actor=COMMAND, request=request())
    run_claim(run_id=running.run_id, worker_id="w1")
    assert run_cancel(actor=COMMAND, run_id=running.run_id) == "cancel_requested"
    assert run_cancel(actor=COMMAND, run_id=running.run_id) == "cancel_requested"
    assert list(
        RunEvent.objects.filter(run_id=running.run_id).values_list("to_status", flat=True)
    ) == ["pending", "running", "cancel_requested"]
    assert run_heartbeat(run_id=running.run_id) == "cancel_requested"

    with pytest.raises(RunAlreadyFinished, match="Run is already in terminal state: cancelled"):
        run_cancel(actor=COMMAND, run_id=pending.run_id)
    with pytest.raises(RunNotFound):
        run_cancel(actor=COMMAND, run_id=uuid.uuid4())
