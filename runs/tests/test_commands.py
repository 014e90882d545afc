"""manage.py tunix_run: the same launch as the API, outcome printed, exit code meaningful."""

from __future__ import annotations

import os
import time
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from datasets.tests.factories import dataset_with_traces
from runs.models import TunixRun
from runs.runtime import RUNTIME_UNAVAILABLE_MESSAGE
from runs.selectors import run_directory

pytestmark = pytest.mark.django_db


def run_command(*args: str) -> str:
    out = StringIO()
    call_command("tunix_run", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_dry_run_prints_the_outcome() -> None:
    dataset_with_traces(count=2)
    out = run_command("demo-v1", "google/gemma-2b-it", "--epochs", "5", "--learning-rate", "0.01")
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
def test_local_without_runtime_is_a_command_error() -> None:
    with pytest.raises(CommandError) as caught:
        run_command("demo-v1", "m", "--local")
    assert str(caught.value) == RUNTIME_UNAVAILABLE_MESSAGE
    assert not TunixRun.objects.exists()


@pytest.mark.usefixtures("fake_trainer")
def test_local_run_prints_metrics_excerpts_and_log_location(settings: Any) -> None:
    dataset_with_traces(count=3)
    out = run_command("demo-v1", "fake-ok", "--local", "--batch-size", "2")
    run = TunixRun.objects.get()
    assert run.mode == "local" and run.status == "completed"
    assert "exit code: 0" in out
    assert "metrics: 30 steps, final loss 1.25" in out
    assert "--- stdout (last 20 lines) ---" in out
    assert "done" in out
    assert f"logs: {run_directory(run_id=run.run_id)}\n" in out
    assert run.config["batch_size"] == 2


@pytest.mark.usefixtures("fake_trainer")
def test_local_failure_shows_stderr_and_exits_non_zero() -> None:
    dataset_with_traces(count=1)
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("tunix_run", "demo-v1", "fake-fail", "--local", stdout=out, stderr=StringIO())
    assert "exit code: 3" in out.getvalue()
    assert "error: unknown model" in out.getvalue()


@pytest.mark.usefixtures("fake_trainer")
def test_local_run_shows_the_trainers_latest_line_while_it_runs(
    settings: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.TUNIX_RUN_TIMEOUT_SECONDS = 2
    dataset_with_traces(count=1)
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="ended timeout"):
        call_command("tunix_run", "demo-v1", "fake-sleep", "--local", stdout=out, stderr=err)
    assert "Execution timeout (exceeded 2 seconds)" in out.getvalue()
    # The progress line (tqdm) goes to the process's stderr.
    assert "running: started, sleeping" in capsys.readouterr().err


@pytest.mark.usefixtures("fake_trainer")
def test_local_run_follows_its_own_directory_not_the_newest_one(
    settings: Any, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.TUNIX_RUN_TIMEOUT_SECONDS = 2
    dataset_with_traces(count=1)
    # Another run's directory, touched later than this launch's will ever be.
    other = data_dir / "runs" / "another-run"
    other.mkdir(parents=True)
    (other / "stdout.log").write_text("a line of another run\n")
    later = time.time() + 3600
    os.utime(other, (later, later))
    out = StringIO()
    with pytest.raises(CommandError, match="ended timeout"):
        call_command("tunix_run", "demo-v1", "fake-sleep", "--local", stdout=out, stderr=StringIO())
    run = TunixRun.objects.get()
    err = capsys.readouterr().err
    assert "running: started, sleeping" in err
    assert "another run" not in err
    assert f"logs: {run_directory(run_id=run.run_id)}\n" in out.getvalue()
