"""Evaluations executed by a real worker (`manage.py run_worker`), the fake engine as engine.

The worker shares this test's database (the `registry` fixture of runs/tests/test_worker.py)
and takes the evaluation's task from the queue as it takes a run's; `manage.py
evaluate_run --wait` follows it to its scores.
"""

from __future__ import annotations

import shlex
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from datasets.tests.factories import dataset_with_traces
from evaluations.models import Evaluation, EvaluationItem
from evaluations.tests.test_api_evaluations import FAKE_ENGINE, trained_run
from runs.processes import host_name
from runs.tests.test_worker import Registry, registry  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("registry")


def test_a_worker_executes_an_evaluation_and_the_command_prints_its_scores(
    registry: Registry,  # noqa: F811 - the fixture
) -> None:
    registry.env["TUNIX_EVALUATION_COMMAND"] = shlex.join([sys.executable, str(FAKE_ENGINE)])
    dataset_with_traces(name="sft", version="v1", count=30)
    run = trained_run()
    registry.worker("w1")
    out = StringIO()
    call_command("evaluate_run", str(run.run_id), "--wait", stdout=out, verbosity=0)
    evaluation = Evaluation.objects.get(run=run)
    assert evaluation.status == "completed", evaluation.stderr
    assert (evaluation.worker_id, evaluation.host) == ("w1", host_name())
    assert evaluation.items_total == 3
    assert EvaluationItem.objects.filter(evaluation=evaluation).count() == 3
    text = out.getvalue()
    assert f"evaluation {evaluation.evaluation_id}: pending on queue default" in text
    assert f"evaluation {evaluation.evaluation_id}: completed" in text
    assert "answer_correctness@v1: 0.6667 over 3 items (95% CI" in text
    # The fake engine answers "Answer: <expected>", which is never the expected text itself.
    assert "exact_match@v1: 0.0000 over 3 items" in text


def test_the_command_names_the_flag_or_the_problem(registry: Registry) -> None:  # noqa: F811
    dataset_with_traces(name="sft", version="v1", count=4)
    run = trained_run()
    for args, message in [
        (["--max-new-tokens", "0"], "--max-new-tokens:"),
        (["--metric", "bleu@v1"], "--metric:"),
        (["--dataset", "nope-v1"], "--dataset: Dataset not found: nope-v1"),
        ([], "--dataset: The run's dataset sft-v1 has 4 traces"),
    ]:
        with pytest.raises(CommandError, match=message):
            call_command("evaluate_run", str(run.run_id), *args, stdout=StringIO())
    assert not Evaluation.objects.exists()
