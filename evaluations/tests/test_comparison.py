"""Evaluation scores in a run comparison: the items compared, deltas, disagreements."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from evaluations.comparison import evaluation_comparison
from evaluations.models import Evaluation, EvaluationItem
from runs.compare import run_compare
from runs.models import RunMode, TunixRun
from runs.tests.factories import TunixRunFactory
from tunix_registry.tests.openapi_check import assert_fits

pytestmark = pytest.mark.django_db

METRIC = "answer_correctness@v1"


def evaluated(
    run: TunixRun,
    scores: list[float],
    *,
    dataset_key: str = "sft-v1",
    held_out: bool = True,
    baseline: bool = False,
    age_minutes: int = 0,
) -> Evaluation:
    evaluation = Evaluation.objects.create(
        evaluation_id=uuid.uuid4(),
        run=run,
        baseline=baseline,
        dataset_key=dataset_key,
        held_out=held_out,
        metrics=[METRIC],
        generation={"max_new_tokens": 8, "temperature": 0.0, "seed": 0, "batch_size": 8},
        status="completed",
        queue="default",
        created_at=timezone.now() - timedelta(minutes=age_minutes),
        items_total=len(scores),
        items_done=len(scores),
        scores={METRIC: {"mean": sum(scores) / len(scores), "count": len(scores)}},
    )
    EvaluationItem.objects.bulk_create(
        EvaluationItem(
            evaluation=evaluation,
            index=i,
            prompt=f"<script>q{i}</script>",
            expected=str(i),
            prediction="right" if score else "wrong",
            scores={METRIC: score},
        )
        for i, score in enumerate(scores)
    )
    return evaluation


def runs_of(count: int) -> list[TunixRun]:
    return [TunixRunFactory.create(mode=RunMode.LOCAL, exit_code=0) for _ in range(count)]


def test_runs_are_compared_on_the_items_most_of_them_were_evaluated_on(
    django_assert_num_queries: Any,
) -> None:
    first, second, third = runs_of(3)
    evaluated(first, [1, 1, 0, 0], age_minutes=10)
    evaluated(first, [1, 1, 1, 1], dataset_key="other-v1", held_out=False)
    evaluated(second, [1, 0, 0, 0], age_minutes=5)
    evaluated(second, [1, 1, 1, 0])  # newer, on the same items: this one counts
    evaluated(third, [0, 0, 0, 0], baseline=True)  # a baseline is not the run's model
    with django_assert_num_queries(3):
        compared = evaluation_comparison([first.run_id, second.run_id, third.run_id])
    assert compared is not None
    assert (compared.dataset_key, compared.held_out) == ("sft-v1", True)
    assert compared.evaluation_ids[2] is None
    (score,) = compared.scores
    assert score.means == [0.5, 0.75, None]
    assert score.deltas == [0.0, 0.25, None]
    # Item 2: first 0, second 1. Items 0, 1 and 3 agree.
    assert compared.disagreement_count == 1
    (item,) = compared.disagreements
    assert item.index == 2 and item.expected == "2"
    assert [(a.prediction, a.score) if a else None for a in item.answers] == [
        ("wrong", 0.0),
        ("right", 1.0),
        None,
    ]


def test_an_item_one_run_lacks_is_a_disagreement_and_equal_numbers_agree() -> None:
    first, second, third = runs_of(3)
    evaluated(first, [1, 0.5, 0, 1])
    evaluated(second, [1.0, 0.5, 0, 0])
    evaluated(third, [1, 0.5, 0])  # no item 3
    EvaluationItem.objects.filter(evaluation__run=third, index=2).delete()  # nor item 2
    compared = evaluation_comparison([first.run_id, second.run_id, third.run_id])
    assert compared is not None
    # Item 0: 1, 1.0 and 1 are one number; item 1: 0.5 thrice. Item 2: two zeros and a
    # run without it; item 3: 1, 0 and a run without it.
    assert compared.disagreement_count == 2
    assert [item.index for item in compared.disagreements] == [2, 3]
    two, three = compared.disagreements
    assert [a.score if a else None for a in two.answers] == [0.0, 0.0, None]
    assert [a.score if a else None for a in three.answers] == [1.0, 0.0, None]


def test_the_items_only_one_run_has_are_each_a_disagreement() -> None:
    first, second = runs_of(2)
    evaluated(first, [1, 1, 1])
    evaluated(second, [1])
    compared = evaluation_comparison([first.run_id, second.run_id])
    assert compared is not None
    assert compared.disagreement_count == 2
    assert [item.index for item in compared.disagreements] == [1, 2]


def test_no_evaluation_means_no_evaluation_part() -> None:
    first, second = runs_of(2)
    assert evaluation_comparison([first.run_id, second.run_id]) is None
    assert run_compare(run_ids=[first.run_id, second.run_id]).evaluations is None


def test_the_api_the_page_and_the_command_show_the_scores(
    client: Client, openapi: dict[str, Any]
) -> None:
    first, second = runs_of(2)
    evaluated(first, [1, 0, 0, 0])
    evaluated(second, [1, 1, 0, 1])
    ids = f"{first.run_id},{second.run_id}"
    response = client.get(f"/api/tunix/runs/compare?runs={ids}")
    assert response.status_code == 200
    assert_fits(openapi, "/api/tunix/runs/compare", "get", response)
    body = response.json()["evaluations"]
    assert body["scores"] == [{"metric": METRIC, "means": [0.25, 0.75], "deltas": [0.0, 0.5]}]
    assert body["disagreement_count"] == 2
    assert [item["index"] for item in body["disagreements"]] == [1, 3]

    html = client.get(f"/runs/compare/?runs={ids}").content.decode()
    section = html.split('data-testid="compare:evaluations"')[1].split("</section>")[0]
    assert "0.750" in section and "(+0.500)" in section
    assert section.count('data-testid="compare:disagreement"') == 2
    assert "<script>q1</script>" not in section and "&lt;script&gt;q1&lt;/script&gt;" in section
    # Each run's cell: its prediction and its score, the prediction escaped and clipped.
    EvaluationItem.objects.filter(evaluation__run=second, index=3).update(
        prediction="<b>" + "x" * 200
    )
    html = client.get(f"/runs/compare/?runs={ids}").content.decode()
    row = [r for r in html.split('data-testid="compare:disagreement"') if "&lt;script&gt;q3" in r]
    cells = re.findall(r'<td class="mono runs-wrap">(.*?)</td>', row[0].split("</tr>")[0])
    assert cells[2:] == [
        'wrong <span class="muted">(0.0)</span>',
        "&lt;b&gt;" + "x" * 156 + '… <span class="muted">(1.0)</span>',
    ]

    out = StringIO()
    call_command("compare_runs", str(first.run_id), str(second.run_id), stdout=out)
    text = out.getvalue()
    assert f"{METRIC}" in text and "0.750 (+0.500)" in text
    assert f"items scored apart ({METRIC})  2" in text
