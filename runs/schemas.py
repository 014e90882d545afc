"""Request and response shapes of the Tunix API.

Field names, defaults and ranges are the original's; unknown request fields are
ignored (pydantic's default), as the original did. The response schemas are the
one serialisation of a run: handlers return TunixRun objects and ninja builds
these from their attributes (`from_attributes`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args
from uuid import UUID

from ninja import Field
from pydantic import AliasChoices, field_validator

from tunix_registry.fields import DATASET_KEY_PATTERN, Flag, Integer, Number, Queue, Text
from tunix_registry.pagination import PaginationOut
from tunix_registry.schemas import ApiModel
from tunix_registry.timestamps import RunMoment

# Every module name a LoRA adapter may target in some family the trainer knows
# (runs/trainer/lora.py lists them per family; the service checks the model's own).
LoraModuleName = Literal[
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "q_einsum",
    "kv_einsum",
    "qkv_einsum",
    "attn_vec_einsum",
]
LORA_MODULE_NAMES: tuple[str, ...] = get_args(LoraModuleName)


class LoraRequest(ApiModel):
    """The `lora` object of a launch: train a low-rank adapter instead of every weight."""

    rank: Integer = Field(ge=1, le=256)
    alpha: Number = Field(default=16.0, gt=0, le=1024.0)
    dropout: Number = Field(default=0.0, ge=0, lt=1.0)
    # Null: every module of the model's family (the service stores the list it chose).
    target_modules: list[LoraModuleName] | None = Field(
        default=None, min_length=1, max_length=11, json_schema_extra={"uniqueItems": True}
    )
    # What the run exports: the adapter folded into the base weights, or the adapter alone.
    export: Literal["merged", "adapter"] = "merged"

    @field_validator("target_modules")
    @classmethod
    def _unique(cls, names: list[str] | None) -> list[str] | None:
        if names is not None and len(set(names)) != len(names):
            raise ValueError("target_modules must not name a module twice")
        return names


class TunixRunRequest(ApiModel):
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
    queue: Queue = None

    # Additive (docs/training.md): LoRA instead of full-weight SFT (null: full-weight),
    # the run whose last checkpoint this one continues, and how often it checkpoints
    # (null: a third of the run's steps).
    lora: LoraRequest | None = None
    resume_from: UUID | None = None
    checkpoint_every_n_steps: Integer | None = Field(default=None, ge=1, le=1_000_000)
    # Additive (docs/evaluation.md): when the local run completes, queue an evaluation
    # of its model on "held_out" (what its trainer held out) or on a dataset key.
    evaluate_on: Text | None = Field(default=None, min_length=1, max_length=256)


class RunMetricsSummaryOut(ApiModel):
    steps: int
    final_loss: float | None
    best_eval_loss: float | None
    tokens_per_second: float | None


class RunPhasesOut(ApiModel):
    load: float | None = None
    compile: float | None = None
    train: float | None = None
    eval: float | None = None
    save: float | None = None


class RunTrainingOut(ApiModel):
    """What a local run's trainer reported (run_summary.json) and the checkpoints it left."""

    parameters: int | None = None
    trainable_parameters: int | None = None
    total_steps: int | None = None
    trained_steps: int | None = None
    steps_per_second: float | None = None
    tokens_per_second: float | None = None
    train_seconds: float | None = None
    phases: RunPhasesOut | None = None
    peak_host_memory_bytes: int | None = None
    # Null on the CPU.
    peak_device_memory_bytes: int | None = None
    device: str | None = None
    # full, merged or adapter; null when the run exported no model.
    export_format: str | None = None
    # The steps of the orbax checkpoints in its output directory when it ended.
    checkpoint_steps: list[int] = []
    # When it resumed another run: the step it started from and the restore's seconds.
    resumed_step: int | None = None
    restore_seconds: float | None = None


class LoraOut(ApiModel):
    rank: int
    alpha: float
    dropout: float
    target_modules: list[str]
    export: str


class TunixRunResponse(ApiModel):
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
    # Additive (docs/training.md): the LoRA the run trains (null: full-weight), its
    # checkpoint cadence (null: the trainer's default), the run it resumed, and what
    # its trainer reported when it ended (null: a dry-run, or a run still going).
    lora: LoraOut | None = None
    checkpoint_every_n_steps: int | None = None
    resumed_from: UUID | None = Field(None, validation_alias=AliasChoices("resumed_from_id"))
    training: RunTrainingOut | None = None
    # Additive: the evaluation asked for on completion (null: none).
    evaluate_on: str | None = None


class TunixRunListItem(ApiModel):
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


class TunixRunListResponse(ApiModel):
    data: list[TunixRunListItem]
    pagination: RunPaginationOut


class RunMetricOut(ApiModel):
    step: int
    loss: float
    eval_loss: float | None
    tokens_per_second: float | None
    elapsed_seconds: float | None


class RunMetricsResponse(ApiModel):
    run_id: UUID
    metrics: list[RunMetricOut]


class TunixStatusResponse(ApiModel):
    available: bool
    version: str | None
    runtime_required: bool
    message: str


class TunixManifestRequest(ApiModel):
    dataset_key: Text = Field(
        min_length=1, max_length=256, json_schema_extra={"pattern": DATASET_KEY_PATTERN}
    )
    model_id: Text = Field(min_length=1, max_length=256)
    output_dir: Text = Field(min_length=1, max_length=512)
    learning_rate: Number = Field(default=2e-5, gt=0, le=1.0)
    num_epochs: Integer = Field(default=3, ge=1, le=100)
    batch_size: Integer = Field(default=8, ge=1, le=512)
    max_seq_length: Integer = Field(default=2048, ge=128, le=32768)


class TunixManifestResponse(ApiModel):
    manifest_yaml: str
    dataset_key: str
    model_id: str
    format: str
    message: str


class TunixExportRequest(ApiModel):
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


class RunStatusResponse(ApiModel):
    """GET /api/tunix/runs/{id}/status: a run's state without its output."""

    run_id: UUID
    status: str
    queued_at: RunMoment
    # Null while the run waits in its queue.
    started_at: RunMoment | None
    completed_at: RunMoment | None
    exit_code: int | None


class RunCancelResponse(ApiModel):
    message: str
    # Additive: `cancelled` (a pending run) or `cancel_requested` (an executing one).
    status: str


class RunLogChunkOut(ApiModel):
    seq: int
    # stdout, stderr, or marker (what the log cap left out).
    stream: str
    chunk: str
    created_at: RunMoment


class RunLogsResponse(ApiModel):
    """GET /api/tunix/runs/{id}/logs with `Accept: application/json`."""

    run_id: UUID
    status: str
    chunks: list[RunLogChunkOut]
    # The seq to pass as `since_seq` next time.
    next_seq: int


class RunLogHeartbeat(ApiModel):
    seq: int


class RunLogStatus(ApiModel):
    status: str


class ArtifactOut(ApiModel):
    name: str
    size: int
    # The bare name, as the original returned it.
    path: str
    # Null for a file listed live from a run still executing.
    sha256: str | None


class ArtifactListResponse(ApiModel):
    artifacts: list[ArtifactOut]
    # The machine whose disk holds the files (null when the run never executed one).
    host: str | None


# --- Comparison of runs (GET /api/tunix/runs/compare) -------------------------------------


class CompareMetricPointOut(ApiModel):
    step: int
    loss: float
    eval_loss: float | None


class CompareRunOut(ApiModel):
    """One run of a comparison, built from runs.compare.ComparedRun."""

    run_id: UUID
    status: str
    mode: str
    model_id: str
    dataset_key: str
    launched_by: str | None
    started_at: RunMoment
    metrics: RunMetricsSummaryOut | None
    training: RunTrainingOut | None
    # Its logged steps, by step (empty for a dry-run).
    series: list[CompareMetricPointOut]


class CompareConfigRowOut(ApiModel):
    # A flattened configuration key: nested objects as dotted keys (`lora.rank`).
    key: str
    # One value per run, in the order of `runs` (null where the run has no such key).
    values: list[Any]
    differs: bool


class CompareScoreOut(ApiModel):
    metric: str
    # One per run, in the order of `runs` (null: not evaluated on these items).
    means: list[float | None]
    # Each mean minus the first run's (null where either is missing).
    deltas: list[float | None]


class CompareAnswerOut(ApiModel):
    prediction: str
    score: float | None


class CompareDisagreementOut(ApiModel):
    index: int
    prompt: str
    expected: str
    # One per run (null: the run has no evaluation of this item).
    answers: list[CompareAnswerOut | None]


class CompareEvaluationsOut(ApiModel):
    """The runs' evaluations on one set of items: the one most of them were evaluated on."""

    dataset_key: str
    held_out: bool
    evaluation_ids: list[UUID | None]
    scores: list[CompareScoreOut]
    # The items whose score on `metric` differs between the runs (the first 100).
    metric: str
    disagreements: list[CompareDisagreementOut]
    disagreement_count: int


class RunCompareResponse(ApiModel):
    runs: list[CompareRunOut]
    config: list[CompareConfigRowOut]
    # Null when none of the runs has a completed evaluation of its trained model.
    evaluations: CompareEvaluationsOut | None = None
