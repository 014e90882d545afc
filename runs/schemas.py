"""Request and response shapes of the Tunix API.

Field names, defaults and ranges are the original's; unknown request fields are
ignored (pydantic's default), as the original did. The response schemas are the
one serialisation of a run: handlers return TunixRun objects and ninja builds
these from their attributes (`from_attributes`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from ninja import Field, Schema
from pydantic import AliasChoices, PlainSerializer, WithJsonSchema

from tunix_registry.fields import DATASET_KEY_PATTERN, Flag, Integer, Number, Text
from tunix_registry.pagination import PaginationOut
from tunix_registry.timestamps import utc_iso

# A run's moment as the API writes it: ISO-8601 in UTC ending in +00:00.
RunMoment = Annotated[
    datetime,
    PlainSerializer(lambda moment: utc_iso(moment, suffix="+00:00"), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class TunixRunRequest(Schema):
    """Body of POST /api/tunix/run; also what the page form and `tunix_run` build."""

    dataset_key: Text = Field(
        min_length=1, max_length=256, json_schema_extra={"pattern": DATASET_KEY_PATTERN}
    )
    model_id: Text = Field(min_length=1, max_length=256)
    # Stored relative to the data directory ("outputs/<output_dir>", at most 512
    # characters), so a relative output_dir has room for 504 (runs.outputs).
    output_dir: Text | None = Field(
        default=None, min_length=1, max_length=512, json_schema_extra={"maxLength": 504}
    )
    dry_run: Flag = True
    learning_rate: Number = Field(default=2e-5, gt=0, le=1.0)
    num_epochs: Integer = Field(default=3, ge=1, le=100)
    batch_size: Integer = Field(default=8, ge=1, le=512)
    max_seq_length: Integer = Field(default=2048, ge=128, le=32768)


class RunMetricsSummaryOut(Schema):
    steps: int
    final_loss: float | None
    best_eval_loss: float | None
    tokens_per_second: float | None


class TunixRunResponse(Schema):
    """A run as POST /api/tunix/run answers it and GET /api/tunix/runs/{id} returns it."""

    run_id: UUID
    status: str
    mode: str
    dataset_key: str
    model_id: str
    output_dir: str
    exit_code: int | None
    stdout: str
    stderr: str
    duration_seconds: float | None
    started_at: RunMoment
    completed_at: RunMoment | None
    message: str
    # Additive: the metrics summary of a local run, null when none. Read from
    # TunixRun.metrics_summary (`metrics` on a run is its per-step rows).
    metrics: RunMetricsSummaryOut | None = Field(
        None, validation_alias=AliasChoices("metrics_summary", "metrics")
    )


class TunixRunListItem(Schema):
    run_id: UUID
    dataset_key: str
    model_id: str
    mode: str
    status: str
    started_at: RunMoment
    duration_seconds: float | None


class RunPaginationOut(PaginationOut):
    # Additive: an opaque keyset cursor for the next page (null on the last page).
    next_cursor: str | None = None


class TunixRunListResponse(Schema):
    data: list[TunixRunListItem]
    pagination: RunPaginationOut


class RunMetricOut(Schema):
    step: int
    loss: float
    eval_loss: float | None
    tokens_per_second: float | None
    elapsed_seconds: float | None


class RunMetricsResponse(Schema):
    run_id: UUID
    metrics: list[RunMetricOut]


class TunixStatusResponse(Schema):
    available: bool
    version: str | None
    runtime_required: bool
    message: str


class TunixManifestRequest(Schema):
    dataset_key: Text = Field(
        min_length=1, max_length=256, json_schema_extra={"pattern": DATASET_KEY_PATTERN}
    )
    model_id: Text = Field(min_length=1, max_length=256)
    output_dir: Text = Field(min_length=1, max_length=512)
    learning_rate: Number = Field(default=2e-5, gt=0, le=1.0)
    num_epochs: Integer = Field(default=3, ge=1, le=100)
    batch_size: Integer = Field(default=8, ge=1, le=512)
    max_seq_length: Integer = Field(default=2048, ge=128, le=32768)


class TunixManifestResponse(Schema):
    manifest_yaml: str
    dataset_key: str
    model_id: str
    format: str
    message: str


class TunixExportRequest(Schema):
    # A dataset key, or a non-empty list of trace ids (else 400); the schema says so.
    model_config = {
        "json_schema_extra": {
            "anyOf": [
                {"required": ["dataset_key"], "properties": {"dataset_key": {"type": "string"}}},
                {
                    "required": ["trace_ids"],
                    "properties": {"trace_ids": {"type": "array", "minItems": 1}},
                },
            ]
        }
    }

    dataset_key: Text | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        json_schema_extra={"pattern": DATASET_KEY_PATTERN},
    )
    trace_ids: list[Annotated[Text, Field(json_schema_extra={"format": "uuid"})]] | None = None
    # Accepted and ignored, as in the original.
    limit: Integer = Field(default=100, ge=1, le=10000)
