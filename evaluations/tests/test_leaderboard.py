"""The leaderboard: the selector, `GET /api/tunix/leaderboard` and the `/leaderboard/` page.

Evaluations are made directly as completed rows with their scores (the tests of the
worker and the engine produce them for real); the runs come from TunixRunFactory.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from evaluations.leaderboard import ConfigSummary, leaderboard, leaderboard_choices
from evaluations.models import Evaluation, EvaluationStatus
from runs.models import TunixRun
from runs.tests.factories import TunixRunFactory
from tunix_registry.tests.openapi_check import assert_fits

pytestmark = pytest.mark.django_db

ANSWER = "answer_correctness@v1"
EXACT = "exact_match@v1"
URL = "/api/tunix/leaderboard"
PAGE = "/leaderboard/"
START = timezone.now() - timedelta(days=1)
_clock = iter(range(1_000_000))


def scored(
    run: TunixRun,
    mean: float | None,
    *,
    metric: str = ANSWER,
    dataset_key: str = "eval-v1",
    held_out: bool = False,
    baseline: bool = False,
    status: str = EvaluationStatus.COMPLETED,
    created_at: datetime | None = None,
    others: dict[str, dict[str, Any]] | None = None,
) -> Evaluation:
    """A completed evaluation of `run` whose `metric` has `mean` (each created after the last),
    with the scores of `others` metrics too."""
    others = others or {}
    score = {"mean": mean, "count": 40, "ci_low": None, "ci_high": None}
    if mean is not None:
        score.update(ci_low=max(mean - 0.1, 0.0), ci_high=min(mean + 0.1, 1.0))
    return Evaluation.objects.create(
        run=run,
        baseline=baseline,
        dataset_key=dataset_key,
        held_out=held_out,
        metrics=[metric, *others],
        generation={"max_new_tokens": 64, "temperature": 0.0, "seed": 0, "batch_size": 8},
        status=status,
        queue="default",
        created_at=created_at or START + timedelta(seconds=next(_clock)),
        scores={metric: score, **others} if status == EvaluationStatus.COMPLETED else None,
    )


def run_of(**fields: Any) -> TunixRun:
    run: TunixRun = TunixRunFactory.create(**fields)
    return run


def ranked(**query: Any) -> list[tuple[int, uuid.UUID, float]]:
    page = leaderboard(**query)
    return [(row.rank, row.run.run_id, row.evaluation.mean) for row in page.rows]


# --- The selector ----------------------------------------------------------------------------


def test_runs_are_ranked_by_the_mean_highest_first_and_ties_put_the_newer_first() -> None:
    low, high, tie_old, tie_new = (run_of() for _ in range(4))
    scored(low, 0.2)
    scored(tie_old, 0.5)
    scored(high, 0.9)
    scored(tie_new, 0.5)
    assert ranked() == [
        (1, high.run_id, 0.9),
        (2, tie_new.run_id, 0.5),
        (3, tie_old.run_id, 0.5),
        (4, low.run_id, 0.2),
    ]


def test_a_run_evaluated_several_times_appears_once_with_its_best() -> None:
    run, other = run_of(), run_of()
    scored(run, 0.4)
    best = scored(run, 0.7)
    scored(run, 0.6)
    scored(other, 0.5)
    page = leaderboard()
    assert [(row.run.run_id, row.evaluation.evaluation_id) for row in page.rows] == [
        (run.run_id, best.evaluation_id),
        (other.run_id, page.rows[1].evaluation.evaluation_id),
    ]


def test_equal_best_means_of_one_run_keep_the_newer_evaluation() -> None:
    run = run_of()
    scored(run, 0.7)
    newer = scored(run, 0.7)
    [row] = leaderboard().rows
    assert row.evaluation.evaluation_id == newer.evaluation_id


def test_each_evaluation_dataset_of_a_run_is_its_own_row() -> None:
    run = run_of()
    scored(run, 0.3, dataset_key="eval-v1")
    scored(run, 0.6, dataset_key="eval-v1", held_out=True)
    scored(run, 0.5, dataset_key="other-v1")
    assert [(r.evaluation.dataset_key, r.evaluation.held_out) for r in leaderboard().rows] == [
        ("eval-v1", True),
        ("other-v1", False),
        ("eval-v1", False),
    ]
    assert [r.evaluation.mean for r in leaderboard(dataset_key="eval-v1").rows] == [0.6, 0.3]
    assert [r.evaluation.mean for r in leaderboard(held_out=False).rows] == [0.5, 0.3]
    assert [r.evaluation.mean for r in leaderboard(held_out=True).rows] == [0.6]


def test_only_completed_non_baseline_evaluations_with_the_metric_are_ranked() -> None:
    run = run_of()
    shown = scored(run, 0.2)
    scored(run_of(), 0.9, baseline=True)
    scored(run_of(), None, status=EvaluationStatus.FAILED)
    scored(run_of(), None, status=EvaluationStatus.RUNNING)
    # Completed but without a mean (no item could be scored), or scored with another metric.
    scored(run_of(), None)
    scored(run_of(), 0.8, metric=EXACT)
    assert [row.evaluation.evaluation_id for row in leaderboard().rows] == [shown.evaluation_id]


def test_the_metric_chooses_the_score_ranked() -> None:
    first, second = run_of(), run_of()
    scored(first, 0.9, others={EXACT: {"mean": 0.1, "count": 40, "ci_low": 0.0, "ci_high": 0.2}})
    scored(second, 0.5, others={EXACT: {"mean": 0.4, "count": 40, "ci_low": 0.3, "ci_high": 0.5}})
    assert [r[1] for r in ranked(metric=ANSWER)] == [first.run_id, second.run_id]
    assert [r[1:] for r in ranked(metric=EXACT)] == [(second.run_id, 0.4), (first.run_id, 0.1)]


def test_the_gain_is_over_the_latest_baseline_of_the_same_items_and_metric() -> None:
    run, unmatched = run_of(), run_of()
    scored(run, 0.8)
    scored(run, 0.3, baseline=True)
    scored(run, 0.5, baseline=True)
    # Baselines of other items, or a failed one, are not this row's.
    scored(run, 0.1, baseline=True, held_out=True)
    scored(run, 0.1, baseline=True, dataset_key="other-v1")
    scored(run, None, baseline=True, status=EvaluationStatus.FAILED)
    scored(unmatched, 0.6)
    scored(unmatched, 0.2, baseline=True, metric=EXACT)
    first, second = leaderboard().rows
    assert (first.baseline_mean, first.gain) == (0.5, pytest.approx(0.3))
    assert (second.baseline_mean, second.gain) == (None, None)


def test_filters_by_the_base_model() -> None:
    qwen, gemma = run_of(model_id="tiny-qwen3"), run_of(model_id="gemma-2b")
    scored(qwen, 0.4)
    scored(gemma, 0.6)
    assert [r[1] for r in ranked(model_id="tiny-qwen3")] == [qwen.run_id]
    assert ranked(model_id="nobody") == []


def test_a_row_carries_the_run_its_configuration_and_the_evaluation(
    user_factory: Callable[..., Any],
) -> None:
    alice = user_factory("launcher", username="alice")
    run = run_of(launched_by=alice, dataset_key="train-v1")
    run.config = {**run.config, "lora": {"rank": 8, "alpha": 16.0}}
    run.save(update_fields=["config"])
    evaluation = scored(run, 0.75, dataset_key="train-v1", held_out=True)
    [row] = leaderboard().rows
    assert (row.run.model_id, row.run.dataset_key, row.run.launched_by) == (
        "tiny-qwen3",
        "train-v1",
        "alice",
    )
    assert row.run.config == ConfigSummary(
        learning_rate=2e-5, num_epochs=3, batch_size=8, lora_rank=8
    )
    assert row.run.config.weights == "lora"
    assert (row.evaluation.ci_low, row.evaluation.ci_high, row.evaluation.count) == (
        pytest.approx(0.65),
        pytest.approx(0.85),
        40,
    )
    assert row.evaluation.created_at == evaluation.created_at


def test_a_configuration_without_settings_summarises_as_unknown_full_weights() -> None:
    assert ConfigSummary.of({"lora": None, "learning_rate": "fast", "num_epochs": True}) == (
        ConfigSummary(learning_rate=None, num_epochs=None, batch_size=None, lora_rank=None)
    )
    assert ConfigSummary.of(None).weights == "full"


def test_pages_follow_each_other_with_ranks_across_pages() -> None:
    runs = [run_of() for _ in range(5)]
    for index, run in enumerate(runs):
        scored(run, index / 10)
    first = leaderboard(limit=2)
    assert [row.rank for row in first.rows] == [1, 2]
    assert first.pagination == {"limit": 2, "offset": 0, "next_offset": 2}
    last = leaderboard(limit=2, offset=4)
    assert [(row.rank, row.run.run_id) for row in last.rows] == [(5, runs[0].run_id)]
    assert last.pagination["next_offset"] is None


def test_the_choices_are_the_evaluated_datasets_and_the_metrics() -> None:
    run = run_of()
    scored(run, 0.4, dataset_key="zeta-v1")
    scored(run, 0.4, dataset_key="alpha-v1")
    scored(run, 0.4, dataset_key="alpha-v1")
    scored(run, 0.4, dataset_key="base-only-v1", baseline=True)
    choices = leaderboard_choices()
    assert choices.dataset_keys == ["alpha-v1", "zeta-v1"]
    assert choices.metrics == [ANSWER, EXACT]


def test_the_queries_do_not_grow_with_the_rows(django_assert_max_num_queries: Any) -> None:
    for index in range(30):
        run = run_of()
        scored(run, index / 100)
        scored(run, index / 200, baseline=True)
    with django_assert_max_num_queries(3):
        page = leaderboard(limit=25)
        assert len(page.rows) == 25 and all(row.gain is not None for row in page.rows)


# --- The API ---------------------------------------------------------------------------------


def test_the_api_answers_the_ranked_rows_in_its_documented_shape(
    client: Client, openapi: dict[str, Any]
) -> None:
    run = run_of()
    scored(run, 0.8)
    scored(run, 0.6, baseline=True)
    scored(run_of(), 0.4)
    response = client.get(URL)
    assert response.status_code == 200, response.content
    assert_fits(openapi, URL, "get", response)
    assert "no-cache" in response["Cache-Control"]
    body = response.json()
    assert body["metric"] == ANSWER
    assert [row["rank"] for row in body["data"]] == [1, 2]
    top = body["data"][0]
    assert top["run"]["run_id"] == str(run.run_id)
    assert top["run"]["config"] == {
        "learning_rate": 2e-5,
        "num_epochs": 3,
        "batch_size": 8,
        "lora_rank": None,
        "weights": "full",
    }
    assert (top["evaluation"]["mean"], top["baseline_mean"]) == (0.8, 0.6)
    assert top["gain"] == pytest.approx(0.2)
    assert body["data"][1]["gain"] is None
    assert body["pagination"] == {"limit": 20, "offset": 0, "next_offset": None}


def test_the_api_filters_and_pages(client: Client) -> None:
    for index in range(3):
        scored(run_of(model_id="tiny-qwen3"), 0.1 * index, dataset_key="eval-v1", held_out=True)
    scored(run_of(model_id="gemma-2b"), 0.9, dataset_key="eval-v1")
    scored(run_of(model_id="tiny-qwen3"), 0.9, dataset_key="other-v1")
    query = "model_id=tiny-qwen3&dataset_key=eval-v1&held_out=true&limit=2"
    first = client.get(f"{URL}?{query}").json()
    assert [row["evaluation"]["mean"] for row in first["data"]] == [0.2, 0.1]
    assert first["pagination"]["next_offset"] == 2
    rest = client.get(f"{URL}?{query}&offset=2").json()
    assert [(row["rank"], row["evaluation"]["mean"]) for row in rest["data"]] == [(3, 0.0)]
    exact = client.get(f"{URL}?metric={EXACT}").json()
    assert (exact["metric"], exact["data"]) == (EXACT, [])


def test_an_unknown_metric_is_a_422_naming_it(client: Client) -> None:
    response = client.get(f"{URL}?metric=bleu@v9")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "'bleu@v9'" in detail and ANSWER in detail


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=101", "offset=-1", "held_out=maybe", "model_id=" + "m" * 257]
)
def test_bad_query_parameters_are_422(client: Client, query: str) -> None:
    assert client.get(f"{URL}?{query}").status_code == 422


def test_the_api_needs_credentials(anon_client: Client) -> None:
    assert anon_client.get(URL).status_code == 401


# --- The page --------------------------------------------------------------------------------


def test_the_page_shows_the_rows_and_the_filters_from_the_url(client: Client) -> None:
    run = run_of(model_id="tiny-qwen3")
    scored(run, 0.8124, dataset_key="eval-v1")
    scored(run, 0.5, dataset_key="eval-v1", baseline=True)
    scored(run_of(model_id="gemma-2b"), 0.9, dataset_key="eval-v1")
    response = client.get(f"{PAGE}?metric={ANSWER}&dataset_key=eval-v1&model_id=tiny-qwen3")
    assert response.status_code == 200
    html = response.content.decode()
    assert f'href="/runs/{run.run_id}/"' in html
    assert "gemma-2b" not in html.split('data-testid="leaderboard:results"')[1]
    assert "0.812" in html and "+0.312" in html
    assert "lr 2e-05 · 3 epochs · batch 8 · full" in html
    # The form shows the filters it was opened with, and the nav marks the page.
    assert 'value="eval-v1"' in html and 'value="tiny-qwen3"' in html
    assert f'<option value="{ANSWER}" selected>' in html
    assert 'aria-current="page">Leaderboard</a>' in html
    assert "<script>" not in html.split("</head>")[1]


def test_the_page_shows_a_dash_without_a_baseline_and_pages_through_rows(client: Client) -> None:
    for index in range(3):
        scored(run_of(), index / 10)
    html = client.get(f"{PAGE}?limit=2").content.decode()
    assert 'data-testid="leaderboard:row-2"' in html and "leaderboard:row-3" not in html
    assert 'href="/leaderboard/?limit=2&amp;offset=2"' in html
    assert '<span class="muted">—</span>' in html
    rest = client.get(f"{PAGE}?limit=2&offset=2").content.decode()
    assert 'data-testid="leaderboard:row-3"' in rest
    assert 'href="/leaderboard/?limit=2"' in rest


def test_htmx_gets_the_table_alone(client: Client) -> None:
    scored(run_of(), 0.5)
    html = client.get(PAGE, HTTP_HX_REQUEST="true").content.decode()
    assert 'data-testid="leaderboard:table"' in html and "<html" not in html


def test_the_page_escapes_what_runs_recorded(client: Client) -> None:
    hostile = "<script>alert(1)</script>"
    scored(run_of(model_id=hostile), 0.5, dataset_key="eval-v1")
    html = client.get(PAGE).content.decode()
    assert hostile not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    filtered = client.get(PAGE, {"model_id": hostile}).content.decode()
    assert hostile not in filtered and 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in filtered


def test_an_unknown_metric_or_page_on_the_page_is_a_400_saying_why(client: Client) -> None:
    response = client.get(f"{PAGE}?metric=bleu@v9&offset=-1")
    assert response.status_code == 400
    errors = response.content.decode().split('data-testid="leaderboard:errors"')[1]
    assert "Metric:" in errors and "bleu@v9" in errors and "Offset" in errors


def test_an_empty_leaderboard_says_so(client: Client) -> None:
    html = client.get(PAGE).content.decode()
    assert f"No completed evaluation is scored with {ANSWER} yet." in html
    filtered = client.get(f"{PAGE}?model_id=x").content.decode()
    assert "No evaluations match these filters." in filtered


def test_the_page_needs_a_signed_in_reader(
    anon_client: Client, user_factory: Callable[..., Any]
) -> None:
    assert anon_client.get(PAGE).status_code == 302
    anon_client.force_login(user_factory(""))
    assert anon_client.get(PAGE).status_code == 403
    anon_client.force_login(user_factory("viewer"))
    assert anon_client.get(PAGE).status_code == 200


def test_the_page_reads_a_bounded_number_of_queries(
    client: Client, django_assert_max_num_queries: Any
) -> None:
    for index in range(25):
        run = run_of()
        scored(run, index / 100)
        scored(run, index / 200, baseline=True)
    client.get(PAGE)  # the session and the user's permissions, read once on the first request
    # Session, user, permissions; the ranked ids, their rows, their baselines; the datasets.
    with django_assert_max_num_queries(7):
        response = client.get(PAGE)
    assert response.content.decode().count('data-testid="leaderboard:row-') == 20
