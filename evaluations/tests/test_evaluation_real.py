"""A real evaluation: tiny-qwen3 trained through the registry, then evaluated by the engine.

The trainer (`python -m runs.trainer`) and the engine (`python -m evaluations.engine`)
are the real ones: the trained run's exported model answers the two items its trainer
held out, and its base model does the same as a baseline. Needs the `tunix` extra
(skipped without it, except in CI).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from typing import Any

import pytest
from django.test import Client

from datasets.tests.factories import dataset_with_traces
from evaluations import execution, services
from evaluations.models import Evaluation, EvaluationItem

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
    settings.TUNIX_RUNTIME_MODULE = "tunix"
    settings.TUNIX_TRAINER_COMMAND = [sys.executable, "-m", "runs.trainer"]
    settings.TUNIX_EVALUATION_COMMAND = [sys.executable, "-m", "evaluations.engine"]
    settings.TUNIX_RUN_TIMEOUT_SECONDS = 600
    settings.TUNIX_EVALUATION_TIMEOUT_SECONDS = 600


def evaluate(client: Client, run_id: str, **body: Any) -> Evaluation:
    response = client.post(
        f"/api/tunix/runs/{run_id}/evaluations", data=body, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    evaluation_id = uuid.UUID(response.json()["evaluation_id"])
    claimed = services.evaluation_claim(evaluation_id=evaluation_id, worker_id="test")
    assert claimed is not None
    execution.evaluation_execute(claimed)
    return Evaluation.objects.get(pk=evaluation_id)


@pytest.mark.usefixtures("real_runtime")
def test_a_trained_model_and_its_base_are_evaluated_on_the_held_out_items(
    client: Client,
) -> None:
    dataset_with_traces(name="sft", version="v1", count=24)
    trained = client.post(
        "/api/tunix/run",
        data={
            "dataset_key": "sft-v1",
            "model_id": "tiny-qwen3",
            "dry_run": False,
            "num_epochs": 1,
            "batch_size": 4,
            "max_seq_length": 128,
            "learning_rate": 0.003,
        },
        content_type="application/json",
    ).json()
    assert trained["status"] == "completed", trained["stderr"][-2000:]
    assert trained["training"]["export_format"] == "full"

    generation = {"max_new_tokens": 8, "batch_size": 2}
    for baseline in (False, True):
        evaluation = evaluate(client, trained["run_id"], baseline=baseline, generation=generation)
        assert evaluation.status == "completed", evaluation.stderr[-2000:]
        assert evaluation.held_out and evaluation.baseline is baseline
        assert (evaluation.items_total, evaluation.items_done) == (2, 2)
        scores = evaluation.scores or {}
        assert set(scores) == {"answer_correctness@v1", "exact_match@v1"}
        assert all(score["count"] == 2 for score in scores.values())
        assert all(0.0 <= score["mean"] <= 1.0 for score in scores.values())
        assert evaluation.items_per_second and evaluation.items_per_second > 0
        items = list(EvaluationItem.objects.filter(evaluation=evaluation).order_by("index"))
        assert [item.index for item in items] == [0, 1]
        assert all(item.prompt.endswith("<start_of_turn>model\n") for item in items)
        assert all(set(item.scores) == set(scores) for item in items)
        config = (
            execution.evaluation_directory(evaluation.evaluation_id) / "eval.yaml"
        ).read_text()
        assert ("model_id: tiny-qwen3" in config) is baseline
