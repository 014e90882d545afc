"""Reads of traces and scores shared by the API, the pages and other apps."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import OuterRef, QuerySet, Subquery
from django.db.models.fields.json import KT
from django.db.models.functions import Substr

from traces.models import Score, Trace
from tunix_registry.sqltime import iso_utc, pg_utc_text

PROMPT_PREVIEW_CHARS = 120


def trace_get(*, trace_id: uuid.UUID) -> Trace | None:
    """One trace with its payload, or None."""
    return Trace.objects.filter(pk=trace_id).first()


# The two hottest reads of the API (list and detail) are plain SQL returning
# JSON-ready text: building and compiling the equivalent querysets, and
# loading timestamps into aware datetimes (a Python-level loader per row on
# psycopg), cost more CPU than the queries themselves. Both select by primary
# key or walk the (created_at, id) index.
_TABLE = Trace._meta.db_table
# PostgreSQL renders id and UTC time as text itself; SQLite already stores text.
# (Aliased: a bare `id` in ORDER BY would otherwise mean the text column and
# force a sort instead of the index walk.)
_PG_TEXT_COLUMNS = f"id::text AS id_text, {pg_utc_text('created_at')}"
SUMMARY_SQL_POSTGRESQL = (
    f"SELECT {_PG_TEXT_COLUMNS}, trace_version FROM {_TABLE} "  # noqa: S608 (constants only)
    f"ORDER BY {_TABLE}.created_at DESC, {_TABLE}.id DESC LIMIT %s OFFSET %s"
)
_SUMMARY_SQL_SQLITE = (
    f"SELECT id, created_at, trace_version FROM {_TABLE} "  # noqa: S608 (constants only)
    "ORDER BY created_at DESC, id DESC LIMIT %s OFFSET %s"
)
_DETAIL_SQL_POSTGRESQL = (
    f"SELECT {_PG_TEXT_COLUMNS}, trace_version, payload::text FROM {_TABLE} "  # noqa: S608
    "WHERE id = %s"
)
_DETAIL_SQL_SQLITE = f"SELECT id, created_at, trace_version, payload FROM {_TABLE} WHERE id = %s"  # noqa: S608


def _id_text(value: str) -> str:
    # SQLite stores 32 hex digits; PostgreSQL already answers in the dashed form.
    if len(value) == 32:
        return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"
    return value


def _time_text(value: str | datetime) -> str:
    """UTC "YYYY-MM-DD[T ]HH:MM:SS[.ffffff]" as `iso_z` renders it (no fraction when zero).

    (Django's SQLite connection converts datetime columns to naive UTC datetimes.)
    """
    if isinstance(value, datetime):
        value = value.isoformat()
    return iso_utc(value.replace(" ", "T", 1), "Z")


def trace_summary_page(*, limit: int, offset: int) -> list[dict[str, str]]:
    """`limit + 1` `{"id", "created_at", "trace_version"}` items, newest first, id as tie-breaker.

    JSON-ready strings (created_at as `...Z`). Reads no payloads; served by the
    (created_at, id) index.
    """
    db = connections[DEFAULT_DB_ALIAS]  # looked up once: each proxy access costs
    postgresql = db.vendor == "postgresql"
    with db.cursor() as cursor:
        cursor.execute(
            SUMMARY_SQL_POSTGRESQL if postgresql else _SUMMARY_SQL_SQLITE, [limit + 1, offset]
        )
        rows = cursor.fetchall()
    return [
        {"id": _id_text(i), "created_at": _time_text(c), "trace_version": v} for i, c, v in rows
    ]


def trace_detail_json(*, trace_id: uuid.UUID) -> tuple[dict[str, str], str] | None:
    """One trace as (`{"id", "created_at", "trace_version"}`, payload as JSON text), or None.

    The payload stays JSON text (jsonb rendered by PostgreSQL, stored text on
    SQLite) so the API can answer without parsing and re-serialising it.
    """
    db = connections[DEFAULT_DB_ALIAS]
    with db.cursor() as cursor:
        if db.vendor == "postgresql":
            cursor.execute(_DETAIL_SQL_POSTGRESQL, [trace_id])
        else:
            cursor.execute(_DETAIL_SQL_SQLITE, [trace_id.hex])
        row = cursor.fetchone()
    if row is None:
        return None
    summary = {"id": _id_text(row[0]), "created_at": _time_text(row[1]), "trace_version": row[2]}
    payload = row[3] if isinstance(row[3], str) else json.dumps(row[3])
    return summary, payload


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
