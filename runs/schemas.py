"""Request and response shapes of the Tunix API.

Field names, defaults and ranges are the original's; unknown request fields are
ignored (pydantic's default), as the original did. The response schemas are the
one serialisation of a run: handlers return TunixRun objects and ninja builds
these from their attributes (`from_attributes`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from django.conf import settings
from ninja import Field, Schema
from pydantic import AliasChoices, PlainSerializer, WithJsonSchema, field_validator

from tunix_registry.fields import DATASET_KEY_PATTERN, Flag, Integer, Number, Text
from tunix_registry.pagination import PaginationOut
from tunix_registry.timestamps import utc_iso

# A run's moment as the API writes it: ISO-8601 in UTC ending in +00:00.
RunMoment = Annotated[
    datetime,
    PlainSerializer(lambda moment: utc_iso(moment, suffix="+00:00"), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def _queue_enum(schema: dict[str, Any]) -> None:
    """Publish the configured queues as the `queue` field's enum (null stays allowed)."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "string":
            option["enum"] = list(settings.TUNIX_QUEUES)


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
    # Additive: the worker queue of a queued launch (one of TUNIX_QUEUES; null:
    # TUNIX_DEFAULT_QUEUE). A synchronous launch checks it and executes in place.
    queue: Text | None = Field(
        default=None, min_length=1, max_length=64, json_schema_extra=_queue_enum
    )

    @field_validator("queue")
    @classmethod
    def _known_queue(cls, queue: str | None) -> str | None:
        if queue is not None and queue not in settings.TUNIX_QUEUES:
            raise ValueError(f"Unknown queue {queue!r}; one of: {', '.join(settings.TUNIX_QUEUES)}")
        return queue


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
    # Additive: where a queued run waits or executes ("" for a run executed by the
    # request that launched it) and the supervisor's last heartbeat (null before).
    queue: str = ""
    worker_id: str = ""
    heartbeat_at: RunMoment | None = None
    # Additive: the username of who launched the run (null: an anonymous client,
    # or a run older than the field; docs/decisions.md#who-did-what).
    launched_by: str | None = Field(None, validation_alias=AliasChoices("launched_by_name"))


class TunixRunListItem(Schema):
    run_id: UUID
    dataset_key: str
    model_id: str
    mode: str
    status: str
    started_at: RunMoment
    duration_seconds: float | None
    # Additive: the launcher's username (null when none), as in the detail.
    launched_by: str | None = Field(None, validation_alias=AliasChoices("launched_by_name"))


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


# --- Queued runs: status, cancellation, logs, artifacts -----------------------------------


class RunStatusResponse(Schema):
    """GET /api/tunix/runs/{id}/status: a run's state without its output."""

    run_id: UUID
    status: str
    queued_at: RunMoment
    # Null while the run waits in its queue.
    started_at: RunMoment | None
    completed_at: RunMoment | None
    exit_code: int | None


class RunCancelResponse(Schema):
    message: str
    # Additive: `cancelled` (a pending run) or `cancel_requested` (an executing one).
    status: str


class RunLogChunkOut(Schema):
    seq: int
    # stdout, stderr, or marker (what the log cap left out).
    stream: str
    chunk: str
    created_at: RunMoment


class RunLogsResponse(Schema):
    """GET /api/tunix/runs/{id}/logs with `Accept: application/json`."""

    run_id: UUID
    status: str
    chunks: list[RunLogChunkOut]
    # The seq to pass as `since_seq` next time.
    next_seq: int


class RunLogHeartbeat(Schema):
    seq: int


class RunLogStatus(Schema):
    status: str


class ArtifactOut(Schema):
    name: str
    size: int
    # The bare name, as the original returned it.
    path: str
    # Null for a file listed live from a run still executing.
    sha256: str | None


class ArtifactListResponse(Schema):
    artifacts: list[ArtifactOut]
    # The machine whose disk holds the files (null when the run never executed one).
    host: str | None
