"""Local runs with a real trainer subprocess (runs/tests/fake_trainer.py)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client

from datasets.tests.factories import dataset_with_traces
from runs.models import RunMetric, TunixRun
from runs.outcomes import TRUNCATION_MARKER
from runs.selectors import run_directory, run_log_path

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fake_trainer")]


def launch(client: Client, model_id: str, **extra: Any) -> dict[str, Any]:
    body = {"dataset_key": "demo-v1", "model_id": model_id, "dry_run": False, **extra}
    response = client.post("/api/tunix/run", data=body, content_type="application/json")
    assert response.status_code == 200, response.content
    result: dict[str, Any] = response.json()
    return result


def pid_gone(pid: int) -> bool:
    """Gone, or a zombie nobody reaped yet (it no longer runs)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def test_successful_local_run_materialises_trains_and_ingests_metrics(
    client: Client, data_dir: Path
) -> None:
    dataset_with_traces(count=4)
    body = launch(client, "fake-ok", output_dir="exp/one", num_epochs=2)
    assert body["status"] == "completed"
    assert body["mode"] == "local"
    assert body["exit_code"] == 0
    assert body["message"] == "Local execution completed successfully"
    assert body["stdout"].startswith("dataset demo-v1.jsonl: 4 examples\n")
    assert body["stdout"].endswith("done\n")
    assert body["output_dir"] == "outputs/exp/one"
    assert body["metrics"] == {
        "steps": 30,
        "final_loss": 1.25,
        "best_eval_loss": 1.6,
        "tokens_per_second": 2000.0,
    }

    run = TunixRun.objects.get(pk=body["run_id"])
    run_dir = run_directory(run_id=run.run_id)
    assert run_dir == data_dir / "runs" / str(run.run_id)
    manifest = yaml.safe_load((run_dir / "manifest.yaml").read_text())
    assert manifest["dataset"]["path"] == "./datasets/demo-v1.jsonl"
    assert manifest["output"]["output_dir"] == str(data_dir.resolve() / "outputs/exp/one")
    assert manifest["training"]["num_epochs"] == 2
    assert len((run_dir / "datasets/demo-v1.jsonl").read_text().splitlines()) == 4
    assert (data_dir / "outputs/exp/one/checkpoint.txt").read_text() == "weights\n"
    assert run.host and run.pid and run.pid > 0
    assert run_log_path(run_id=run.run_id, stream="stdout") == run_dir / "stdout.log"
    assert (run_dir / "stdout.log").read_text() == run.stdout

    series = list(RunMetric.objects.filter(run=run).order_by("step").values_list("step", "loss"))
    assert series == [(10, 2.5), (20, 1.75), (30, 1.25)]
    metrics = client.get(f"/api/tunix/runs/{run.run_id}/metrics").json()["metrics"]
    assert metrics[1] == {
        "step": 20,
        "loss": 1.75,
        "eval_loss": 1.9,
        "tokens_per_second": 2000.0,
        "elapsed_seconds": 2.0,
    }
    assert client.get(f"/api/tunix/runs/{run.run_id}").json()["metrics"]["steps"] == 30


def test_output_is_truncated_at_10240_bytes_with_the_marker_and_logs_keep_all(
    client: Client,
) -> None:
    dataset_with_traces(count=1)
    body = launch(client, "fake-big")
    # 10,239 ASCII bytes, then "é" cut in half at the boundary: dropped.
    assert body["stdout"] == "a" * 10239 + TRUNCATION_MARKER
    assert body["stderr"] == "e" * 10240 + TRUNCATION_MARKER
    assert TRUNCATION_MARKER == "\n\n[... output truncated to 10240 bytes ...]"
    run = TunixRun.objects.get(pk=body["run_id"])
    assert run.stdout == body["stdout"]
    log = run_log_path(run_id=run.run_id, stream="stdout")
    assert log is not None
    assert log.read_bytes() == b"a" * 10239 + "é".encode() + b"b" * 2000
    stderr_log = run_log_path(run_id=run.run_id, stream="stderr")
    assert stderr_log is not None and stderr_log.stat().st_size == 11000


def test_non_zero_exit_is_a_failed_run_with_the_code(client: Client) -> None:
    dataset_with_traces(count=1)
    body = launch(client, "fake-fail")
    assert body["status"] == "failed"
    assert body["exit_code"] == 3
    assert body["message"] == "Local execution failed with exit code 3"
    assert body["stdout"] == "partial output\n"
    assert body["stderr"] == "error: unknown model\n"
    assert body["metrics"] is None
    run = TunixRun.objects.get(pk=body["run_id"])
    assert (run.status, run.exit_code) == ("failed", 3)


def test_timeout_kills_the_process_group_and_keeps_earlier_output(
    client: Client, settings: Any
) -> None:
    settings.TUNIX_RUN_TIMEOUT_SECONDS = 1
    dataset_with_traces(count=1)
    started = time.monotonic()
    body = launch(client, "fake-sleep")
    assert time.monotonic() - started < 15
    assert body["status"] == "timeout"
    assert body["exit_code"] is None
    assert body["message"] == "Local execution timed out after 1 seconds"
    assert body["stdout"] == "started, sleeping\n"
    assert body["stderr"] == (
        "a warning before the timeout\n\nExecution timeout (exceeded 1 seconds)"
    )
    assert body["duration_seconds"] >= 1
    run = TunixRun.objects.get(pk=body["run_id"])
    assert (run.status, run.exit_code) == ("timeout", None)
    assert run.completed_at is not None
    run_dir = run_directory(run_id=run.run_id)
    child = int((run_dir / "child.pid").read_text())
    assert run.pid is not None
    deadline = time.monotonic() + 5
    while not (pid_gone(child) and pid_gone(run.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pid_gone(child), "the trainer's child survived the timeout"
    assert pid_gone(run.pid)
    assert "Execution timeout (exceeded 1 seconds)" in (run_dir / "stderr.log").read_text()


def test_trainer_gets_a_scrubbed_environment(
    client: Client, monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://secret@db/x")
    monkeypatch.setenv("DJANGO_SECRET_KEY", "very-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws")
    dataset_with_traces(count=1)
    body = launch(client, "fake-env")
    assert body["status"] == "completed"
    env = json.loads((run_directory(run_id=body["run_id"]) / "env.json").read_text())
    allowed = {
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "PYTHONUNBUFFERED",
        "PYTHONPATH",
        "HF_HUB_OFFLINE",
        "TUNIX_OUTPUT_ROOTS",
        "TUNIX_MODEL_ROOTS",
        "TUNIX_RUN_ID",
        "LC_CTYPE",  # added by the interpreter itself under a C locale (PEP 538)
    }
    assert set(env) <= allowed, set(env) - allowed
    assert "very-secret" not in json.dumps(env)
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["TUNIX_RUN_ID"] == body["run_id"]
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["PYTHONPATH"] == str(django_settings.BASE_DIR)
    assert env["TUNIX_OUTPUT_ROOTS"].split(os.pathsep)[0] == str(data_dir / "outputs")


def test_local_run_of_a_missing_dataset_fails_in_preparation(client: Client) -> None:
    body = launch(client, "fake-ok", dataset_key="nope-v1")
    assert body["status"] == "failed"
    assert body["exit_code"] is None
    assert body["stderr"] == "Failed to prepare files: Dataset not found: nope-v1"
    assert body["message"] == "Local execution failed: file preparation error"
    assert TunixRun.objects.get(pk=body["run_id"]).status == "failed"


def test_a_trainer_command_that_does_not_exist_fails_the_run(client: Client, settings: Any) -> None:
    settings.TUNIX_TRAINER_COMMAND = ["/nonexistent/tunix-trainer"]
    dataset_with_traces(count=1)
    body = launch(client, "fake-ok")
    assert body["status"] == "failed"
    assert body["exit_code"] is None
    assert body["message"] == "Local execution failed: trainer could not be started"
    assert "/nonexistent" not in body["stderr"]


def test_an_unexpected_error_finishes_the_run_as_failed_without_leaking(
    client: Client, settings: Any
) -> None:
    # A broken setting makes waiting on the trainer raise TypeError mid-run.
    settings.TUNIX_RUN_TIMEOUT_SECONDS = "soon"
    dataset_with_traces(count=1)
    body = launch(client, "fake-sleep")
    assert body["status"] == "failed"
    assert body["message"] == "Run failed: internal error (details in the server log)"
    assert body["stderr"] == "Internal error: TypeError"
    assert not TunixRun.objects.filter(status="running").exists()
    # The trainer was started, then stopped with its group when the error struck.
    trainer = TunixRun.objects.get(pk=body["run_id"]).pid
    assert trainer is not None
    assert pid_gone(trainer)


@pytest.mark.django_db(transaction=True)
def test_the_row_is_running_while_the_trainer_runs(client: Client, data_dir: Path) -> None:
    dataset_with_traces(count=1)
    seen: dict[str, Any] = {}

    def observe() -> None:
        try:
            deadline = time.monotonic() + 20
            flags: list[Path] = []
            while not flags and time.monotonic() < deadline:
                flags = list((data_dir / "runs").glob("*/started.flag"))
                time.sleep(0.02)
            run = TunixRun.objects.get()
            seen.update(status=run.status, completed_at=run.completed_at, pid=run.pid)
            while run.pid is None and time.monotonic() < deadline:
                time.sleep(0.02)
                run.refresh_from_db()
            seen["pid"] = run.pid
            (flags[0].parent / "go.flag").write_text("go")
        finally:
            connection.close()

    watcher = threading.Thread(target=observe)
    watcher.start()
    body = launch(client, "fake-wait")
    watcher.join(30)
    assert seen["status"] == "running"
    assert seen["completed_at"] is None
    assert seen["pid"] == TunixRun.objects.get().pid
    assert body["status"] == "completed"
    assert body["stdout"] == "released\n"
