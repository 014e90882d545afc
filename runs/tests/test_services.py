"""The run's state transitions (run_start, run_finish) and how execution uses them."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import DatabaseError, connection
from django.utils import timezone

from datasets.tests.factories import dataset_with_traces
from runs.execution import run_execute
from runs.models import RunEvent, RunMetric, RunStatus, TunixRun
from runs.outcomes import OUTCOME_FILE, RunOutcome, pending_outcome_load
from runs.schemas import TunixRunRequest
from runs.selectors import run_directory
from runs.services import (
    InvalidRunRequest,
    StartedRun,
    TunixRuntimeUnavailable,
    run_finish,
    run_start,
)
from runs.tests.factories import TunixRunFactory

pytestmark = pytest.mark.django_db


def request(**fields: Any) -> TunixRunRequest:
    return TunixRunRequest(**{"dataset_key": "demo-v1", "model_id": "m", **fields})


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
    started = run_start(request=request(num_epochs=4))
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
        run_start(request=request(**fields))
    assert caught.value.field == field
    assert not TunixRun.objects.exists()


@pytest.mark.usefixtures("tunix_missing")
def test_run_start_refuses_a_local_run_without_the_runtime() -> None:
    with pytest.raises(TunixRuntimeUnavailable):
        run_start(request=request(dry_run=False))
    assert not TunixRun.objects.exists()


def test_run_finish_tells_the_winner_from_the_loser() -> None:
    row = TunixRunFactory.create(status=RunStatus.RUNNING, message="")
    # Two finishers holding their own copy of the running row.
    first, second = TunixRun.objects.get(pk=row.pk), TunixRun.objects.get(pk=row.pk)
    assert run_finish(run=first, outcome=outcome("completed", metrics=2), reason="a") is True
    assert run_finish(run=second, outcome=outcome("failed", metrics=5), reason="b") is False
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
    assert run_finish(run=row, outcome=outcome("completed"), reason="late") is False
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
        won = run_finish(run=row, outcome=finished, reason="x")
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
        model_id="m",
        mode="dry-run",
        status=RunStatus.RUNNING,
        started_at=timezone.now(),
        output_dir="outputs/x",
        config=request().model_dump(mode="json"),
    )
    started = StartedRun(
        run=unsaved, directory=run_directory(run_id=unsaved.run_id), recorded=False
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
    started = run_start(request=request())
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
