"""A real Tunix training through the registry, launched by POST /api/tunix/run.

The project's own trainer (`python -m runs.trainer`, the default TUNIX_TRAINER_COMMAND)
fine-tunes the built-in tiny-qwen3 on a generated dataset; the run ends completed
with its metrics ingested, its checkpoint on disk and its page showing them.
Needs the `tunix` extra (skipped without it, except in CI).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from datasets.tests.factories import dataset_with_traces
from runs.models import RunLogChunk, RunMetric, TunixRun
from runs.selectors import run_directory

pytestmark = [
    pytest.mark.tunix,
    pytest.mark.django_db,
    pytest.mark.skipif(
        importlib.util.find_spec("tunix") is None and os.environ.get("CI") != "true",
        reason="the tunix extra is not installed (pip install -e '.[tunix]')",
    ),
]


@pytest.fixture
def real_runtime(settings: Any) -> None:
    import sys

    settings.TUNIX_RUNTIME_MODULE = "tunix"
    settings.TUNIX_TRAINER_COMMAND = [sys.executable, "-m", "runs.trainer"]
    settings.TUNIX_RUN_TIMEOUT_SECONDS = 600


def launch(client: Client, **body: Any) -> dict[str, Any]:
    response = client.post(
        "/api/tunix/run",
        data={"dataset_key": "sft-v1", "dry_run": False, **body},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    result: dict[str, Any] = response.json()
    return result


@pytest.mark.usefixtures("real_runtime")
def test_a_real_tiny_training_is_recorded_with_its_metrics(client: Client, data_dir: Path) -> None:
    dataset_with_traces(name="sft", version="v1", count=24)
    body = launch(
        client,
        model_id="tiny-qwen3",
        num_epochs=2,
        batch_size=4,
        max_seq_length=128,
        learning_rate=0.003,
    )
    assert body["status"] == "completed", body["stderr"][-2000:]
    assert body["exit_code"] == 0
    assert body["message"] == "Local execution completed successfully"

    run = TunixRun.objects.get(pk=body["run_id"])
    losses = list(RunMetric.objects.filter(run=run).order_by("step").values_list("loss", flat=True))
    assert len(losses) >= 2
    assert losses[-1] < losses[0]
    assert body["metrics"]["steps"] == run.metrics_steps
    assert body["metrics"]["final_loss"] == pytest.approx(losses[-1])
    assert body["metrics"]["best_eval_loss"] is not None
    assert body["metrics"]["tokens_per_second"] > 0

    checkpoint = data_dir / body["output_dir"]
    assert checkpoint.is_dir() and any(checkpoint.iterdir())
    # The artifacts are the files directly in the output directory, then the exported model's.
    assert run.artifacts is not None
    top = sorted(p.name for p in checkpoint.iterdir() if p.is_file() and not p.is_symlink())
    model = sorted(f"model/{p.name}" for p in (checkpoint / "model").iterdir() if p.is_file())
    assert "model/config.json" in model
    assert [a["name"] for a in run.artifacts] == top + model
    # What the trainer reported is on the run: a full-weight run trains every parameter.
    training = body["training"]
    assert training["parameters"] > 0
    assert training["trainable_parameters"] == training["parameters"]
    last_step = RunMetric.objects.filter(run=run).order_by("-step").values_list("step", flat=True)
    assert training["trained_steps"] == training["total_steps"] == last_step[0]
    assert training["export_format"] == "full"
    assert training["checkpoint_steps"][-1:] == [training["total_steps"]]
    assert training["resumed_step"] is None
    # The exported model's card names the run that trained it.
    card = (checkpoint / "model" / "README.md").read_text()
    assert str(run.run_id) in card
    summary = json.loads((checkpoint / "run_summary.json").read_text())
    assert summary["run_id"] == str(run.run_id)
    # The supervisor stored the whole output in the database as it came.
    stored = "".join(
        RunLogChunk.objects.filter(run=run, stream="stdout").values_list("chunk", flat=True)
    )
    assert stored == (run_directory(run_id=run.run_id) / "stdout.log").read_text()

    series = client.get(f"/api/tunix/runs/{run.run_id}/metrics").json()["metrics"]
    assert [m["loss"] for m in series] == pytest.approx(losses)
    page = client.get(f"/runs/{run.run_id}/")
    assert page.status_code == 200
    assert "<svg" in page.content.decode()


@pytest.mark.usefixtures("real_runtime")
def test_an_unknown_model_is_a_failed_run_with_the_reason_in_stderr(client: Client) -> None:
    dataset_with_traces(name="sft", version="v1", count=4)
    body = launch(client, model_id="no-such-model-anywhere")
    assert body["status"] == "failed"
    assert body["exit_code"] not in (None, 0)
    assert body["message"] == f"Local execution failed with exit code {body['exit_code']}"
    assert "no-such-model-anywhere" in body["stderr"]
    assert body["metrics"] is None
