"""Reads of traces and scores shared by the API, the pages and other apps."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery
from django.db.models.fields.json import KT
from django.db.models.functions import Substr

from traces.models import Score, Trace
from tunix_registry.actors import with_username

PROMPT_PREVIEW_CHARS = 120


def _newest_first() -> QuerySet[Trace]:
    """Every trace, newest first, the id breaking ties (served by the (created_at, id) index)."""
    return Trace.objects.order_by("-created_at", "-id")


def trace_get(*, trace_id: uuid.UUID) -> Trace | None:
    """One trace with its payload and its creator's username (`created_by_name`), or None."""
    return with_username(Trace.objects.filter(pk=trace_id), "created_by").first()


def trace_exists(*, trace_id: uuid.UUID) -> bool:
    """Whether the trace is still stored (a primary-key probe, no row read)."""
    return Trace.objects.filter(pk=trace_id).exists()


def trace_summary_page(*, limit: int, offset: int) -> list[dict[str, Any]]:
    """`limit + 1` `{"id", "created_at", "trace_version"}` rows, newest first.

    Reads no payloads: the page walks the (created_at, id) index.
    """
    rows = _newest_first().values("id", "created_at", "trace_version")
    return [dict(row) for row in rows[offset : offset + limit + 1]]


def trace_list_page(*, limit: int, offset: int) -> list[dict[str, Any]]:
    """`limit + 1` rows for the HTML list: summary, a prompt preview, the latest score.

    The preview is cut in the database (the payload never reaches Python) and
    the latest score is a correlated subquery on the (trace, created_at) index,
    so a page costs one query.
    """
    latest = Score.objects.filter(trace=OuterRef("pk")).order_by("-created_at", "-id")
    rows = (
        _newest_first()
        .annotate(
            prompt_preview=Substr(KT("payload__prompt"), 1, PROMPT_PREVIEW_CHARS + 1),
            latest_score=Subquery(latest.values("score")[:1]),
        )
        .values("id", "created_at", "trace_version", "prompt_preview", "latest_score")
    )[offset : offset + limit + 1]
    return list(rows)


def score_latest(*, trace_id: uuid.UUID) -> Score | None:
    """The most recent score of a trace, or None."""
    return Score.objects.filter(trace_id=trace_id).order_by("-created_at", "-id").first()


def scores_of(*, trace_id: uuid.UUID) -> QuerySet[Score]:
    return Score.objects.filter(trace_id=trace_id).order_by("-created_at", "-id")
