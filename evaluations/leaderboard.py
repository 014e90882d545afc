"""The leaderboard: runs ranked by an evaluation metric, the one read behind the API and the page.

A row is a run's best completed, non-baseline evaluation on one dataset (`dataset_key` with
`held_out`: the held-out part of a dataset and the whole of it are different item sets), for
one metric: the highest mean, the newest evaluation among equal means. Rows are ranked by that
mean, highest first; equal means put the newer evaluation first, then the larger id. A row
carries the run's latest completed baseline evaluation of the same dataset and metric (its
base model's mean) when there is one, so the gain can be shown.

Three queries per page whatever its length: the ids of the page's evaluations (a window over
the evaluations picks each run's best, ranked; only narrow rows go through the sorts), their
rows with the runs and the launchers' names, then the baselines of the page's runs.
`leaderboard_choices` reads the filter form's dataset keys in one more.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import F, FloatField, QuerySet, Value, Window
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, NullIf, RowNumber

from evaluations.metrics import METRICS
from evaluations.models import Evaluation, EvaluationStatus
from tunix_registry.pagination import page_of

DEFAULT_METRIC = "answer_correctness@v1"
# What the ranked query reads of an evaluation and of its run (not logs, items or results).
_EVALUATION_FIELDS = ("evaluation_id", "run_id", "dataset_key", "held_out", "scores", "created_at")
_RUN_FIELDS = ("run__run_id", "run__model_id", "run__dataset_key", "run__started_at", "run__config")


class UnknownMetric(ValueError):
    """A metric no evaluation is scored with (evaluations.metrics.METRICS)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        super().__init__(f"Unknown metric {metric!r}; one of: {', '.join(sorted(METRICS))}")


@dataclass(frozen=True)
class ConfigSummary:
    """The training settings a run was launched with (None where its config has none)."""

    learning_rate: float | None
    num_epochs: int | None
    batch_size: int | None
    # None: every weight was trained ("full").
    lora_rank: int | None

    @property
    def weights(self) -> str:
        return "full" if self.lora_rank is None else "lora"

    @classmethod
    def of(cls, config: Mapping[str, Any] | None) -> ConfigSummary:
        config = config if isinstance(config, Mapping) else {}
        lora = config.get("lora")
        rank = lora.get("rank") if isinstance(lora, Mapping) else None
        return cls(
            learning_rate=_number(config.get("learning_rate")),
            num_epochs=_integer(config.get("num_epochs")),
            batch_size=_integer(config.get("batch_size")),
            lora_rank=_integer(rank),
        )


@dataclass(frozen=True)
class LeaderboardRun:
    run_id: uuid.UUID
    model_id: str
    # The dataset the run trained on.
    dataset_key: str
    launched_by: str | None
    started_at: datetime
    config: ConfigSummary


@dataclass(frozen=True)
class LeaderboardEvaluation:
    evaluation_id: uuid.UUID
    dataset_key: str
    held_out: bool
    mean: float
    ci_low: float | None
    ci_high: float | None
    count: int
    created_at: datetime


@dataclass(frozen=True)
class LeaderboardRow:
    # The position on the whole leaderboard (1 is the best); equal means get consecutive ranks.
    rank: int
    run: LeaderboardRun
    evaluation: LeaderboardEvaluation
    # The mean of the run's base model on the same items, None when it was not evaluated.
    baseline_mean: float | None

    @property
    def gain(self) -> float | None:
        if self.baseline_mean is None:
            return None
        return self.evaluation.mean - self.baseline_mean


@dataclass(frozen=True)
class LeaderboardPage:
    metric: str
    rows: list[LeaderboardRow]
    pagination: dict[str, int | None]


@dataclass(frozen=True)
class LeaderboardChoices:
    """What the filter form offers: the evaluated datasets and the registered metrics."""

    dataset_keys: list[str]
    metrics: list[str]


def metric_check(metric: str) -> str:
    """`metric` unchanged, or UnknownMetric."""
    if metric not in METRICS:
        raise UnknownMetric(metric)
    return metric


def _mean(metric: str) -> Cast:
    # A key transform quotes each key (`$."answer_correctness@v1"."mean"` on SQLite, a
    # parameter on PostgreSQL), so the "@" and "." of metric names need no escaping; a
    # metric name never holds "__" (METRICS). A mean that is JSON null (no item could be
    # scored) is SQL NULL: PostgreSQL's text of it is NULL already, SQLite's is "null".
    return Cast(NullIf(KT(f"scores__{metric}__mean"), Value("null")), FloatField())


def _completed(metric: str, *, baseline: bool) -> QuerySet[Evaluation]:
    return (
        Evaluation.objects.filter(status=EvaluationStatus.COMPLETED, baseline=baseline)
        .annotate(score=_mean(metric))
        .filter(score__isnull=False)
    )


def leaderboard(
    *,
    metric: str = DEFAULT_METRIC,
    dataset_key: str | None = None,
    model_id: str | None = None,
    held_out: bool | None = None,
    limit: int = 20,
    offset: int = 0,
) -> LeaderboardPage:
    """A page of the leaderboard of `metric`, filtered by evaluation dataset, the runs' base
    model and held-out or whole datasets; raises UnknownMetric."""
    metric_check(metric)
    qs = _completed(metric, baseline=False)
    if dataset_key:
        qs = qs.filter(dataset_key=dataset_key)
    if model_id:
        qs = qs.filter(run__model_id=model_id)
    if held_out is not None:
        qs = qs.filter(held_out=held_out)
    newest_best = [F("score").desc(), F("created_at").desc(), F("evaluation_id").desc()]
    # Narrow rows through the window and the sorts: the page's ids, in order, then their rows.
    ranked = (
        qs.annotate(
            pick=Window(
                RowNumber(),
                partition_by=[F("run_id"), F("dataset_key"), F("held_out")],
                order_by=newest_best,
            )
        )
        .filter(pick=1)
        .order_by(*newest_best)
        .values_list("evaluation_id", flat=True)
    )
    ids, pagination = page_of(list(ranked[offset : offset + limit + 1]), limit, offset)
    found = _rows(metric, ids)
    baselines = _baselines(metric, found)
    rows = [
        LeaderboardRow(
            rank=offset + position,
            run=_run(evaluation),
            evaluation=_evaluation(evaluation, metric),
            baseline_mean=baselines.get(_group(evaluation)),
        )
        for position, evaluation in enumerate(found, start=1)
    ]
    return LeaderboardPage(metric=metric, rows=rows, pagination=pagination)


def _rows(metric: str, ids: Sequence[uuid.UUID]) -> list[Evaluation]:
    """The evaluations `ids` in that order, with their runs and the runs' launchers' names."""
    if not ids:
        return []
    qs = (
        Evaluation.objects.filter(pk__in=ids)
        .annotate(score=_mean(metric), launcher=F("run__launched_by__username"))
        .select_related("run")
        .only(*_EVALUATION_FIELDS, *_RUN_FIELDS)
    )
    by_id = {evaluation.evaluation_id: evaluation for evaluation in qs}
    return [by_id[evaluation_id] for evaluation_id in ids]


def leaderboard_choices() -> LeaderboardChoices:
    """The dataset keys of completed evaluations (sorted) and the metric names."""
    keys = (
        Evaluation.objects.filter(status=EvaluationStatus.COMPLETED, baseline=False)
        .order_by("dataset_key")
        .values_list("dataset_key", flat=True)
        .distinct()
    )
    return LeaderboardChoices(dataset_keys=list(keys), metrics=sorted(METRICS))


def _group(evaluation: Evaluation) -> tuple[uuid.UUID, str, bool]:
    return (evaluation.run_id, evaluation.dataset_key, evaluation.held_out)


def _baselines(
    metric: str, evaluations: Sequence[Evaluation]
) -> dict[tuple[uuid.UUID, str, bool], float]:
    """The latest completed baseline mean of each (run, dataset, held_out) of `evaluations`."""
    if not evaluations:
        return {}
    wanted = {_group(evaluation) for evaluation in evaluations}
    qs = (
        _completed(metric, baseline=True)
        .filter(
            run_id__in={run_id for run_id, _, _ in wanted},
            dataset_key__in={key for _, key, _ in wanted},
        )
        .order_by("created_at", "evaluation_id")
        .only("run_id", "dataset_key", "held_out", "created_at")
    )
    # Ascending: a later baseline of the same group overwrites an earlier one.
    means = {_group(baseline): _score(baseline) for baseline in qs}
    return {group: mean for group, mean in means.items() if group in wanted}


def _run(evaluation: Evaluation) -> LeaderboardRun:
    run = evaluation.run
    return LeaderboardRun(
        run_id=run.run_id,
        model_id=run.model_id,
        dataset_key=run.dataset_key,
        launched_by=getattr(evaluation, "launcher", None),
        started_at=run.started_at,
        config=ConfigSummary.of(run.config),
    )


def _evaluation(evaluation: Evaluation, metric: str) -> LeaderboardEvaluation:
    score = (evaluation.scores or {}).get(metric) or {}
    return LeaderboardEvaluation(
        evaluation_id=evaluation.evaluation_id,
        dataset_key=evaluation.dataset_key,
        held_out=evaluation.held_out,
        mean=_score(evaluation),
        ci_low=_number(score.get("ci_low")),
        ci_high=_number(score.get("ci_high")),
        count=_integer(score.get("count")) or 0,
        created_at=evaluation.created_at,
    )


def _score(evaluation: Evaluation) -> float:
    """The mean annotated by `_completed` as `score`."""
    return float(evaluation.score)  # type: ignore[attr-defined]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _integer(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value
