"""Reads of the run registry shared by the API, the pages and the commands."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, Q, Subquery, Sum
from django.utils import timezone

from runs.metrics import series_level
from runs.models import (
    TERMINAL_STATUSES,
    RunEvent,
    RunLogChunk,
    RunMetric,
    RunStatus,
    TunixRun,
    TunixWorker,
)
from tunix_registry.actors import with_username
from tunix_registry.cursors import INVALID_CURSOR_MESSAGE, InvalidCursor, cursor_pack, cursor_unpack

LOG_STREAMS = ("stdout", "stderr")
# The columns a list row is read with: what the history table and the API's list
# items show, and what the cursor is made of. Reading only these (rather than every
# column but the big ones) saves about a sixth of the list request's CPU: fewer
# columns to compile, send and convert (docs/benchmarks.md).
LIST_COLUMNS = (
    "run_id",
    "dataset_key",
    "model_id",
    "mode",
    "status",
    "started_at",
    "duration_seconds",
    "created_at",
    "final_loss",
    "launched_by",
)
# From this offset on, a page first reads its ids from an index alone, then the rows.
DEEP_OFFSET = 200


@dataclass(frozen=True)
class RunPage:
    items: list[TunixRun]
    # {"limit", "offset", "next_offset", "next_cursor"}
    pagination: dict[str, Any]


def cursor_encode(run: TunixRun) -> str:
    """The cursor of the page that starts right after `run`."""
    return cursor_pack(f"{run.created_at.isoformat()}|{run.run_id}")


def cursor_decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, run_id) a `cursor_encode` cursor names; InvalidCursor otherwise."""
    raw = cursor_unpack(cursor)
    try:
        created, run_id = raw.split("|")
        created_at = datetime.fromisoformat(created)
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        return created_at, uuid.UUID(run_id)
    except ValueError:
        raise InvalidCursor(INVALID_CURSOR_MESSAGE) from None


def run_list(
    *,
    status: str | None = None,
    dataset_key: str | None = None,
    mode: str | None = None,
    launched_by: str | None = None,
    limit: int = 20,
    offset: int = 0,
    cursor: str | None = None,
) -> RunPage:
    """A page of runs, newest first (created_at, then run_id), filters combined with AND.

    The one read of the run list: the history page and `GET /api/tunix/runs`
    both call it (docs/decisions.md#one-read-path). Empty strings are absent
    filters (docs/decisions.md#and-filters). With a `cursor` (a previous page's
    `next_cursor`) the page starts right after that run whatever its depth, and
    `offset` is ignored (docs/decisions.md#pagination). Items are TunixRun
    instances holding LIST_COLUMNS only (any other field would cost a query per
    row); `limit + 1` rows are read to know whether more exist, each with its
    launcher's username joined in.
    `launched_by` is a username (an unknown one matches nothing). Raises
    InvalidCursor for a cursor this server did not issue.
    """
    qs = TunixRun.objects.all()
    if status:
        qs = qs.filter(status=status)
    if dataset_key:
        qs = qs.filter(dataset_key=dataset_key)
    if mode:
        qs = qs.filter(mode=mode)
    if launched_by:
        # The user's id as a subquery (its unique username), so that the page walks
        # the launcher's index; a join on the username would walk every run instead.
        # An unknown username is NULL, which matches nothing.
        launcher = get_user_model().objects.filter(username=launched_by).values("pk")[:1]
        qs = qs.filter(launched_by=Subquery(launcher))
    if cursor:
        created_at, run_id = cursor_decode(cursor)
        # `created_at <= X` bounds the index scan; the exclusion drops X's own
        # tie-group from that run on.
        qs = qs.filter(created_at__lte=created_at).exclude(
            Q(created_at=created_at) & Q(run_id__gte=run_id)
        )
        offset = 0
    qs = qs.order_by("-created_at", "-run_id")
    if offset >= DEEP_OFFSET:
        # The ids of the page first (the list indexes alone serve that skip), then
        # only those rows, in the same order.
        ids = qs.values_list("run_id", flat=True)[offset : offset + limit + 1]
        rows = list(
            with_username(TunixRun.objects.filter(run_id__in=list(ids)), "launched_by").only(
                *LIST_COLUMNS
            )
        )
        rows.sort(key=lambda run: (run.created_at, run.run_id), reverse=True)
    else:
        rows = list(
            with_username(qs, "launched_by").only(*LIST_COLUMNS)[offset : offset + limit + 1]
        )
    has_more = len(rows) > limit
    items = rows[:limit]
    return RunPage(
        items=items,
        pagination={
            "limit": limit,
            "offset": offset,
            "next_offset": offset + limit if has_more and not cursor else None,
            "next_cursor": cursor_encode(items[-1]) if has_more else None,
        },
    )


def run_get(*, run_id: uuid.UUID) -> TunixRun | None:
    """One run, all columns, its launcher's username; or None (API detail, run page, commands)."""
    return with_username(TunixRun.objects.filter(pk=run_id), "launched_by").first()


def run_resumed_by(*, run_id: uuid.UUID) -> list[TunixRun]:
    """The runs that continued this one's checkpoints, newest first (ids, status, dates only)."""
    return list(
        TunixRun.objects.filter(resumed_from_id=run_id)
        .only("run_id", "status", "created_at", "started_at", "resumed_from_id")
        .order_by("-created_at", "-run_id")
    )


def run_finished_exists(*, run_id: uuid.UUID) -> bool:
    """Whether the run exists and has finished: one primary-key lookup, no row read.

    A finished run never changes again (docs/decisions.md#immutable-resources),
    so this is all a conditional GET of it needs.
    """
    return TunixRun.objects.filter(pk=run_id, status__in=TERMINAL_STATUSES).exists()


def run_events(*, run_id: uuid.UUID) -> list[RunEvent]:
    """A run's status changes, oldest first."""
    return list(RunEvent.objects.filter(run_id=run_id).order_by("created_at", "id"))


def run_metrics(*, run_id: uuid.UUID) -> list[RunMetric]:
    """A run's logged steps, by step."""
    return list(RunMetric.objects.filter(run_id=run_id).order_by("step"))


def run_chart_metrics(*, run: TunixRun, max_points: int) -> list[RunMetric]:
    """A run's logged steps as its page draws them, by step.

    Every step when the run logged at most `max_points` (or its count is unknown).
    Beyond that, the rows of the smallest level that keeps at most `max_points`
    (RunMetric.level: the first step and every 2**L-th after it), every step with an
    eval loss, and the last step; the database finds them through
    runmetric_run_level_idx, runmetric_run_eval_idx and the (run, step) key, so a
    run of 100,000 steps is drawn from a couple of thousand rows.
    """
    rows = RunMetric.objects.filter(run_id=run.run_id)
    level = series_level(run.metrics_count, max_points)
    if level:
        kept = Q(level__gte=level) | Q(eval_loss__isnull=False)
        if run.metrics_steps is not None:
            kept |= Q(step=run.metrics_steps)
        rows = rows.filter(kept)
    return list(rows.order_by("step"))


def run_directory(*, run_id: uuid.UUID) -> Path:
    """DATA_DIR/runs/<run_id>: manifest, materialised dataset, logs, metrics of a run."""
    return Path(settings.DATA_DIR) / "runs" / str(uuid.UUID(str(run_id)))


def run_log_path(*, run_id: uuid.UUID, stream: str) -> Path | None:
    """The complete stdout/stderr log of a local run, if it exists."""
    if stream not in LOG_STREAMS:
        raise ValueError(f"stream must be one of {', '.join(LOG_STREAMS)}")
    path = run_directory(run_id=run_id) / f"{stream}.log"
    return path if path.is_file() else None


# --- Live runs: log chunks, queue, workers ------------------------------------------------

# The most chunks one read returns; a client that is behind reads again from the last seq.
LOG_CHUNK_PAGE = 500


def run_log_chunks(
    *, run_id: uuid.UUID, since_seq: int = 0, limit: int = LOG_CHUNK_PAGE
) -> list[RunLogChunk]:
    """A run's stored output chunks with seq > since_seq, oldest first (at most `limit`)."""
    return list(
        RunLogChunk.objects.filter(run_id=run_id, seq__gt=since_seq).order_by("seq")[:limit]
    )


def run_log_tail(*, run_id: uuid.UUID, max_chunks: int = 200) -> list[RunLogChunk]:
    """The last `max_chunks` stored chunks of a run, oldest first (the end of a long log)."""
    tail = list(RunLogChunk.objects.filter(run_id=run_id).order_by("-seq")[:max_chunks])
    tail.reverse()
    return tail


def run_log_text(*, run_id: uuid.UUID, stream: str) -> Iterator[str]:
    """A run's stored output of one stream, chunk by chunk (the gap marker included)."""
    if stream not in LOG_STREAMS:
        raise ValueError(f"stream must be one of {', '.join(LOG_STREAMS)}")
    chunks = (
        RunLogChunk.objects.filter(run_id=run_id, stream__in=[stream, "marker"])
        .order_by("seq")
        .values_list("chunk", flat=True)
    )
    yield from chunks.iterator(chunk_size=200)


def run_status(*, run_id: uuid.UUID) -> str | None:
    """A run's status alone (None: no such run)."""
    return TunixRun.objects.filter(pk=run_id).values_list("status", flat=True).first()


def run_queue_position(*, run: TunixRun) -> int | None:
    """1 for the next pending run of its queue, 2 for the one after...; None if not pending."""
    if run.status != RunStatus.PENDING:
        return None
    ahead = TunixRun.objects.filter(
        status=RunStatus.PENDING, queue=run.queue, created_at__lt=run.created_at
    ).count()
    return ahead + 1


def workers_live(*, now: datetime | None = None) -> list[TunixWorker]:
    """Workers that have beaten within a lease and not stopped, by host."""
    now = now or timezone.now()
    since = now - timedelta(seconds=settings.TUNIX_RUN_LEASE_SECONDS)
    return list(
        TunixWorker.objects.filter(stopped_at__isnull=True, heartbeat_at__gte=since).order_by(
            "host", "worker_id"
        )
    )


def queue_depths() -> dict[str, int]:
    """Pending runs per configured queue (every queue of TUNIX_QUEUES, zeros included)."""
    depths = dict.fromkeys(settings.TUNIX_QUEUES, 0)
    rows = (
        TunixRun.objects.filter(status=RunStatus.PENDING)
        .values_list("queue")
        .annotate(n=Count("run_id"))
        .order_by()
    )
    for queue, n in rows:
        depths[queue] = n
    return depths


# --- Monitoring (GET /metrics) ----------------------------------------------------------


@dataclass(frozen=True)
class DurationHistogram:
    """The durations of the finished runs of one mode and status."""

    mode: str
    status: str
    # Cumulative: runs that took at most each bound, in the bounds' order.
    bucket_counts: list[int]
    sum_seconds: float
    count: int


def run_counts() -> list[tuple[str, str, int]]:
    """(status, mode, number of runs) for every status and mode that has runs."""
    rows = TunixRun.objects.values_list("status", "mode").annotate(n=Count("run_id")).order_by()
    return [(status, mode, n) for status, mode, n in rows]


def run_duration_histograms(*, bounds: tuple[float, ...]) -> list[DurationHistogram]:
    """Duration histograms of finished runs by mode and status, in one aggregate query."""
    per_bound = {
        f"le_{i}": Count("run_id", filter=Q(duration_seconds__lte=bound))
        for i, bound in enumerate(bounds)
    }
    rows = (
        TunixRun.objects.filter(status__in=TERMINAL_STATUSES, duration_seconds__isnull=False)
        .values("mode", "status")
        .annotate(n=Count("run_id"), total=Sum("duration_seconds"), **per_bound)
        .order_by("mode", "status")
    )
    return [
        DurationHistogram(
            mode=row["mode"],
            status=row["status"],
            bucket_counts=[row[f"le_{i}"] for i in range(len(bounds))],
            sum_seconds=float(row["total"] or 0.0),
            count=row["n"],
        )
        for row in rows
    ]
