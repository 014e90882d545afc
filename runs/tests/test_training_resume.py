"""Real LoRA training and a real resume through the registry.

The project's own trainer (`python -m runs.trainer`) trains the built-in tiny-qwen3:
a LoRA run exports its adapter and records what it trained; a full-weight run
cancelled after its first checkpoint is resumed by a second run, which restores
that checkpoint and trains to the end. Needs the `tunix` extra (skipped without
it, except in CI).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.db import OperationalError, connection
from django.test import Client

from datasets.tests.factories import dataset_with_traces
from runs.execution import run_execute
from runs.models import RunMetric, RunStatus, TunixRun
from runs.outputs import output_dir_absolute
from runs.schemas import TunixRunRequest
from runs.services import run_cancel, run_start
from tunix_registry.actors import COMMAND

pytestmark = [
    pytest.mark.tunix,
    pytest.mark.skipif(
        importlib.util.find_spec("tunix") is None and os.environ.get("CI") != "true",
        reason="the tunix extra is not installed (pip install -e '.[tunix]')",
    ),
]

T = TypeVar("T")
DEADLINE = 300.0


@pytest.fixture
def real_runtime(settings: Any) -> None:
    settings.TUNIX_RUNTIME_MODULE = "tunix"
    settings.TUNIX_TRAINER_COMMAND = [sys.executable, "-m", "runs.trainer"]
    settings.TUNIX_RUN_TIMEOUT_SECONDS = 600
    settings.TUNIX_HEARTBEAT_SECONDS = 0.5


def eventually(check: Callable[[], T], *, what: str) -> T:
    """Poll `check` until it returns something truthy (a locked database is polled again)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            value = check()
        except OperationalError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def last_metric_step(run_id: Any) -> int:
    steps = RunMetric.objects.filter(run_id=run_id).order_by("-step")
    step: int = steps.values_list("step", flat=True)[0]
    return step


@pytest.mark.django_db
@pytest.mark.usefixtures("real_runtime")
def test_a_lora_run_exports_its_adapter_and_records_what_it_trained(
    client: Client, data_dir: Path
) -> None:
    dataset_with_traces(name="sft", version="v1", count=16)
    response = client.post(
        "/api/tunix/run",
        data={
            "dataset_key": "sft-v1",
            "model_id": "tiny-qwen3",
            "dry_run": False,
            "num_epochs": 1,
            "batch_size": 4,
            "max_seq_length": 128,
            "learning_rate": 0.003,
            "lora": {
                "rank": 4,
                "alpha": 8.0,
                "target_modules": ["q_proj", "v_proj"],
                "export": "adapter",
            },
            "checkpoint_every_n_steps": 2,
        },
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "completed", body["stderr"][-2000:]
    assert body["lora"] == {
        "rank": 4,
        "alpha": 8.0,
        "dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
        "export": "adapter",
    }
    training = body["training"]
    assert 0 < training["trainable_parameters"] < training["parameters"]
    assert training["total_steps"] == training["trained_steps"] == 4
    # Every second step, and the first: a checkpoint manager with none saves the step it is at.
    assert training["checkpoint_steps"] == [1, 2, 4]
    assert training["export_format"] == "adapter"
    assert training["tokens_per_second"] > 0
    assert training["phases"]["train"] > 0

    # The adapter is what the run exported, and it is listed and downloadable.
    names = [a["name"] for a in body_artifacts(client, body["run_id"])]
    assert {"model/adapter_model.safetensors", "model/adapter_config.json"} <= set(names)
    adapter_config = json.loads(
        (output_dir_absolute(body["output_dir"]) / "model" / "adapter_config.json").read_text()
    )
    assert adapter_config["r"] == 4
    assert sorted(adapter_config["target_modules"]) == ["q_proj", "v_proj"]
    download = client.get(
        f"/api/tunix/runs/{body['run_id']}/artifacts/model/adapter_config.json/download"
    )
    assert download.status_code == 200
    assert json.loads(b"".join(download.streaming_content)) == adapter_config  # type: ignore[attr-defined]


def body_artifacts(client: Client, run_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/tunix/runs/{run_id}/artifacts")
    assert response.status_code == 200
    artifacts: list[dict[str, Any]] = response.json()["artifacts"]
    return artifacts


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("real_runtime")
def test_a_cancelled_run_is_resumed_from_its_last_checkpoint(client: Client) -> None:
    dataset_with_traces(name="sft", version="v1", count=8)
    hyper = {"num_epochs": 25, "batch_size": 1, "max_seq_length": 128, "learning_rate": 0.003}
    request = TunixRunRequest(
        dataset_key="sft-v1",
        model_id="tiny-qwen3",
        dry_run=False,
        checkpoint_every_n_steps=5,
        **hyper,  # type: ignore[arg-type]
    )
    started = run_start(actor=COMMAND, request=request)
    result: dict[str, TunixRun] = {}

    def execute() -> None:
        try:
            result["run"] = run_execute(started=started)
        finally:
            connection.close()

    thread = threading.Thread(target=execute, daemon=True)
    thread.start()
    source_id = started.run.run_id
    checkpoints = output_dir_absolute(started.run.output_dir) / "checkpoints"
    eventually(
        lambda: (
            checkpoints.is_dir()
            and any(p.name.isdigit() and int(p.name) >= 5 for p in checkpoints.iterdir())
        ),
        what="a finalized checkpoint after the first step's",
    )
    assert eventually(lambda: run_cancel(actor=COMMAND, run_id=source_id), what="cancel") in (
        "cancel_requested",
        "cancelled",
    )
    thread.join(DEADLINE)
    assert not thread.is_alive(), "the cancelled run did not end"
    source = TunixRun.objects.get(pk=source_id)
    assert source.status == RunStatus.CANCELLED
    assert source.training is not None
    left = source.training["checkpoint_steps"]
    assert left[-1] >= 5 and all(step == 1 or step % 5 == 0 for step in left)
    total = 8 * 25
    assert left[-1] < total

    response = client.post(
        "/api/tunix/run",
        data={
            "dataset_key": "sft-v1",
            "model_id": "tiny-qwen3",
            "dry_run": False,
            "resume_from": str(source_id),
            **hyper,
        },
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "completed", body["stderr"][-2000:]
    assert body["resumed_from"] == str(source_id)
    training = body["training"]
    assert training["resumed_step"] == left[-1]
    assert training["restore_seconds"] is not None and training["restore_seconds"] >= 0
    assert training["total_steps"] == total
    assert training["trained_steps"] == total - left[-1]
    assert f"resume: linked step {left[-1]}" in body["stdout"] + body["stderr"]
    # Its metrics start after the restored step and end at the last one.
    steps = list(RunMetric.objects.filter(run_id=body["run_id"]).values_list("step", flat=True))
    assert min(steps) > left[-1]
    assert last_metric_step(body["run_id"]) == total
    # The source is unchanged, and knows which run continued it.
    again = TunixRun.objects.get(pk=source_id)
    assert again.training == source.training
    assert list(again.resumed_by.values_list("run_id", flat=True)) == [
        TunixRun.objects.get(pk=body["run_id"]).run_id
    ]
