"""Request and response shapes of the Tunix API (REFERENCE §6, §7).

Field names, defaults and ranges are the original's; unknown request fields are
ignored (pydantic's default), as the original did.
"""

from __future__ import annotations

from uuid import UUID

from ninja import Field, Schema

from tunix_registry.pagination import PaginationOut


class TunixRunRequest(Schema):
    """Body of POST /api/tunix/run; also what the page form and `tunix_run` build."""

    dataset_key: str = Field(min_length=1, max_length=256)
    model_id: str = Field(min_length=1, max_length=256)
    output_dir: str | None = Field(default=None, min_length=1, max_length=512)
    dry_run: bool = True
    learning_rate: float = Field(default=2e-5, gt=0, le=1.0)
    num_epochs: int = Field(default=3, ge=1, le=100)
    batch_size: int = Field(default=8, ge=1, le=512)
    max_seq_length: int = Field(default=2048, ge=128, le=32768)


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
    started_at: str
    completed_at: str | None
    message: str
    # Additive (issue 7): the metrics summary of a local run, null when none.
    metrics: RunMetricsSummaryOut | None = None


class TunixRunListItem(Schema):
    run_id: UUID
    dataset_key: str
    model_id: str
    mode: str
    status: str
    started_at: str
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
    dataset_key: str = Field(min_length=1, max_length=256)
    model_id: str = Field(min_length=1, max_length=256)
    output_dir: str = Field(min_length=1, max_length=512)
    learning_rate: float = Field(default=2e-5, gt=0, le=1.0)
    num_epochs: int = Field(default=3, ge=1, le=100)
    batch_size: int = Field(default=8, ge=1, le=512)
    max_seq_length: int = Field(default=2048, ge=128, le=32768)


class TunixManifestResponse(Schema):
    manifest_yaml: str
    dataset_key: str
    model_id: str
    format: str
    message: str


class TunixExportRequest(Schema):
    dataset_key: str | None = Field(default=None, min_length=1, max_length=256)
    trace_ids: list[str] | None = None
    # Accepted and ignored, as in the original.
    limit: int = Field(default=100, ge=1, le=10000)
