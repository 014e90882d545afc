"""Reads of evaluations, shared by the API, the run page and the commands."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from evaluations.models import Evaluation, EvaluationItem
from tunix_registry.actors import with_username
from tunix_registry.cursors import INVALID_CURSOR_MESSAGE, InvalidCursor, cursor_pack, cursor_unpack

# The largest item index a cursor may name (a 32-bit column).
MAX_INDEX = 2**31 - 1


@dataclass
class Page:
    items: list[Any]
    pagination: dict[str, Any]


def _evaluations() -> QuerySet[Evaluation]:
    return with_username(Evaluation.objects.all(), "launched_by")


def evaluation_get(*, evaluation_id: uuid.UUID) -> Evaluation | None:
    return _evaluations().filter(pk=evaluation_id).first()


def evaluation_list(
    *, run_id: uuid.UUID | None = None, limit: int = 20, cursor: str | None = None
) -> Page:
    """A page of evaluations, newest first (of one run, or all); keyset `cursor` pages."""
    qs = _evaluations().defer("stderr")
    if run_id is not None:
        qs = qs.filter(run_id=run_id)
    if cursor:
        raw = cursor_unpack(cursor)
        try:
            created, evaluation_id = raw.split("|")
            created_at = datetime.fromisoformat(created)
            if created_at.tzinfo is None:
                raise ValueError("naive timestamp")
            last = uuid.UUID(evaluation_id)
        except ValueError:
            raise InvalidCursor(INVALID_CURSOR_MESSAGE) from None
        qs = qs.filter(created_at__lte=created_at).exclude(
            Q(created_at=created_at) & Q(evaluation_id__gte=last)
        )
    rows = list(qs.order_by("-created_at", "-evaluation_id")[: limit + 1])
    items = rows[:limit]
    more = len(rows) > limit
    return Page(
        items=items,
        pagination={
            "limit": limit,
            "offset": 0,
            "next_offset": None,
            "next_cursor": cursor_pack(
                f"{items[-1].created_at.isoformat()}|{items[-1].evaluation_id}"
            )
            if more
            else None,
        },
    )


def evaluation_items(
    *, evaluation_id: uuid.UUID, limit: int = 100, cursor: str | None = None
) -> Page:
    """A page of an evaluation's items in dataset order; `cursor` continues after an item."""
    qs = EvaluationItem.objects.filter(evaluation_id=evaluation_id)
    if cursor:
        raw = cursor_unpack(cursor)
        try:
            after = int(raw)
        except ValueError:
            raise InvalidCursor(INVALID_CURSOR_MESSAGE) from None
        if not 0 <= after <= MAX_INDEX:
            raise InvalidCursor(INVALID_CURSOR_MESSAGE)
        qs = qs.filter(index__gt=after)
    rows = list(qs.order_by("index")[: limit + 1])
    items = rows[:limit]
    more = len(rows) > limit
    return Page(
        items=items,
        pagination={
            "limit": limit,
            "offset": 0,
            "next_offset": None,
            "next_cursor": cursor_pack(str(items[-1].index)) if more else None,
        },
    )


@dataclass
class RunEvaluationRow:
    """One evaluation of a run as its page shows it: scores, and gains over its baseline."""

    evaluation: Evaluation
    # (metric, mean, ci_low, ci_high, gain over the baseline's mean or None)
    scores: list[tuple[str, float | None, float | None, float | None, float | None]]


RUN_PAGE_EVALUATIONS = 20


def run_evaluations(*, run_id: uuid.UUID) -> list[RunEvaluationRow]:
    """The run's latest evaluations, newest first, each completed one with its gain over the
    newest completed baseline of the same run on the same items (one query)."""
    rows = list(
        _evaluations()
        .filter(run_id=run_id)
        .defer("stderr")
        .order_by("-created_at", "-evaluation_id")[:RUN_PAGE_EVALUATIONS]
    )
    baselines: dict[tuple[str, bool], dict[str, Any]] = {}
    for row in rows:
        if row.baseline and row.status == "completed" and row.scores:
            baselines.setdefault((row.dataset_key, row.held_out), row.scores)
    shown = []
    for row in rows:
        base = None if row.baseline else baselines.get((row.dataset_key, row.held_out))
        scores = []
        for name, score in (row.scores or {}).items():
            mean = score.get("mean")
            base_mean = (base or {}).get(name, {}).get("mean")
            gain = mean - base_mean if mean is not None and base_mean is not None else None
            scores.append((name, mean, score.get("ci_low"), score.get("ci_high"), gain))
        shown.append(RunEvaluationRow(evaluation=row, scores=scores))
    return shown
