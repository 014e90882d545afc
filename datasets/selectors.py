"""Reads of the datasets app, shared by the API, the pages, the commands and the runs app."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from django.db import connection
from django.db.models import CharField, Exists, OuterRef, QuerySet
from django.db.models.expressions import RawSQL

from datasets.exports import RENDERERS, check_format
from datasets.keys import dataset_key_validate
from datasets.models import Dataset, DatasetMember
from traces.models import Trace
from traces.services import iso_z

# Rows fetched per round trip while streaming an export.
EXPORT_CHUNK_SIZE = 1000
_EXPORT_COLUMNS = ("id_text", "created_iso", "trace_version", "payload")
DATASET_SCHEMA_VERSION = "1.0"

# The database writes the id and the timestamp as the exports print them (the
# hyphenated UUID; Python's isoformat() of the UTC time, microseconds left out
# when zero), which saves parsing both into objects and formatting them again.
_T = '"traces_trace"'
_POSTGRES_TEXT = (
    f'{_T}."id"::text',
    f"to_char({_T}.\"created_at\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
    f'CASE WHEN mod(EXTRACT(MICROSECONDS FROM {_T}."created_at")::bigint, 1000000) = 0 '
    f"THEN '' ELSE to_char({_T}.\"created_at\" AT TIME ZONE 'UTC', '.US') END || '+00:00'",
)
# SQLite: Django stores UUIDs as 32 hex digits and datetimes as UTC text
# "YYYY-MM-DD HH:MM:SS[.ffffff]".
_SQLITE_TEXT = (
    f"lower(substr({_T}.\"id\", 1, 8) || '-' || substr({_T}.\"id\", 9, 4) || '-' || "
    f"substr({_T}.\"id\", 13, 4) || '-' || substr({_T}.\"id\", 17, 4) || '-' || "
    f'substr({_T}."id", 21))',
    f"replace({_T}.\"created_at\", ' ', 'T') || '+00:00'",
)


def export_rows(queryset: QuerySet[Trace]) -> QuerySet[Trace, tuple[Any, ...]]:
    """(id text, created_at ISO text, trace_version, payload) rows of `queryset`."""
    id_sql, created_sql = _POSTGRES_TEXT if connection.vendor == "postgresql" else _SQLITE_TEXT
    return queryset.annotate(
        id_text=RawSQL(id_sql, (), output_field=CharField()),  # noqa: S611 - constant SQL
        created_iso=RawSQL(created_sql, (), output_field=CharField()),  # noqa: S611
    ).values_list(*_EXPORT_COLUMNS)


def dataset_get(*, key: str) -> Dataset | None:
    """The dataset with this key, or None. Raises InvalidDatasetKey for an invalid key."""
    dataset_key_validate(key)
    return Dataset.objects.filter(key=key).first()


def dataset_list(*, limit: int, offset: int) -> list[Dataset]:
    """`limit` datasets from `offset`, newest first (created_at, then id)."""
    return list(
        Dataset.objects.order_by("-created_at", "-id").defer("filters", "stats")[
            offset : offset + limit
        ]
    )


def dataset_trace_count(*, key: str) -> int:
    """How many of the dataset's traces still exist (0 for an unknown dataset).

    The dataset's id is looked up first and the count filters on it as a
    value: PostgreSQL then estimates the dataset's size from the membership
    statistics and joins its members (the (dataset, trace) index, index-only)
    to the traces' primary key. Joined on the key instead, it plans for an
    average-sized dataset, which for one much bigger dataset is a hash join
    over every trace (twice the time on 100,000 traces).
    """
    dataset_key_validate(key)
    dataset_id = Dataset.objects.filter(key=key).values_list("pk", flat=True).first()
    if dataset_id is None:
        return 0
    return Trace.objects.filter(dataset_memberships__dataset_id=dataset_id).count()


def dataset_trace_ids(*, dataset: Dataset) -> list[str]:
    """The ids of the dataset's traces in selection order (deleted traces included)."""
    return [
        str(trace_id)
        for trace_id in dataset.members.order_by("position").values_list("trace_id", flat=True)
    ]


def dataset_traces(*, dataset: Dataset, limit: int, offset: int) -> list[dict[str, Any]]:
    """A page of the dataset's existing traces in selection order (for the dataset page)."""
    rows = (
        Trace.objects.filter(dataset_memberships__dataset=dataset)
        .order_by("dataset_memberships__position")
        .values(
            "id", "created_at", "trace_version", "payload__prompt", "dataset_memberships__position"
        )
    )[offset : offset + limit]
    return [
        {
            "id": row["id"],
            "created_at": row["created_at"],
            "trace_version": row["trace_version"],
            "prompt": row["payload__prompt"],
            "position": row["dataset_memberships__position"],
        }
        for row in rows
    ]


def dataset_manifest(*, dataset: Dataset, trace_ids: list[str] | None = None) -> dict[str, Any]:
    """The §3.6 manifest of a dataset, rendered from the database."""
    if trace_ids is None:
        trace_ids = dataset_trace_ids(dataset=dataset)
    created_at = iso_z(dataset.created_at)
    return {
        "dataset_key": dataset.key,
        "build_id": str(dataset.build_id),
        "dataset_name": dataset.name,
        "dataset_version": dataset.version,
        "dataset_schema_version": DATASET_SCHEMA_VERSION,
        "created_at": created_at,
        "filters": dataset.filters,
        "selection_strategy": dataset.selection_strategy,
        "seed": dataset.seed,
        "trace_ids": trace_ids,
        "trace_count": dataset.trace_count,
        "stats": dataset.stats,
        "session_id": dataset.session_id,
        "parent_dataset_id": dataset.parent_dataset_id,
        "training_run_id": dataset.training_run_id,
    }


def _dataset_rows_between_qs(
    dataset: Dataset, start: int, stop: int
) -> QuerySet[Trace, tuple[Any, ...]]:
    return export_rows(
        Trace.objects.filter(
            dataset_memberships__dataset_id=dataset.pk,
            dataset_memberships__position__gte=start,
            dataset_memberships__position__lt=stop,
        ).order_by("dataset_memberships__position")
    )


def _dataset_rows_between(dataset: Dataset, start: int, stop: int) -> list[tuple[Any, ...]]:
    """Existing traces at positions start..stop-1, in position order (one indexed range scan)."""
    return list(_dataset_rows_between_qs(dataset, start, stop))


def _stored_sft_lines(dataset: Dataset, size: int, chunk: int) -> Iterator[str]:
    """The tunix_sft lines stored at build time, for members whose trace still exists."""
    existing = Trace.objects.filter(pk=OuterRef("trace_id"))
    for start in range(0, size, chunk):
        yield from (
            DatasetMember.objects.filter(
                Exists(existing),
                dataset_id=dataset.pk,
                position__gte=start,
                position__lt=start + chunk,
            )
            .order_by("position")
            .values_list("sft_line", flat=True)
        )


def dataset_export_lines(*, key: str, fmt: str = "trace") -> Iterator[str]:
    """The dataset's records in format `fmt`, one JSON line (ending in "\\n") per trace.

    Streamed: positions are read in ranges of EXPORT_CHUNK_SIZE (ordinary indexed
    queries, no server-side cursor), so memory stays flat for any size.
    Membership order; traces deleted since the build are skipped. Raises at call
    time (not on first iteration): ValueError for an unknown format,
    InvalidDatasetKey for an invalid key, LookupError for an unknown dataset.
    """
    render = RENDERERS[check_format(fmt)]
    dataset = dataset_get(key=key)
    if dataset is None:
        raise LookupError(f"Dataset not found: {key}")
    # Positions are 0..trace_count-1, written once by dataset_build.
    size = dataset.trace_count
    chunk = EXPORT_CHUNK_SIZE

    if fmt == "tunix_sft":
        return _stored_sft_lines(dataset, size, chunk)

    def lines() -> Iterator[str]:
        for start in range(0, size, chunk):
            for trace_id, created_at, version, payload in _dataset_rows_between(
                dataset, start, start + chunk
            ):
                yield render(trace_id, created_at, version, payload, key)

    return lines()


def traces_export_lines(*, trace_ids: Sequence[uuid.UUID], fmt: str = "tunix_sft") -> Iterator[str]:
    """Records of the given traces in list order: duplicates repeat, unknown ids are skipped.

    Raises ValueError at call time for an unknown format.
    """
    render = RENDERERS[check_format(fmt)]
    ids = list(trace_ids)

    def lines() -> Iterator[str]:
        for start in range(0, len(ids), EXPORT_CHUNK_SIZE):
            chunk = ids[start : start + EXPORT_CHUNK_SIZE]
            rows = export_rows(Trace.objects.filter(id__in=set(chunk)))
            found = {row[0]: row for row in rows}
            for trace_id in chunk:
                row = found.get(str(trace_id))
                if row is not None:
                    yield render(row[0], row[1], row[2], row[3], "")

    return lines()
