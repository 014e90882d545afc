"""JSON API of the datasets app (mounted at /api/datasets by tunix_registry.api).

Paths, fields and status codes are those of the original Tunix RT API. Keys
are validated wherever they enter (422 naming the field), building an existing
version is a 409 (docs/decisions.md#immutable-resources), `manifest_path` is
relative to the data directory, exports are streamed. Each response body is
produced by its declared schema from the model (for a build, with the manifest's
path beside it; for the manifest, from the manifest selector that also writes
manifest.json).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Field, Query, Router, Status
from ninja.errors import HttpError
from pydantic import AliasChoices

from accounts.access import Access, acting_user
from accounts.roles import BUILD_DATASETS, VIEW_DATASETS
from datasets import selectors, services
from datasets.exports import FORMATS
from datasets.keys import KEY_MAX_LENGTH, InvalidDatasetKey, dataset_key_validate
from datasets.models import Dataset
from tunix_registry.fields import (
    DATASET_KEY_PATTERN,
    DATASET_PART_PATTERN,
    Integer,
    JsonObject,
    PageLimit,
    PageOffset,
    Text,
    documented,
)
from tunix_registry.http_cache import mark_immutable, mark_revalidate, not_modified, strong_etag
from tunix_registry.pagination import PaginationOut, check_page, page_of
from tunix_registry.schemas import ApiModel, ErrorOut
from tunix_registry.timestamps import ZuluMoment

router = Router(tags=["datasets"], auth=Access(VIEW_DATASETS))

# A key in the path: checked by dataset_key_validate (its own 422 message); the
# schema documents the same rule.
DatasetKeyPath = Annotated[
    str,
    documented(minLength=1, maxLength=KEY_MAX_LENGTH, pattern=DATASET_KEY_PATTERN),
]

NDJSON = "application/x-ndjson"
# Lines are grouped into chunks of about this many characters before they are sent.
STREAM_CHUNK_CHARS = 64 * 1024


class DatasetBuildIn(ApiModel):
    # A random selection needs a seed (else 422 from the service); the schema says so.
    model_config = {
        "json_schema_extra": {
            "if": {
                "properties": {"selection_strategy": {"const": "random"}},
                "required": ["selection_strategy"],
            },
            "then": {"properties": {"seed": {"type": "integer"}}, "required": ["seed"]},
        }
    }

    # The pattern of name and version documents what their key (dataset_key_make) accepts.
    dataset_name: Text = Field(
        ...,
        min_length=1,
        max_length=services.NAME_MAX,
        json_schema_extra={"pattern": DATASET_PART_PATTERN},
    )
    dataset_version: Text = Field(
        ...,
        min_length=1,
        max_length=services.VERSION_MAX,
        json_schema_extra={"pattern": DATASET_PART_PATTERN},
    )
    filters: JsonObject = Field(default_factory=dict)
    limit: Integer = Field(100, ge=1, le=services.LIMIT_MAX)
    selection_strategy: Literal["latest", "random"] = "latest"
    seed: Integer | None = Field(None, ge=-(2**63), lt=2**63)
    session_id: Text | None = Field(None, max_length=services.SESSION_ID_MAX)
    parent_dataset_id: Text | None = Field(None, max_length=services.PARENT_DATASET_ID_MAX)
    training_run_id: Text | None = Field(None, max_length=services.TRAINING_RUN_ID_MAX)


class DatasetBuildOut(ApiModel):
    """What a build answers, from the built `Dataset`."""

    dataset_key: str
    build_id: uuid.UUID
    trace_count: int
    manifest_path: str

    @classmethod
    def of(cls, dataset: Dataset) -> DatasetBuildOut:
        return cls(
            dataset_key=dataset.key,
            build_id=dataset.build_id,
            trace_count=dataset.trace_count,
            manifest_path=services.manifest_relative_path(dataset.key),
        )


class DatasetSummaryOut(ApiModel):
    """A dataset in the list, from a `Dataset` (created_at in UTC ending in Z)."""

    dataset_key: str = Field(validation_alias=AliasChoices("key", "dataset_key"))
    build_id: uuid.UUID
    dataset_name: str = Field(validation_alias=AliasChoices("name", "dataset_name"))
    dataset_version: str = Field(validation_alias=AliasChoices("version", "dataset_version"))
    created_at: ZuluMoment
    selection_strategy: str
    seed: int | None
    trace_count: int
    # Additive: the builder's username (null: anonymous, or built before the field).
    created_by: str | None = Field(
        None, validation_alias=AliasChoices("created_by_name", "created_by")
    )


class DatasetListOut(ApiModel):
    data: list[DatasetSummaryOut]
    pagination: PaginationOut


class DatasetStatsOut(ApiModel):
    trace_count: int
    avg_step_count: float
    min_step_count: int
    max_step_count: int
    avg_total_chars: float


class DatasetManifestOut(ApiModel):
    dataset_key: str
    build_id: uuid.UUID
    dataset_name: str
    dataset_version: str
    dataset_schema_version: str
    created_at: str
    filters: dict[str, Any]
    selection_strategy: str
    seed: int | None
    trace_ids: list[str]
    trace_count: int
    stats: DatasetStatsOut
    session_id: str | None
    parent_dataset_id: str | None
    training_run_id: str | None
    # Additive: the builder's username (null: anonymous, or built before the
    # field). Not in manifest.json, which describes the data alone.
    created_by: str | None = None


def _valid_key(key: str) -> str:
    try:
        return dataset_key_validate(key)
    except InvalidDatasetKey as exc:
        raise HttpError(422, str(exc)) from None


def _existing(key: str) -> Dataset:
    dataset = selectors.dataset_get(key=_valid_key(key))
    if dataset is None:
        raise HttpError(404, f"Dataset not found: {key}")
    return dataset


@router.post(
    "/build",
    response={201: DatasetBuildOut, 409: ErrorOut, 422: ErrorOut},
    summary="Build an immutable dataset version from traces",
    auth=Access(BUILD_DATASETS),
)
def dataset_build(request: HttpRequest, body: DatasetBuildIn) -> Status[DatasetBuildOut]:
    try:
        dataset = services.dataset_build(
            name=body.dataset_name,
            version=body.dataset_version,
            filters=body.filters,
            limit=body.limit,
            selection_strategy=body.selection_strategy,
            seed=body.seed,
            session_id=body.session_id,
            parent_dataset_id=body.parent_dataset_id,
            training_run_id=body.training_run_id,
            created_by=acting_user(request),
        )
    except services.DatasetAlreadyExists as exc:
        raise HttpError(409, str(exc)) from None
    except ValueError as exc:  # InvalidDatasetKey included
        raise HttpError(422, str(exc)) from None
    return Status(201, DatasetBuildOut.of(dataset))


@router.get("", response={200: DatasetListOut}, summary="List datasets, newest first")
def dataset_list(
    request: HttpRequest, response: HttpResponse, limit: PageLimit = 20, offset: PageOffset = 0
) -> dict[str, Any]:
    check_page(limit, offset)
    rows = selectors.dataset_list(limit=limit + 1, offset=offset)
    items, pagination = page_of(rows, limit, offset)
    # New versions appear at any moment: revalidate (the body's ETag comes from
    # ConditionalGetMiddleware).
    mark_revalidate(response)
    return {"data": items, "pagination": pagination}


class ExportQuery(ApiModel):
    # Checked by the handler (its own 422 message); the schema lists the values.
    format: str = Field("trace", json_schema_extra={"enum": list(FORMATS)})


@router.get(
    "/{path:dataset_key}/export.jsonl",
    response={200: None, 404: ErrorOut, 422: ErrorOut},
    summary="Export a dataset as NDJSON (trace, tunix_sft or training_example), streamed",
)
def dataset_export(
    request: HttpRequest, dataset_key: DatasetKeyPath, query: Query[ExportQuery]
) -> StreamingHttpResponse:
    if query.format not in FORMATS:
        raise HttpError(
            422, f"format must be one of {', '.join(FORMATS)} (got {query.format[:40]!r})"
        )
    dataset = _existing(dataset_key)
    lines = selectors.dataset_export_lines(key=dataset.key, fmt=query.format)
    return StreamingHttpResponse(
        (chunk.encode() for chunk in services.lines_grouped(lines, STREAM_CHUNK_CHARS)),
        content_type=NDJSON,
    )


@router.get(
    "/{path:dataset_key}",
    response={200: DatasetManifestOut, 304: None, 404: ErrorOut, 422: ErrorOut},
    summary="A dataset's manifest (immutable: conditional requests are answered 304)",
)
def dataset_manifest(
    request: HttpRequest, response: HttpResponse, dataset_key: DatasetKeyPath
) -> dict[str, Any] | HttpResponse:
    key = _valid_key(dataset_key)
    build_id = selectors.dataset_build_id(key=key)
    if build_id is None:
        raise HttpError(404, f"Dataset not found: {key}")
    # The version never changes (docs/decisions.md#immutable-resources): the
    # lookup above already proved it exists, nothing else is read for a 304.
    etag = strong_etag("dataset", key, build_id)
    unchanged = not_modified(request, etag, exists=lambda: True)
    if unchanged is not None:
        return unchanged
    dataset = _existing(key)
    manifest = selectors.dataset_manifest(dataset=dataset)
    mark_immutable(response, etag)
    return {**manifest, "created_by": dataset.created_by_name}
