"""Reads of the datasets app, shared by the API, the pages, the commands and the runs app."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from django.db.models import Exists, OuterRef, QuerySet

from datasets.exports import RENDERERS, check_format
from datasets.keys import dataset_key_validate
from datasets.models import Dataset, DatasetMember
from traces.models import Trace
from tunix_registry.actors import with_username
from tunix_registry.timestamps import utc_iso

# Members read per query while streaming an export: one range of positions,
# read by the (dataset, position) index, each trace found by its primary key.
EXPORT_CHUNK_SIZE = 1000
DATASET_SCHEMA_VERSION = "1.0"

# A trace's columns as the export renderers take them.
ExportRow = tuple[str, str, str, dict[str, Any]]


def export_row(
    trace_id: uuid.UUID, created_at: datetime, trace_version: str, payload: dict[str, Any]
) -> ExportRow:
    """(id, created_at, trace_version, payload) with the id and the time as exports print them.

    The id hyphenated; created_at as `isoformat()` of the UTC time, ending in
    "+00:00" (the export records' own format, unlike the API's "Z").
    """
    return str(trace_id), utc_iso(created_at, suffix="+00:00"), trace_version, payload


def trace_export_rows(queryset: QuerySet[Trace]) -> Iterator[ExportRow]:
    """The export rows of `queryset`, in its order (only the four columns are read)."""
    for row in queryset.values_list("id", "created_at", "trace_version", "payload"):
        yield export_row(*row)


def dataset_get(*, key: str) -> Dataset | None:
    """The dataset with this key, or None. Raises InvalidDatasetKey for an invalid key."""
    dataset_key_validate(key)
    return with_username(Dataset.objects.filter(key=key), "created_by").first()


def dataset_build_id(*, key: str) -> uuid.UUID | None:
    """The build id of the dataset with this key, or None (one lookup in the key's index).

    A built version never changes, so its key and build id name its manifest
    for good (docs/decisions.md#immutable-resources); the build id also tells
    a version apart from one built again under the same key after a removal.
    """
    dataset_key_validate(key)
    return Dataset.objects.filter(key=key).values_list("build_id", flat=True).first()


def dataset_list(*, limit: int, offset: int) -> list[Dataset]:
    """`limit` datasets from `offset`, newest first (created_at, then id)."""
    return list(
        with_username(Dataset.objects.order_by("-created_at", "-id"), "created_by").defer(
            "filters", "stats"
        )[offset : offset + limit]
    )


def dataset_trace_count(*, key: str | None = None, dataset: Dataset | None = None) -> int:
    """How many of the dataset's traces still exist (0 for an unknown dataset).

    Give the `key`, or the `dataset` already read (one lookup fewer). The
    dataset's id is looked up first and the count filters on it as a value:
    PostgreSQL then estimates the dataset's size from the membership
    statistics and joins its members (the (dataset, trace) index, index-only)
    to the traces' primary key. Joined on the key instead, it plans for an
    average-sized dataset, which for one much bigger dataset is a hash join
    over every trace (twice the time on 100,000 traces).
    """
    if dataset is not None:
        dataset_id: int | None = dataset.pk
    elif key is not None:
        dataset_key_validate(key)
        dataset_id = Dataset.objects.filter(key=key).values_list("pk", flat=True).first()
    else:
        raise TypeError("dataset_trace_count() needs a key or a dataset")
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
    """The manifest of a dataset (the API's and manifest.json's), rendered from the database."""
    if trace_ids is None:
        trace_ids = dataset_trace_ids(dataset=dataset)
    created_at = utc_iso(dataset.created_at)
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


def _members(dataset: Dataset) -> QuerySet[DatasetMember]:
    """The dataset's members whose trace still exists, in position order."""
    existing = Trace.objects.filter(pk=OuterRef("trace_id"))
    return DatasetMember.objects.filter(Exists(existing), dataset_id=dataset.pk).order_by(
        "position"
    )


def _positions(dataset: Dataset, chunk: int) -> Iterator[tuple[int, int]]:
    """Ranges [start, stop) over the positions, 0..trace_count-1 (written by dataset_build)."""
    for start in range(0, dataset.trace_count, chunk):
        yield start, start + chunk


def stored_lines_between(
    dataset: Dataset, column: str, start: int, stop: int
) -> QuerySet[DatasetMember, str]:
    """The lines stored in `column` at positions start..stop-1 whose trace still exists.

    The plan is a range scan of the (dataset, position) index with one probe
    of the traces' primary key per member (an index-only nested loop).
    """
    return (
        _members(dataset)
        .filter(position__gte=start, position__lt=stop)
        .values_list(column, flat=True)
    )


def _stored_lines(dataset: Dataset, column: str, chunk: int) -> Iterator[str]:
    for start, stop in _positions(dataset, chunk):
        yield from stored_lines_between(dataset, column, start, stop)


def _rendered_lines(dataset: Dataset, fmt: str, chunk: int) -> Iterator[str]:
    """Lines rendered from the traces now (for formats not stored at build time)."""
    render = RENDERERS[fmt]
    for start, stop in _positions(dataset, chunk):
        rows = DatasetMember.objects.filter(
            dataset_id=dataset.pk, position__gte=start, position__lt=stop
        ).order_by("position")
        # The inner join to traces skips members whose trace is gone.
        for row in rows.values_list(
            "trace_id", "trace__created_at", "trace__trace_version", "trace__payload"
        ):
            yield render(*export_row(*row), dataset.key)


# Formats whose line is rendered once, at build time, and stored on the member
# (a dataset and its traces never change: docs/decisions.md#immutable-resources).
STORED_LINE_COLUMNS = {"trace": "trace_line", "tunix_sft": "sft_line"}


def dataset_export_lines(*, key: str, fmt: str = "trace") -> Iterator[str]:
    """The dataset's records in format `fmt`, one JSON line (ending in "\\n") per trace.

    Streamed: positions are read in ranges of EXPORT_CHUNK_SIZE (ordinary indexed
    queries, no server-side cursor), so memory stays flat for any size.
    Membership order; traces deleted since the build are skipped. The `trace`
    and `tunix_sft` lines were rendered when the dataset was built and are read
    as stored text; `training_example` lines are rendered from the traces.
    Raises at call time (not on first iteration): ValueError for an unknown
    format, InvalidDatasetKey for an invalid key, LookupError for an unknown dataset.
    """
    check_format(fmt)
    dataset = dataset_get(key=key)
    if dataset is None:
        raise LookupError(f"Dataset not found: {key}")
    column = STORED_LINE_COLUMNS.get(fmt)
    if column is not None:
        return _stored_lines(dataset, column, EXPORT_CHUNK_SIZE)
    return _rendered_lines(dataset, fmt, EXPORT_CHUNK_SIZE)


def traces_export_lines(*, trace_ids: Sequence[uuid.UUID], fmt: str = "tunix_sft") -> Iterator[str]:
    """Records of the given traces in list order: duplicates repeat, unknown ids are skipped.

    Raises ValueError at call time for an unknown format.
    """
    render = RENDERERS[check_format(fmt)]
    ids = list(trace_ids)

    def lines() -> Iterator[str]:
        for start in range(0, len(ids), EXPORT_CHUNK_SIZE):
            chunk = ids[start : start + EXPORT_CHUNK_SIZE]
            found = {
                row[0]: row for row in trace_export_rows(Trace.objects.filter(id__in=set(chunk)))
            }
            for trace_id in chunk:
                row = found.get(str(trace_id))
                if row is not None:
                    yield render(*row, "")

    return lines()
