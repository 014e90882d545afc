"""A real evaluation: tiny-qwen3 trained by a worker, then evaluated by the same worker.

A real worker (`manage.py run_worker`) with the real trainer (`python -m runs.trainer`)
and the real engine (`python -m evaluations.engine`): a run queued with
`evaluate_on: held_out` is trained; the evaluation queued when it completes has its
exported model answer the two items its trainer held out; a baseline launched by
`manage.py evaluate_run --baseline --wait` has its base model answer the same two.
Needs the `tunix` extra (skipped without it, except in CI).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from datasets.tests.factories import dataset_with_traces
from evaluations import execution
from evaluations.models import Evaluation, EvaluationItem
from runs.schemas import TunixRunRequest
from runs.services import run_enqueue
from runs.tests.test_worker import Registry, registry, wait_for  # noqa: F401 - the fixture
from tunix_registry.actors import COMMAND

pytestmark = [
    pytest.mark.tunix,
    pytest.mark.skipif(
        importlib.util.find_spec("tunix") is None and os.environ.get("CI") != "true",
        reason="the tunix extra is not installed (pip install -e '.[tunix]')",
    ),
]


def test_a_worker_trains_a_run_then_evaluates_it_and_its_base_on_the_held_out_items(
    registry: Registry,  # noqa: F811 - the fixture
    settings: Any,
) -> None:
    settings.TUNIX_RUNTIME_MODULE = "tunix"
    registry.env.update(
        TUNIX_RUNTIME_MODULE="tunix",
        TUNIX_TRAINER_COMMAND=shlex.join([sys.executable, "-m", "runs.trainer"]),
        TUNIX_EVALUATION_COMMAND=shlex.join([sys.executable, "-m", "evaluations.engine"]),
        TUNIX_RUN_TIMEOUT_SECONDS="600",
        TUNIX_EVALUATION_TIMEOUT_SECONDS="600",
    )
    dataset_with_traces(name="sft", version="v1", count=24)
    run = run_enqueue(
        actor=COMMAND,
        request=TunixRunRequest(
            dataset_key="sft-v1",
            model_id="tiny-qwen3",
            dry_run=False,
            num_epochs=1,
            batch_size=4,
            max_seq_length=128,
            learning_rate=0.003,
            evaluate_on="held_out",
        ),
    )
    registry.worker("w1")
    trained = registry.wait_run(run.run_id, "completed", "failed", "timeout")
    assert trained.status == "completed", trained.stderr[-2000:]
    assert (trained.training or {}).get("export_format") == "full"

    def finished(baseline: bool) -> Evaluation | None:
        evaluation = Evaluation.objects.filter(run=trained, baseline=baseline).first()
        done = ("completed", "failed", "cancelled")
        return evaluation if evaluation and evaluation.status in done else None

    # The evaluation queued when the run completed; then its base model, by the command.
    on_completion = wait_for(
        "the evaluation on completion", lambda: finished(False), output=registry.output
    )
    out = StringIO()
    call_command(
        "evaluate_run",
        str(trained.run_id),
        "--baseline",
        "--max-new-tokens",
        "8",
        "--batch-size",
        "2",
        "--wait",
        stdout=out,
        verbosity=0,
    )
    base = finished(True)
    assert base is not None, out.getvalue()
    assert f"evaluation {base.evaluation_id}: completed" in out.getvalue()
    for evaluation, baseline in ((on_completion, False), (base, True)):
        assert evaluation.status == "completed", evaluation.stderr[-2000:]
        assert (evaluation.worker_id, evaluation.held_out) == ("w1", True)
        assert evaluation.baseline is baseline
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
        # The base model is named by its id; the trained one is the run's exported model.
        assert ("model_id: tiny-qwen3" in config) is baseline
