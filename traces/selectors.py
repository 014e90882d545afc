"""Reads of traces and scores shared by the API, the pages and other apps."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.db.models import OuterRef, QuerySet, Subquery
from django.db.models.fields.json import KT
from django.db.models.functions import Substr

from traces.models import Score, Trace

PROMPT_PREVIEW_CHARS = 120


def trace_get(*, trace_id: uuid.UUID) -> Trace | None:
    """One trace with its payload, or None."""
    return Trace.objects.filter(pk=trace_id).first()


# The two hottest reads of the API (list and detail) are plain SQL: building
# and compiling the equivalent querysets cost more CPU than the queries
# themselves. Both select by primary key or walk the (created_at, id) index.
_TABLE = Trace._meta.db_table
SUMMARY_SQL = (
    f"SELECT id, created_at, trace_version FROM {_TABLE} "  # noqa: S608 (constant table name)
    "ORDER BY created_at DESC, id DESC LIMIT %s OFFSET %s"
)
_DETAIL_SQL = f"SELECT id, created_at, trace_version, payload FROM {_TABLE} WHERE id = %s"  # noqa: S608


def _uuid_param(value: uuid.UUID) -> uuid.UUID | str:
    return value if connection.features.has_native_uuid_field else value.hex


def _row_values(trace_id: Any, created_at: Any) -> tuple[uuid.UUID, datetime]:
    # PostgreSQL returns UUID and aware datetimes; SQLite returns the text Django
    # stored: 32 hex digits and "YYYY-MM-DD HH:MM:SS[.ffffff]" in UTC.
    if not isinstance(trace_id, uuid.UUID):
        trace_id = uuid.UUID(trace_id)
    if not isinstance(created_at, datetime):
        created_at = datetime.fromisoformat(created_at)
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    return trace_id, created_at


def trace_summary_rows(*, limit: int, offset: int) -> list[tuple[uuid.UUID, datetime, str]]:
    """`limit + 1` (id, created_at, trace_version) rows, newest first, id as tie-breaker.

    Reads no payloads; served by the (created_at, id) index.
    """
    with connection.cursor() as cursor:
        cursor.execute(SUMMARY_SQL, [limit + 1, offset])
        return [(*_row_values(i, c), v) for i, c, v in cursor.fetchall()]


def trace_detail_row(*, trace_id: uuid.UUID) -> tuple[uuid.UUID, datetime, str, str] | None:
    """(id, created_at, trace_version, payload as JSON text) of one trace, or None.

    The payload stays JSON text (jsonb rendered by PostgreSQL, stored text on
    SQLite) so the API can answer without parsing and re-serialising it.
    """
    with connection.cursor() as cursor:
        cursor.execute(_DETAIL_SQL, [_uuid_param(trace_id)])
        row = cursor.fetchone()
    if row is None:
        return None
    payload = row[3] if isinstance(row[3], str) else json.dumps(row[3])
    return (*_row_values(row[0], row[1]), row[2], payload)


def trace_list_page(*, limit: int, offset: int) -> list[dict[str, Any]]:
    """`limit + 1` rows for the HTML list: summary, a prompt preview, the latest score.

    The preview is cut in the database (the payload never reaches Python) and
    the latest score is a correlated subquery on the (trace, created_at) index,
    so a page costs one query.
    """
    latest = Score.objects.filter(trace=OuterRef("pk")).order_by("-created_at", "-id")
    rows = (
        Trace.objects.order_by("-created_at", "-id")
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
