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
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Q, QuerySet

from runs.models import RunEvent, RunMetric, TunixRun
from tunix_registry.sqltime import iso_utc, pg_utc_text

LOG_STREAMS = ("stdout", "stderr")
# The big columns a list never reads.
LIST_DEFERRED = ("stdout", "stderr", "config")
# The keys of a JSON list item, in the API's order.
LIST_ITEM = (
    "run_id",
    "dataset_key",
    "model_id",
    "mode",
    "status",
    "started_at",
    "duration_seconds",
)
# The columns a list reads: the item's, plus created_at for the cursor.
LIST_VALUES = (*LIST_ITEM, "created_at")
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


def _cursor(created_at: datetime | str, run_id: uuid.UUID | str) -> str:
    """created_at as a datetime, or already in its isoformat() text."""
    moment = created_at if isinstance(created_at, str) else created_at.isoformat()
    raw = f"{moment}|{run_id}"
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
    key: Callable[[T], tuple[Any, Any]],
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
        position = {str(run_id): i for i, run_id in enumerate(ids)}
        rows = sorted(found, key=lambda row: position[str(key(row)[1])])
    else:
        rows = fetch(qs[offset : offset + limit + 1])
    return _assemble(rows, limit=limit, offset=offset, cursor=cursor, key=key)


def _assemble(
    rows: list[T],
    *,
    limit: int,
    offset: int,
    cursor: str | None,
    key: Callable[[T], tuple[Any, Any]],
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


def run_list_json(
    *,
    status: str | None = None,
    dataset_key: str | None = None,
    mode: str | None = None,
    limit: int = 20,
    offset: int = 0,
    cursor: str | None = None,
) -> RunPage[dict[str, Any]]:
    """`run_list` for the JSON API: items are JSON-ready dicts of LIST_ITEM (no model objects).

    run_id and started_at are strings (started_at as `datetime.isoformat()` renders
    it). On PostgreSQL one precomposed statement has the database render them, which
    spares the ORM's SQL compilation and the per-value timestamp loader; SQLite goes
    through the ORM (run_list's own query).
    """
    db = connections[DEFAULT_DB_ALIAS]  # looked up once: each proxy access costs
    if db.vendor == "postgresql":
        sql, params = pg_list_sql(status, dataset_key, mode, limit, offset, cursor)
        with db.cursor() as statement:
            statement.execute(sql, params)
            rows = [_pg_item(row) for row in statement.fetchall()]
        page = _assemble(
            rows,
            limit=limit,
            offset=0 if cursor else offset,
            cursor=cursor,
            key=lambda row: (row["created_at"], row["run_id"]),
        )
    else:
        page = _page(
            _filtered(status, dataset_key, mode),
            limit=limit,
            offset=offset,
            cursor=cursor,
            fetch=lambda qs: [_orm_item(row) for row in qs.values(*LIST_VALUES)],
            key=lambda row: (row["created_at"], row["run_id"]),
        )
    for row in page.items:
        del row["created_at"]  # only the cursor needed it
    return page


def _orm_item(row: dict[str, Any]) -> dict[str, Any]:
    item = {name: row[name] for name in LIST_ITEM}
    item["run_id"] = str(row["run_id"])
    item["started_at"] = row["started_at"].isoformat()
    item["created_at"] = row["created_at"]
    return item


def _iso_text(text: str) -> str:
    """PostgreSQL's UTC text as an aware UTC datetime's isoformat() renders it."""
    return iso_utc(text, "+00:00")


def _pg_item(row: tuple[Any, ...]) -> dict[str, Any]:
    run_id, dataset_key, model_id, mode, status, started, duration, created = row
    return {
        "run_id": run_id,
        "dataset_key": dataset_key,
        "model_id": model_id,
        "mode": mode,
        "status": status,
        "started_at": _iso_text(started),
        "duration_seconds": duration,
        "created_at": _iso_text(created),
    }


_PG_COLUMNS = ", ".join(
    [
        "run_id::text AS run_id_text",
        "dataset_key",
        "model_id",
        "mode",
        "status",
        pg_utc_text("started_at"),
        "duration_seconds",
        pg_utc_text("created_at"),
    ]
)
_PG_ORDER = "ORDER BY created_at DESC, run_id DESC"


# The newest hour whose runs, with all newer ones, exceed the offset: the page
# starts inside it, `skip` runs after the end of that hour. (No such hour: the
# offset is past the last run, hour_end is NULL and the page is empty.)
_PG_ANCHOR = (
    "SELECT to_timestamp((hour + 1) * 3600) AS hour_end, %s - (through - runs) AS skip "
    "FROM (SELECT hour, runs, sum(runs) OVER (ORDER BY hour DESC) AS through "
    "FROM runs_hourcount) AS counted "
    "WHERE through > %s ORDER BY hour DESC LIMIT 1"
)


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
    An unfiltered deep offset first finds, from the per-hour counts of
    `runs_hourcount` (migration 0002), the hour that holds row `offset`, and
    walks the index only from the end of that hour.
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
    if offset >= DEEP_OFFSET and not where:
        sql = (
            f"WITH anchor AS ({_PG_ANCHOR}) "  # noqa: S608 - no user text
            f"SELECT {_PG_COLUMNS} FROM {table} WHERE run_id IN ("
            f"SELECT run_id FROM {table} "
            "WHERE created_at < (SELECT hour_end FROM anchor) "
            f"{_PG_ORDER} LIMIT %s OFFSET (SELECT skip FROM anchor)"
            f") {_PG_ORDER}"
        )
        return sql, [offset, offset, limit + 1]
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


# GET /api/tunix/runs/{run_id} on PostgreSQL: the TunixRunResponse values of
# services.run_response, with the timestamps and the id rendered by the database.
_PG_DETAIL_SQL = (
    "SELECT run_id::text AS run_id_text, status, mode, dataset_key, model_id, output_dir, "  # noqa: S608
    "exit_code, stdout, stderr, duration_seconds, "
    f"{pg_utc_text('started_at')}, {pg_utc_text('completed_at')}, message, "
    "metrics_steps, final_loss, best_eval_loss, tokens_per_second "
    f"FROM {TunixRun._meta.db_table} WHERE run_id = %s"
)


def run_detail_values(*, run_id: uuid.UUID) -> dict[str, Any] | None:
    """services.run_response(run_get(run_id)) with JSON-ready values, or None (PostgreSQL only).

    One precomposed statement, the detail endpoint's only query: no model
    instance, no timestamp loader.
    """
    with connections[DEFAULT_DB_ALIAS].cursor() as statement:
        statement.execute(_PG_DETAIL_SQL, [run_id])
        row = statement.fetchone()
    if row is None:
        return None
    (key, status, mode, dataset_key, model_id, output_dir, exit_code, stdout, stderr,
     duration, started, completed, message, steps, final, best, speed) = row  # fmt: skip
    return {
        "run_id": key,
        "status": status,
        "mode": mode,
        "dataset_key": dataset_key,
        "model_id": model_id,
        "output_dir": output_dir,
        "exit_code": exit_code,
        "stdout": stdout,
        "stderr": stderr,
        "duration_seconds": duration,
        "started_at": _iso_text(started),
        "completed_at": None if completed is None else _iso_text(completed),
        "message": message,
        "metrics": None
        if steps is None
        else {
            "steps": steps,
            "final_loss": final,
            "best_eval_loss": best,
            "tokens_per_second": speed,
        },
    }


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
