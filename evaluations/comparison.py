"""The evaluation part of a run comparison: scores side by side and the items runs disagree on.

Runs are compared on one set of items: the evaluation dataset (with held out or not) that most
of them were evaluated on, the newest such set on a tie. Each run contributes its newest
completed evaluation of its trained model on that set. Three queries whatever the
number of runs: their completed evaluations, the scores of the chosen ones' items, then the
texts of the items shown.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Case, Count, FloatField, IntegerField, Q, Value, When
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast

from evaluations.models import Evaluation, EvaluationItem, EvaluationStatus

# At most this many disagreeing items are listed (the first ones, in dataset order).
DISAGREEMENTS_SHOWN = 100


@dataclass(frozen=True)
class ComparedScore:
    """One metric across the runs: each run's mean (None: not evaluated) and its delta to the
    first run's."""

    metric: str
    means: list[float | None]
    deltas: list[float | None]

    @property
    def cells(self) -> list[tuple[float | None, float | None]]:
        return list(zip(self.means, self.deltas, strict=True))


@dataclass(frozen=True)
class ItemAnswer:
    prediction: str
    score: float | None


@dataclass(frozen=True)
class Disagreement:
    """An item the runs scored differently on the comparison's first metric."""

    index: int
    prompt: str
    expected: str
    # One per run, in the comparison's order (None: the run has no evaluation of it).
    answers: list[ItemAnswer | None]


@dataclass(frozen=True)
class EvaluationComparison:
    dataset_key: str
    held_out: bool
    # The evaluation each run contributes (None: not evaluated on these items).
    evaluation_ids: list[uuid.UUID | None]
    scores: list[ComparedScore]
    # The metric the disagreements are judged on, and the items themselves.
    metric: str
    disagreements: list[Disagreement]
    # How many items differ in all (the list stops at DISAGREEMENTS_SHOWN).
    disagreement_count: int


def evaluation_comparison(run_ids: Sequence[uuid.UUID]) -> EvaluationComparison | None:
    """The runs' evaluations side by side, in the order of `run_ids`; None when none has a
    completed evaluation of its trained model."""
    rows = list(
        Evaluation.objects.filter(
            run_id__in=run_ids, status=EvaluationStatus.COMPLETED, baseline=False
        )
        .order_by("-created_at", "-evaluation_id")
        .values_list("evaluation_id", "run_id", "dataset_key", "held_out", "scores", "metrics")
    )
    if not rows:
        return None
    # The set of items most runs were evaluated on; on a tie the newest (rows are newest first).
    runs_per_set = Counter({(key, held): 0 for _, _, key, held, _, _ in rows})
    seen: set[tuple[uuid.UUID, str, bool]] = set()
    for _, run_id, key, held, _, _ in rows:
        if (run_id, key, held) not in seen:
            seen.add((run_id, key, held))
            runs_per_set[(key, held)] += 1
    best = max(runs_per_set.values())
    dataset_key, held_out = next(pair for pair, count in runs_per_set.items() if count == best)
    chosen: dict[uuid.UUID, tuple[uuid.UUID, dict[str, Any], list[str]]] = {}
    for evaluation_id, run_id, key, held, scores, names in rows:
        if (key, held) == (dataset_key, held_out) and run_id not in chosen:
            chosen[run_id] = (evaluation_id, scores or {}, list(names or []))
    order = [chosen.get(run_id) for run_id in run_ids]
    metrics: list[str] = []
    for entry in order:
        for name in entry[2] if entry else []:
            if name not in metrics:
                metrics.append(name)
    compared = [_compared_score(name, order) for name in metrics]
    metric = metrics[0]
    disagreements, count = _disagreements([entry[0] if entry else None for entry in order], metric)
    return EvaluationComparison(
        dataset_key=dataset_key,
        held_out=held_out,
        evaluation_ids=[entry[0] if entry else None for entry in order],
        scores=compared,
        metric=metric,
        disagreements=disagreements,
        disagreement_count=count,
    )


def _compared_score(
    metric: str, order: Sequence[tuple[uuid.UUID, dict[str, Any], list[str]] | None]
) -> ComparedScore:
    means: list[float | None] = []
    for entry in order:
        mean = (entry[1].get(metric) or {}).get("mean") if entry else None
        means.append(float(mean) if isinstance(mean, int | float) else None)
    first = means[0]
    deltas = [None if first is None or mean is None else mean - first for mean in means]
    return ComparedScore(metric=metric, means=means, deltas=deltas)


def _disagreements(
    evaluation_ids: Sequence[uuid.UUID | None], metric: str
) -> tuple[list[Disagreement], int]:
    present = [evaluation_id for evaluation_id in evaluation_ids if evaluation_id is not None]
    if len(present) < 2:
        return [], 0
    # Each item names its run by position (a CASE in the query): no UUID per row.
    position = Case(
        *(
            When(evaluation_id=evaluation_id, then=Value(i))
            for i, evaluation_id in enumerate(evaluation_ids)
            if evaluation_id is not None
        ),
        output_field=IntegerField(),
    )
    # The items scored apart, judged in the database: more than one distinct score, or
    # one score beside a run without one (its item missing). Scores are numbers (the
    # engine's floats, evaluations.execution), so they compare as numbers.
    score = Cast(KeyTextTransform(metric, "scores"), FloatField())
    apart = list(
        EvaluationItem.objects.filter(evaluation_id__in=present)
        .values("index")
        .annotate(scored=Count(score), distinct=Count(score, distinct=True))
        .filter(Q(distinct__gt=1) | Q(distinct=1, scored__lt=len(present)))
        .order_by("index")
        .values_list("index", flat=True)
    )
    shown = apart[:DISAGREEMENTS_SHOWN]
    # The texts and scores of the items shown only.
    texts: dict[tuple[int, int], tuple[str, str, str, float | None]] = {}
    for index, at, prompt, expected, prediction, scores in (
        EvaluationItem.objects.filter(evaluation_id__in=present, index__in=shown)
        .annotate(position=position)
        .values_list("index", "position", "prompt", "expected", "prediction", "scores")
    ):
        texts[(index, at)] = (prompt, expected, prediction, _score(scores, metric))
    listed = []
    for index in shown:
        answers: list[ItemAnswer | None] = []
        prompt = expected = ""
        for at in range(len(evaluation_ids)):
            text = texts.get((index, at))
            if text is None:
                answers.append(None)
                continue
            prompt, expected, prediction, scored = text
            answers.append(ItemAnswer(prediction=prediction, score=scored))
        listed.append(Disagreement(index=index, prompt=prompt, expected=expected, answers=answers))
    return listed, len(apart)


def _score(scores: dict[str, Any] | None, metric: str) -> float | None:
    value = (scores or {}).get(metric)
    return float(value) if isinstance(value, int | float) else None
