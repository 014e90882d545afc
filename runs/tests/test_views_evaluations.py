"""A run page's Evaluations panel: scores, gains over the base model, progress, the form."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from datasets.tests.factories import dataset_with_traces
from evaluations.models import Evaluation, EvaluationStatus
from runs.models import RunMode, RunStatus, TunixRun
from runs.tests.factories import TunixRunFactory

pytestmark = pytest.mark.django_db


def local_run(**fields: Any) -> TunixRun:
    run: TunixRun = TunixRunFactory.create(
        mode=RunMode.LOCAL,
        exit_code=0,
        dataset_key="sft-v1",
        training={"export_format": "full", "checkpoint_steps": [4]},
        **fields,
    )
    return run


def evaluation(
    run: TunixRun, *, baseline: bool = False, mean: float | None = None, **fields: Any
) -> Evaluation:
    status = fields.pop("status", EvaluationStatus.COMPLETED if mean is not None else "pending")
    scores = (
        {"answer_correctness@v1": {"mean": mean, "count": 10, "ci_low": mean / 2, "ci_high": 1.0}}
        if mean is not None
        else None
    )
    return Evaluation.objects.create(
        evaluation_id=uuid.uuid4(),
        run=run,
        baseline=baseline,
        dataset_key=run.dataset_key,
        held_out=True,
        metrics=["answer_correctness@v1"],
        generation={"max_new_tokens": 64, "temperature": 0.0, "seed": 0, "batch_size": 8},
        status=status,
        queue="default",
        created_at=fields.pop("created_at", timezone.now()),
        scores=scores,
        **fields,
    )


def panel(client: Client, run: TunixRun) -> str:
    html = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    assert 'data-testid="run:evaluations"' in html
    return html.split('data-testid="run:evaluations"')[1].split("</section>")[0]


def test_the_panel_shows_scores_and_the_gain_over_the_base_model(client: Client) -> None:
    run = local_run()
    earlier = timezone.now() - timedelta(minutes=5)
    evaluation(run, baseline=True, mean=0.25, created_at=earlier)
    evaluation(run, mean=0.75)
    html = panel(client, run)
    assert html.count('data-testid="run:evaluation"') == 2
    assert "base model (tiny-qwen3)" in html and ">trained<" in html
    assert "held out of sft-v1" in html
    assert "0.750 (0.375–1.000)" in html
    gains = [
        cell.split("</td>")[0] for cell in html.split('data-testid="run:evaluation-gain">')[1:]
    ]
    assert gains == ["+0.500", "—"]
    # Nothing is under way: the panel does not poll.
    assert "hx-trigger" not in html.split(">")[0]


def test_an_evaluation_under_way_shows_its_progress_and_the_panel_polls(client: Client) -> None:
    run = local_run()
    evaluation(run, status=EvaluationStatus.RUNNING, items_total=40, items_done=12)
    page = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    opening = page.split('data-testid="run:evaluations"')[1].split(">")[0]
    assert f'hx-get="{reverse("runs:evaluations", args=[run.run_id])}"' in opening
    assert 'hx-trigger="every 2s"' in opening
    html = panel(client, run)
    assert '<progress max="40" value="12"' in html and "12/40" in html
    swapped = client.get(reverse("runs:evaluations", args=[run.run_id]))
    assert swapped.status_code == 200
    assert (
        swapped.content.decode().lstrip().startswith('<section class="panel" id="run-evaluations"')
    )
    assert "no-cache" in swapped["Cache-Control"]


def test_a_dry_run_has_no_evaluations_panel(client: Client) -> None:
    run = TunixRunFactory.create()
    html = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    assert 'data-testid="run:evaluations"' not in html


def test_the_form_queues_an_evaluation_of_the_run(client: Client) -> None:
    dataset_with_traces(name="sft", version="v1", count=3)
    run = local_run()
    assert 'data-testid="run:evaluate-form"' in panel(client, run)
    response = client.post(
        reverse("runs:evaluate", args=[run.run_id]), {"dataset": "sft-v1", "baseline": "1"}
    )
    assert response.status_code == 302
    assert response["Location"] == f"/runs/{run.run_id}/#run-evaluations"
    queued = Evaluation.objects.get(run=run)
    assert (queued.status, queued.baseline, queued.held_out) == ("pending", True, False)
    assert queued.launched_by is not None and queued.launched_by.username == "launcher"
    followed = client.get(response["Location"]).content.decode()
    assert "Evaluation queued" in followed
    assert 'data-evaluation-id="' + str(queued.evaluation_id) in followed


@pytest.mark.parametrize(
    ("status", "dataset", "message"),
    [
        (RunStatus.FAILED, "sft-v1", "only a completed run has a trained model"),
        (RunStatus.COMPLETED, "missing-v1", "Dataset not found: missing-v1"),
        (RunStatus.COMPLETED, "held_out", "has 3 traces"),
        (RunStatus.COMPLETED, "../../etc", "Evaluation refused:"),
    ],
)
def test_a_refused_evaluation_is_a_message_and_creates_nothing(
    client: Client, status: str, dataset: str, message: str
) -> None:
    dataset_with_traces(name="sft", version="v1", count=3)
    run = local_run(status=status)
    response = client.post(
        reverse("runs:evaluate", args=[run.run_id]), {"dataset": dataset}, follow=True
    )
    assert message in response.content.decode()
    assert not Evaluation.objects.exists()


def test_only_a_launcher_may_evaluate(
    user_factory: Callable[..., Any], anon_client: Client
) -> None:
    run = local_run()
    viewer = Client()
    viewer.force_login(user_factory("viewer", username="viewer"))
    assert 'data-testid="run:evaluate-form"' not in panel(viewer, run)
    assert viewer.post(reverse("runs:evaluate", args=[run.run_id]), {}).status_code == 403
    assert anon_client.post(reverse("runs:evaluate", args=[run.run_id]), {}).status_code in (
        302,
        403,
    )
    assert client_get_status(viewer, reverse("runs:evaluate", args=[run.run_id])) == 405
    assert not Evaluation.objects.exists()


def client_get_status(client: Client, url: str) -> int:
    return client.get(url).status_code


def test_an_unknown_run_is_404(client: Client) -> None:
    assert client.post(reverse("runs:evaluate", args=[uuid.uuid4()]), {}).status_code == 404
    assert client.get(reverse("runs:evaluations", args=[uuid.uuid4()])).status_code == 404
