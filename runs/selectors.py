"""Reads of the run registry shared by the API, the pages and the commands."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.db import connection
from django.db.models import Q, QuerySet

from runs.models import RunEvent, RunMetric, TunixRun

LOG_STREAMS = ("stdout", "stderr")
# The big columns a list never reads.
LIST_DEFERRED = ("stdout", "stderr", "config")
# The columns of a JSON list item (plus created_at for the cursor).
LIST_VALUES = (
    "run_id",
    "dataset_key",
    "model_id",
    "mode",
    "status",
    "started_at",
    "duration_seconds",
    "created_at",
)
# From this offset on, a page first reads its ids from an index alone, then the rows.
DEEP_OFFSET = 200


class InvalidCursor(ValueError):
    """A `cursor` that this server did not hand out."""


T = TypeVar("T")


@dataclass(frozen=True)
class RunPage(Generic[T]):
    items: list[T]
    # {"limit", "offset", "next_offset", "next_cursor"}
    pagination: dict[str, Any]


def _cursor(created_at: datetime, run_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{run_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def cursor_encode(run: TunixRun) -> str:
    """The cursor of the page that starts right after `run`."""
    return _cursor(run.created_at, run.run_id)


def cursor_decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, run_id = raw.split("|")
        created_at = datetime.fromisoformat(created)
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        return created_at, uuid.UUID(run_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor("cursor is not a valid page cursor") from None


def _filtered(status: str | None, dataset_key: str | None, mode: str | None) -> QuerySet[TunixRun]:
    qs = TunixRun.objects.all()
    # Empty strings are absent filters, as in the original.
    if status:
        qs = qs.filter(status=status)
    if dataset_key:
        qs = qs.filter(dataset_key=dataset_key)
    if mode:
        qs = qs.filter(mode=mode)
    return qs.order_by("-created_at", "-run_id")


def _page(
    qs: QuerySet[TunixRun],
    *,
    limit: int,
    offset: int,
    cursor: str | None,
    fetch: Callable[[QuerySet[TunixRun]], list[T]],
    key: Callable[[T], tuple[datetime, uuid.UUID]],
) -> RunPage[T]:
    if cursor:
        created_at, run_id = cursor_decode(cursor)
        qs = qs.filter(created_at__lte=created_at).exclude(
            Q(created_at=created_at) & Q(run_id__gte=run_id)
        )
        offset = 0
    if offset >= DEEP_OFFSET:
        # An index-only scan for the ids of the page, then only those rows.
        ids = list(qs.values_list("run_id", flat=True)[offset : offset + limit + 1])
        found = fetch(TunixRun.objects.filter(run_id__in=ids))
        position = {run_id: i for i, run_id in enumerate(ids)}
        rows = sorted(found, key=lambda row: position[key(row)[1]])
    else:
        rows = fetch(qs[offset : offset + limit + 1])
    return _assemble(rows, limit=limit, offset=offset, cursor=cursor, key=key)


def _assemble(
    rows: list[T],
    *,
    limit: int,
    offset: int,
    cursor: str | None,
    key: Callable[[T], tuple[datetime, uuid.UUID]],
) -> RunPage[T]:
    """The page and its pagination from `limit + 1` fetched rows."""
    has_more = len(rows) > limit
    items = rows[:limit]
    next_cursor = None
    if has_more:
        created_at, run_id = key(items[-1])
        next_cursor = _cursor(created_at, run_id)
    return RunPage(
        items=items,
        pagination={
            "limit": limit,
            "offset": offset,
            "next_offset": offset + limit if has_more and not cursor else None,
            "next_cursor": next_cursor,
        },
    )


def run_list(
    *,
    status: str | None = None,
    dataset_key: str | None = None,
    mode: str | None = None,
    limit: int = 20,
    offset: int = 0,
    cursor: str | None = None,
) -> RunPage[TunixRun]:
    """A page of runs, newest first (created_at, then run_id), filters combined with AND.

    With a `cursor` (from a previous page's `next_cursor`) the page starts right after
    that run whatever its depth, and `offset` is ignored. Items are TunixRun
    instances with stdout, stderr and config deferred. Raises InvalidCursor for a
    cursor this server did not issue.
    """
    return _page(
        _filtered(status, dataset_key, mode),
        limit=limit,
        offset=offset,
        cursor=cursor,
        fetch=lambda qs: list(qs.defer(*LIST_DEFERRED)),
        key=lambda run: (run.created_at, run.run_id),
    )


def run_list_values(
    *,
    status: str | None = None,
    dataset_key: str | None = None,
    mode: str | None = None,
    limit: int = 20,
    offset: int = 0,
    cursor: str | None = None,
) -> RunPage[dict[str, Any]]:
    """`run_list` for the JSON API: items are plain dicts of LIST_VALUES (no model objects)."""
    if connection.vendor == "postgresql":
        rows = _pg_list_rows(status, dataset_key, mode, limit, offset, cursor)
        return _assemble(
            rows,
            limit=limit,
            offset=0 if cursor else offset,
            cursor=cursor,
            key=lambda row: (row["created_at"], row["run_id"]),
        )
    return _page(
        _filtered(status, dataset_key, mode),
        limit=limit,
        offset=offset,
        cursor=cursor,
        fetch=lambda qs: list(qs.values(*LIST_VALUES)),
        key=lambda row: (row["created_at"], row["run_id"]),
    )


_PG_COLUMNS = ", ".join(LIST_VALUES)
_PG_ORDER = "ORDER BY created_at DESC, run_id DESC"


def _pg_list_rows(
    status: str | None,
    dataset_key: str | None,
    mode: str | None,
    limit: int,
    offset: int,
    cursor: str | None,
) -> list[dict[str, Any]]:
    """`limit + 1` list rows in one statement, skipping the ORM's per-request SQL compilation.

    The hottest read of the API (issue 5's throughput goals); the same query as the
    ORM path (run_list), which SQLite uses and the tests compare against.
    """
    sql, params = pg_list_sql(status, dataset_key, mode, limit, offset, cursor)
    with connection.cursor() as db:
        db.execute(sql, params)
        return [dict(zip(LIST_VALUES, row, strict=True)) for row in db.fetchall()]


def pg_list_sql(
    status: str | None,
    dataset_key: str | None,
    mode: str | None,
    limit: int,
    offset: int,
    cursor: str | None,
) -> tuple[str, list[Any]]:
    """The PostgreSQL list statement and its parameters (also EXPLAINed by the benchmark).

    Deep offsets take the page's ids from the filter's index alone (an index-only
    scan), then only those rows; a cursor is a row comparison the index serves.
    """
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("status", status), ("dataset_key", dataset_key), ("mode", mode)):
        if value:
            where.append(f"{column} = %s")
            params.append(value)
    if cursor:
        created_at, run_id = cursor_decode(cursor)
        where.append("(created_at, run_id) < (%s, %s)")
        params += [created_at, run_id]
        offset = 0
    condition = f"WHERE {' AND '.join(where)}" if where else ""
    table = TunixRun._meta.db_table
    if offset >= DEEP_OFFSET:
        sql = (
            f"SELECT {_PG_COLUMNS} FROM {table} WHERE run_id IN ("  # noqa: S608 - no user text
            f"SELECT run_id FROM {table} {condition} {_PG_ORDER} LIMIT %s OFFSET %s"
            f") {_PG_ORDER}"
        )
    else:
        sql = f"SELECT {_PG_COLUMNS} FROM {table} {condition} {_PG_ORDER} LIMIT %s OFFSET %s"  # noqa: S608
    return sql, [*params, limit + 1, offset]


def run_get(*, run_id: uuid.UUID) -> TunixRun | None:
    """One run, all columns. A precomposed statement: the detail endpoint's only query."""
    meta = TunixRun._meta
    columns = ", ".join(f.column for f in meta.concrete_fields)
    key = meta.pk.get_db_prep_value(uuid.UUID(str(run_id)), connection)
    sql = f"SELECT {columns} FROM {meta.db_table} WHERE run_id = %s"  # noqa: S608 - our names
    found = list(TunixRun.objects.raw(sql, [key]))
    return found[0] if found else None


def run_events(*, run_id: uuid.UUID) -> list[RunEvent]:
    """A run's status changes, oldest first."""
    return list(RunEvent.objects.filter(run_id=run_id).order_by("created_at", "id"))


def run_metrics(*, run_id: uuid.UUID) -> list[RunMetric]:
    """A run's logged steps, by step."""
    return list(RunMetric.objects.filter(run_id=run_id).order_by("step"))


def run_directory(*, run_id: uuid.UUID) -> Path:
    """DATA_DIR/runs/<run_id>: manifest, materialised dataset, logs, metrics of a run."""
    return Path(settings.DATA_DIR) / "runs" / str(uuid.UUID(str(run_id)))


def run_log_path(*, run_id: uuid.UUID, stream: str) -> Path | None:
    """The complete stdout/stderr log of a local run, if it exists."""
    if stream not in LOG_STREAMS:
        raise ValueError(f"stream must be one of {', '.join(LOG_STREAMS)}")
    path = run_directory(run_id=run_id) / f"{stream}.log"
    return path if path.is_file() else None
