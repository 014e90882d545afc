"""manage.py tunix_run: the same launch as the API, outcome printed, exit code meaningful."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django_tasks_db.models import DBTaskResult

from datasets.tests.factories import dataset_with_traces
from runs.models import RunLogChunk, TunixRun
from runs.tests.factories import TunixRunFactory

pytestmark = pytest.mark.django_db


def run_command(*args: str) -> str:
    out = StringIO()
    call_command("tunix_run", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_dry_run_prints_the_outcome() -> None:
    dataset_with_traces(count=2)
    out = run_command("demo-v1", "tiny-qwen3", "--epochs", "5", "--learning-rate", "0.01")
    run = TunixRun.objects.get()
    assert f"run {run.run_id}: completed (dry-run)" in out
    assert "message: Dry-run validation successful" in out
    assert "2 traces sampled" in out
    assert run.config["num_epochs"] == 5
    assert run.config["learning_rate"] == 0.01
    assert run.mode == "dry-run"


def test_failed_run_exits_non_zero_and_is_recorded() -> None:
    with pytest.raises(CommandError) as caught:
        run_command("missing-v1", "m")
    assert caught.value.returncode == 1
    assert "ended failed" in str(caught.value)
    assert TunixRun.objects.get().status == "failed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo-v1", "m", "--epochs", "0"], "num_epochs"),
        (["demo-v1", "m", "--learning-rate", "3"], "learning_rate"),
        (["../etc", "m"], "dataset_key"),
        (["demo-v1", "m", "--output-dir", "../../x"], "output_dir"),
    ],
)
def test_invalid_input_is_a_clear_command_error(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run_command(*args)
    assert not TunixRun.objects.exists()


@pytest.mark.usefixtures("tunix_missing")
def test_local_queues_the_run_for_a_worker_even_without_the_runtime_here() -> None:
    # The worker that executes it, maybe on another machine, checks the runtime.
    out = run_command("demo-v1", "m", "--local", "--batch-size", "2")
    run = TunixRun.objects.get()
    assert (run.status, run.mode, run.queue, run.config["batch_size"]) == (
        "pending",
        "local",
        "default",
        2,
    )
    assert out.splitlines() == [
        f"run {run.run_id}: pending (local) on queue default",
        f"follow it on its page /runs/{run.run_id}/ or with "
        f"GET /api/tunix/runs/{run.run_id}/status",
    ]
    assert DBTaskResult.objects.get(id=run.task_id).status == "READY"


def test_local_on_a_named_queue(settings: Any) -> None:
    settings.TUNIX_QUEUES = ["default", "gpu"]
    settings.TASKS = {"default": {**settings.TASKS["default"], "QUEUES": settings.TUNIX_QUEUES}}
    run_command("demo-v1", "m", "--local", "--queue", "gpu")
    run = TunixRun.objects.get()
    assert run.queue == "gpu"
    assert DBTaskResult.objects.get(id=run.task_id).queue_name == "gpu"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo-v1", "m", "--local", "--queue", "nope"], "Unknown queue 'nope'"),
        (["demo-v1", "m", "--wait"], "--wait and --queue go with --local"),
        (["demo-v1", "m", "--queue", "default"], "--wait and --queue go with --local"),
    ],
)
def test_queue_and_wait_mistakes_are_command_errors(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run_command(*args)
    assert not TunixRun.objects.exists()


def test_the_progress_line_of_a_followed_run() -> None:
    # A worker executes the run; here the row's changes stand for it.
    from runs.management.commands import tunix_run

    run = TunixRunFactory.create(
        status="pending", mode="local", queue="default", message="Local execution pending"
    )
    line = tunix_run._progress(run)
    assert line == "pending | #1 on default, 0 worker(s) taking it"
    TunixRun.objects.filter(pk=run.pk).update(
        status="running", worker_id="w1", metrics_steps=12, final_loss=0.5
    )
    RunLogChunk.objects.create(run=run, seq=1, stream="stdout", chunk="step 11\nstep 12 loss 0.5\n")
    run.refresh_from_db()
    assert tunix_run._progress(run) == "running | on w1 | step 12, loss 0.5 | step 12 loss 0.5"
