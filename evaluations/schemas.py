"""Request and response shapes of the evaluations API (mounted under /api/tunix).

Handlers return Evaluation and EvaluationItem objects; ninja builds these shapes from
their attributes, so the OpenAPI document is the response.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from ninja import Field
from pydantic import AliasChoices, field_validator

from runs.schemas import RunPaginationOut
from tunix_registry.fields import DATASET_KEY_PATTERN, Flag, Integer, Number, Queue
from tunix_registry.pagination import PaginationOut
from tunix_registry.schemas import ApiModel
from tunix_registry.timestamps import RunMoment

MetricName = Literal["answer_correctness@v1", "exact_match@v1"]
DEFAULT_METRICS: list[MetricName] = ["answer_correctness@v1", "exact_match@v1"]
# MetricName lists exactly the keys of evaluations.metrics.METRICS (a test checks it).
HELD_OUT = "held_out"


class GenerationIn(ApiModel):
    """How answers are generated (docs/evaluation.md#generation)."""

    max_new_tokens: Integer = Field(default=64, ge=1, le=4096)
    # 0 is greedy decoding.
    temperature: Number = Field(default=0.0, ge=0.0, le=10.0)
    seed: Integer = Field(default=0, ge=0, le=2**31 - 1)
    batch_size: Integer = Field(default=8, ge=1, le=256)


class EvaluationRequest(ApiModel):
    """Body of POST /api/tunix/runs/{run_id}/evaluations; also what `evaluate_run` builds."""

    # A dataset key, or "held_out": the part of the run's own dataset its trainer held out.
    dataset: str = Field(
        default=HELD_OUT,
        min_length=1,
        max_length=256,
        json_schema_extra={"anyOf": [{"const": HELD_OUT}, {"pattern": DATASET_KEY_PATTERN}]},
    )
    # True: evaluate the run's base model (its model_id) instead of what it trained.
    baseline: Flag = False
    metrics: list[MetricName] = Field(
        default=DEFAULT_METRICS, min_length=1, max_length=8, json_schema_extra={"uniqueItems": True}
    )
    generation: GenerationIn = GenerationIn()
    queue: Queue = None

    @field_validator("metrics")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("metrics must not name a metric twice")
        return names


class EvaluationScoreOut(ApiModel):
    """A metric's aggregate over the items: the mean with its 95% confidence interval."""

    mean: float | None
    count: int
    ci_low: float | None = None
    ci_high: float | None = None


class EvaluationOut(ApiModel):
    evaluation_id: UUID
    run_id: UUID
    baseline: bool
    # The model the items were generated with: the run's export, or its base for a baseline.
    dataset_key: str
    held_out: bool
    metrics: list[str]
    generation: GenerationIn
    status: str
    queue: str
    worker_id: str
    created_at: RunMoment
    started_at: RunMoment | None
    completed_at: RunMoment | None
    heartbeat_at: RunMoment | None
    items_done: int
    items_total: int | None
    # Null until it completed.
    scores: dict[str, EvaluationScoreOut] | None
    items_per_second: float | None
    exit_code: int | None
    message: str
    stderr: str
    launched_by: str | None = Field(None, validation_alias=AliasChoices("launched_by_name"))


class EvaluationListResponse(ApiModel):
    data: list[EvaluationOut]
    pagination: RunPaginationOut


class EvaluationItemOut(ApiModel):
    index: int
    prompt: str
    expected: str
    prediction: str
    scores: dict[str, float]


class EvaluationItemsResponse(ApiModel):
    data: list[EvaluationItemOut]
    pagination: RunPaginationOut


class EvaluationCancelResponse(ApiModel):
    message: str
    # `cancelled` (a pending evaluation) or `cancel_requested` (an executing one).
    status: str


# --- The leaderboard (evaluations.leaderboard) ---------------------------------------------


class LeaderboardConfigOut(ApiModel):
    """The run's training settings from its config (null where it has none)."""

    learning_rate: float | None
    num_epochs: int | None
    batch_size: int | None
    # Null for a full-weight run.
    lora_rank: int | None
    weights: Literal["lora", "full"]


class LeaderboardRunOut(ApiModel):
    run_id: UUID
    model_id: str
    # The dataset the run trained on.
    dataset_key: str
    launched_by: str | None
    started_at: RunMoment
    config: LeaderboardConfigOut


class LeaderboardEvaluationOut(ApiModel):
    evaluation_id: UUID
    dataset_key: str
    held_out: bool
    mean: float
    ci_low: float | None
    ci_high: float | None
    count: int
    created_at: RunMoment


class LeaderboardRowOut(ApiModel):
    # 1 is the best; equal means take consecutive ranks, the newer evaluation first.
    rank: int
    run: LeaderboardRunOut
    evaluation: LeaderboardEvaluationOut
    # The run's base model on the same items and metric (null: not evaluated), and the gain.
    baseline_mean: float | None
    gain: float | None


class LeaderboardResponse(ApiModel):
    metric: MetricName
    data: list[LeaderboardRowOut]
    pagination: PaginationOut
