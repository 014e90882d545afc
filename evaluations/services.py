"""Every change to an evaluation: launch, claim, progress, finish and cancel.

An evaluation is created `pending` with its task in one transaction (the task carries
it to a worker, as a queued run's does: docs/decisions.md#queued-execution), claimed by
one compare-and-set `pending` -> `running`, and finished by one compare-and-set from an
executing status, its items written in the same transaction. Once it has ended it never
changes (docs/decisions.md#evaluations).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from datasets.keys import InvalidDatasetKey, dataset_key_validate
from datasets.models import Dataset
from evaluations.models import Evaluation, EvaluationItem, EvaluationStatus
from evaluations.schemas import HELD_OUT, EvaluationRequest
from runs.models import RunMode, RunStatus, TunixRun
from runs.processes import host_name
from runs.trainer.data import EVAL_MIN_EXAMPLES
from tunix_registry.actors import Actor

logger = logging.getLogger(__name__)

# What an export must be for the engine to load it: a whole model (an adapter alone
# needs its base merged in first, docs/evaluation.md).
LOADABLE_EXPORTS = ("full", "merged")
CANCELLED_BEFORE_START = "Evaluation cancelled before it started"


class EvaluationRunNotFound(LookupError):
    """No run has this id (HTTP 404)."""


class EvaluationNotFound(LookupError):
    """No evaluation has this id (HTTP 404)."""


class RunNotEvaluable(Exception):
    """The run cannot be evaluated in the state it is in (HTTP 409)."""


class InvalidEvaluationRequest(ValueError):
    """The request names something that does not exist or cannot be used (HTTP 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class EvaluationAlreadyFinished(Exception):
    """The evaluation has ended and cannot change (HTTP 400)."""

    def __init__(self, status: str) -> None:
        super().__init__(f"Evaluation is already in terminal state: {status}")
        self.status = status


class EvaluationQueueUnavailable(Exception):
    """The database could not take the evaluation, so nothing was queued (HTTP 503)."""


def _evaluable_run(run_id: uuid.UUID, *, baseline: bool) -> TunixRun:
    run = TunixRun.objects.filter(pk=run_id).first()
    if run is None:
        raise EvaluationRunNotFound(f"Run not found: {run_id}")
    if run.mode != RunMode.LOCAL:
        raise RunNotEvaluable(f"Run {run_id} is a dry-run: it trained no model to evaluate")
    if baseline:
        # The base model exists whatever became of the run.
        return run
    if run.status != RunStatus.COMPLETED:
        raise RunNotEvaluable(
            f"Run {run_id} is {run.status}: only a completed run has a trained model to evaluate"
        )
    export = (run.training or {}).get("export_format")
    if export not in LOADABLE_EXPORTS:
        why = (
            "exported only a LoRA adapter; evaluate a run that exports it merged"
            if export == "adapter"
            else "exported no model"
        )
        raise RunNotEvaluable(f"Run {run_id} {why}")
    return run


def evaluation_dataset(run_dataset_key: str, dataset: str) -> tuple[str, bool]:
    """(key, held out?) for an evaluation's `dataset` of a run trained on `run_dataset_key`.

    Raises InvalidEvaluationRequest("dataset") for a dataset that does not exist, is
    empty, or (held out) is too small for its trainer to have held anything out.
    """
    held_out = dataset == HELD_OUT
    key = run_dataset_key if held_out else dataset
    try:
        dataset_key_validate(key)
    except InvalidDatasetKey as exc:
        raise InvalidEvaluationRequest("dataset", str(exc)) from None
    count = Dataset.objects.filter(key=key).values_list("trace_count", flat=True).first()
    if count is None:
        raise InvalidEvaluationRequest("dataset", f"Dataset not found: {key}")
    if count == 0:
        raise InvalidEvaluationRequest("dataset", f"Dataset is empty (no traces found): {key}")
    if held_out and count < EVAL_MIN_EXAMPLES:
        raise InvalidEvaluationRequest(
            "dataset",
            f"The run's dataset {key} has {count} traces: a trainer holds none out below "
            f"{EVAL_MIN_EXAMPLES}; name an evaluation dataset instead",
        )
    return key, held_out


def evaluation_enqueue(
    *, run_id: uuid.UUID, request: EvaluationRequest, actor: Actor
) -> Evaluation:
    """Create an evaluation of the run `pending` on a worker queue and return it.

    Raises EvaluationRunNotFound (404), RunNotEvaluable (409), InvalidEvaluationRequest
    (422, naming the field) before anything is written, EvaluationQueueUnavailable (503)
    when the database refuses.
    """
    from evaluations.tasks import execute_evaluation

    run = _evaluable_run(run_id, baseline=request.baseline)
    key, held_out = evaluation_dataset(run.dataset_key, request.dataset)
    queue = request.queue or settings.TUNIX_DEFAULT_QUEUE
    evaluation = Evaluation(
        evaluation_id=uuid.uuid4(),
        run=run,
        baseline=request.baseline,
        dataset_key=key,
        held_out=held_out,
        metrics=list(request.metrics),
        generation=request.generation.model_dump(),
        status=EvaluationStatus.PENDING,
        queue=queue,
        created_at=timezone.now(),
        message="Evaluation pending",
        launched_by=actor.user,
    )
    try:
        with transaction.atomic():
            result = execute_evaluation.using(queue_name=queue).enqueue(
                str(evaluation.evaluation_id)
            )
            evaluation.task_id = str(result.id)
            evaluation.save(force_insert=True)
    except DatabaseError as exc:
        logger.exception("Failed to queue evaluation of run %s", run_id)
        raise EvaluationQueueUnavailable(
            "The evaluation could not be queued: the database is unavailable"
        ) from exc
    return evaluation


def evaluation_claim(*, evaluation_id: uuid.UUID, worker_id: str) -> Evaluation | None:
    """Take a pending evaluation for this worker; None if it is not pending any more."""
    now = timezone.now()
    won = Evaluation.objects.filter(pk=evaluation_id, status=EvaluationStatus.PENDING).update(
        status=EvaluationStatus.RUNNING,
        started_at=now,
        heartbeat_at=now,
        worker_id=worker_id[:200],
        host=host_name()[:255],
        message="Evaluation in progress",
    )
    if not won:
        return None
    return Evaluation.objects.select_related("run").get(pk=evaluation_id)


def evaluation_progress(
    *, evaluation_id: uuid.UUID, items_done: int, items_total: int | None
) -> str | None:
    """Record progress and a heartbeat on an executing evaluation; return its status.

    The supervisor stops the engine when the answer is `cancel_requested`, and when it
    is anything else but `running` (finished elsewhere). None: the row is gone.
    """
    executing = [EvaluationStatus.RUNNING, EvaluationStatus.CANCEL_REQUESTED]
    Evaluation.objects.filter(pk=evaluation_id, status__in=executing).update(
        items_done=items_done, items_total=items_total, heartbeat_at=timezone.now()
    )
    status: str | None = (
        Evaluation.objects.filter(pk=evaluation_id).values_list("status", flat=True).first()
    )
    return status


@dataclass
class EvaluationOutcome:
    """How an execution ended, as the evaluation records it."""

    status: str
    message: str
    exit_code: int | None = None
    stderr: str = ""
    items: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[str, Any] | None = None
    items_per_second: float | None = None
    items_total: int | None = None


def evaluation_finish(*, evaluation_id: uuid.UUID, outcome: EvaluationOutcome) -> bool:
    """Record the end of an executing evaluation and its items; whether this call won.

    One compare-and-set from `running` or `cancel_requested`; the items are written in
    the same transaction, so a completed evaluation always has all of its items.
    """
    now = timezone.now()
    executing = [EvaluationStatus.RUNNING, EvaluationStatus.CANCEL_REQUESTED]
    fields: dict[str, Any] = {
        "status": outcome.status,
        "message": outcome.message,
        "exit_code": outcome.exit_code,
        "stderr": outcome.stderr,
        "scores": outcome.scores,
        "items_per_second": outcome.items_per_second,
        "completed_at": now,
        "heartbeat_at": now,
    }
    if outcome.items_total is not None:
        fields["items_total"] = outcome.items_total
    if outcome.status == EvaluationStatus.COMPLETED:
        fields["items_done"] = len(outcome.items)
    with transaction.atomic():
        won = Evaluation.objects.filter(pk=evaluation_id, status__in=executing).update(**fields)
        if won and outcome.status == EvaluationStatus.COMPLETED:
            EvaluationItem.objects.bulk_create(
                [
                    EvaluationItem(
                        evaluation_id=evaluation_id,
                        index=item["index"],
                        prompt=item["prompt"],
                        expected=item["expected"],
                        prediction=item["prediction"],
                        scores=item["scores"],
                    )
                    for item in outcome.items
                ],
                batch_size=500,
            )
    return bool(won)


def evaluation_cancel(*, evaluation_id: uuid.UUID) -> str:
    """Cancel an evaluation: `cancelled` at once while pending, else `cancel_requested`.

    Raises EvaluationNotFound, or EvaluationAlreadyFinished for one that has ended.
    """
    from runs.services import task_close

    now = timezone.now()
    with transaction.atomic():
        cancelled = Evaluation.objects.filter(
            pk=evaluation_id, status=EvaluationStatus.PENDING
        ).update(
            status=EvaluationStatus.CANCELLED,
            completed_at=now,
            stderr=CANCELLED_BEFORE_START,
            message="Evaluation cancelled",
        )
        if cancelled:
            task_id = (
                Evaluation.objects.filter(pk=evaluation_id)
                .values_list("task_id", flat=True)
                .first()
            )
            task_close(task_id or "", "the evaluation was cancelled before it started")
            return EvaluationStatus.CANCELLED
        Evaluation.objects.filter(pk=evaluation_id, status=EvaluationStatus.RUNNING).update(
            status=EvaluationStatus.CANCEL_REQUESTED, message="Evaluation cancellation requested"
        )
    status = Evaluation.objects.filter(pk=evaluation_id).values_list("status", flat=True).first()
    if status is None:
        raise EvaluationNotFound(f"Evaluation not found: {evaluation_id}")
    if status != EvaluationStatus.CANCEL_REQUESTED:
        raise EvaluationAlreadyFinished(status)
    return status


def evaluation_after_run(*, run: TunixRun) -> Evaluation | None:
    """Queue the evaluation a completed local run's request asked for (`evaluate_on`).

    Called by run_finish in the transaction that completes the run, inside a savepoint:
    an evaluation that cannot be queued any more (its dataset removed since the launch,
    the database refusing) is logged and leaves the run's completion as it is.
    """
    dataset = (run.config or {}).get("evaluate_on")
    if not dataset or run.mode != RunMode.LOCAL or run.status != RunStatus.COMPLETED:
        return None
    try:
        return evaluation_enqueue(
            run_id=run.run_id,
            request=EvaluationRequest(dataset=dataset),
            actor=Actor.of(run.launched_by),
        )
    except (
        RunNotEvaluable,
        InvalidEvaluationRequest,
        EvaluationQueueUnavailable,
        EvaluationRunNotFound,
    ) as exc:
        logger.warning("run %s: its evaluation on %s was not queued: %s", run.run_id, dataset, exc)
        return None


def evaluation_reap(*, now: Any = None) -> list[uuid.UUID]:
    """Fail the executing evaluations whose worker stopped beating; return their ids.

    Their supervisor records a heartbeat every TUNIX_HEARTBEAT_SECONDS; one older than
    TUNIX_RUN_LEASE_SECONDS means the worker was killed (its engine died with it). Every
    worker calls this with the run reaper, as does `manage.py reap_runs`. Each update is
    a compare-and-set on the stale heartbeat, so a worker that beats again wins.
    """
    from datetime import timedelta

    now = now or timezone.now()
    lease = settings.TUNIX_RUN_LEASE_SECONDS
    stale = Evaluation.objects.filter(
        status__in=[EvaluationStatus.RUNNING, EvaluationStatus.CANCEL_REQUESTED],
        heartbeat_at__lt=now - timedelta(seconds=lease),
    ).values_list("evaluation_id", "worker_id", "host", "heartbeat_at")
    reaped = []
    for evaluation_id, worker_id, host, beat in list(stale):
        message = (
            f"Evaluation failed: lost its worker {worker_id or '?'} on {host or '?'} "
            f"(no heartbeat for {lease} s)"
        )
        won = Evaluation.objects.filter(
            pk=evaluation_id,
            status__in=[EvaluationStatus.RUNNING, EvaluationStatus.CANCEL_REQUESTED],
            heartbeat_at=beat,
        ).update(status=EvaluationStatus.FAILED, message=message, stderr=message, completed_at=now)
        if won:
            reaped.append(evaluation_id)
    return reaped
