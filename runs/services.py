"""Every write to a run: its state transitions, each a compare-and-set plus a RunEvent row.

- `run_start`: check a launch request, create the row `running` and its first
  event (docs/decisions.md#running-row-first); returns a `StartedRun` that the
  calling process executes itself.
- `run_enqueue`: check a launch request, create the row `pending` with its event
  and its task on a worker queue, in one transaction.
- `run_claim`: a worker takes a pending run (`pending` -> `running`); says whether it won.
- `run_trainer_record`: note the trainer subprocess on the running row.
- `run_heartbeat`: the supervisor's beat; answers the run's status (cancellation).
- `run_cancel`: `pending` -> `cancelled`, `running` -> `cancel_requested`.
- `run_finish`: from `running` or `cancel_requested` to the outcome's terminal
  status; says whether it won.
- `run_reap`: finish the runs nobody else will (their process is gone, or their
  heartbeat is older than the lease); queue again a pending run whose task was
  taken by a worker that never claimed it.

Executing a run (dry-run validation, the trainer subprocess) is `runs.execution`,
which calls these. A failed database write is logged and rolled back and never
fails the caller (docs/decisions.md#database-failure-never-fails-the-user).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.utils import timezone

from datasets.keys import InvalidDatasetKey, dataset_key_validate
from runs.metrics import METRICS_FILE, metric_rows, metrics_parse
from runs.model_roots import ModelIdRefused, model_id_resolve
from runs.models import (
    ACTIVE_STATUSES,
    EXECUTING_STATUSES,
    TERMINAL_STATUSES,
    RunEvent,
    RunMetric,
    RunMode,
    RunStatus,
    TunixRun,
)
from runs.outcomes import (
    OUTPUT_LIMIT_BYTES,
    RunOutcome,
    log_excerpt,
    outcome_fields,
    pending_outcome_discard,
    pending_outcome_load,
    pending_outcome_save,
    truncate_output,
)
from runs.outputs import OutputDirRefused, output_dir_absolute, output_dir_resolve
from runs.processes import host_name, orphans_kill, process_alive, process_fingerprint
from runs.runtime import RUNTIME_UNAVAILABLE_MESSAGE, tunix_runtime_available
from runs.schemas import TunixRunRequest
from runs.selectors import run_directory, run_log_text
from runs.training import checkpoint_steps, lora_targets_for, model_family, training_report
from tunix_registry.actors import REAPER, Actor
from tunix_registry.fields import queue_unknown

logger = logging.getLogger(__name__)

INTERRUPTED_MESSAGE = (
    "Run interrupted: the process executing it is gone (server restart or killed worker)"
)
CANCELLED_BEFORE_START = "Run cancelled before it started"
# A run whose executing process was asked to stop (a worker's SIGTERM or Ctrl-C).
STOPPED_MESSAGE = "Run interrupted: the worker executing it was stopped"
# django-tasks-db keeps queue names in a 32-character column.
QUEUE_NAME_MAX_LENGTH = 32


def lost_worker_message(run: TunixRun, lease_seconds: int) -> str:
    """Why a run whose supervisor stopped beating was failed, naming who held it."""
    return (
        f"Run failed: lost its {_holder(run)} on {run.supervisor_host or 'an unknown host'} "
        f"(no heartbeat for {lease_seconds} s)"
    )


def gone_worker_message(run: TunixRun) -> str:
    """Why a run whose process is gone (seen from its own host) was failed.

    Runs executed by a worker name it; a run executed by the request or command
    that launched it gets INTERRUPTED_MESSAGE.
    """
    if not run.worker_id:
        return INTERRUPTED_MESSAGE
    return (
        f"Run interrupted: lost its worker {run.worker_id} on {run.supervisor_host} "
        "(its process is gone: killed or restarted)"
    )


def _holder(run: TunixRun) -> str:
    return f"worker {run.worker_id}" if run.worker_id else f"process {run.supervisor_pid}"


class RunNotFound(LookupError):
    """No run has this id (HTTP 404)."""


class RunAlreadyFinished(Exception):
    """The run is in a terminal status and cannot change (HTTP 400)."""

    def __init__(self, status: str) -> None:
        super().__init__(f"Run is already in terminal state: {status}")
        self.status = status


class QueueUnavailable(Exception):
    """The database could not take the run, so nothing was queued (HTTP 503)."""


class TunixRuntimeUnavailable(Exception):
    """A local run was requested but the Tunix runtime is not installed (HTTP 501)."""

    def __init__(self) -> None:
        super().__init__(RUNTIME_UNAVAILABLE_MESSAGE)


class InvalidRunRequest(ValueError):
    """The request cannot be launched; `field` names the culprit (HTTP 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class StartedRun:
    """A run that is `running` and must now be executed, and where it works.

    `runs.execution.run_execute` takes one. `recorded` is False when the database
    could not store the row: the run is still executed and its outcome returned to
    the caller, but there is no row to write its trainer or its outcome to.
    `actor` executes it and is named on its last event (the launcher of a
    synchronous run, the worker that claimed a queued one).
    """

    run: TunixRun
    directory: Path
    recorded: bool
    actor: Actor


def db_lock_wait_limit() -> None:
    """Make this transaction give up on a lock after TUNIX_RUN_DB_LOCK_TIMEOUT_MS.

    PostgreSQL only: SQLite has no lock_timeout; there a write waits for the lock up
    to the connection's busy timeout (the database settings' `timeout`) instead.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, true)",
                [f"{settings.TUNIX_RUN_DB_LOCK_TIMEOUT_MS}ms"],
            )


# The former private name, still imported by runs.logs.
_limit_lock_wait = db_lock_wait_limit


# --- Start ------------------------------------------------------------------------------


def _checked_output_dir(request: TunixRunRequest, run_id: uuid.UUID) -> str:
    try:
        dataset_key_validate(request.dataset_key)
    except InvalidDatasetKey as exc:
        raise InvalidRunRequest("dataset_key", str(exc)) from None
    try:
        output_dir, _ = output_dir_resolve(run_id=run_id, output_dir=request.output_dir)
    except OutputDirRefused as exc:
        raise InvalidRunRequest("output_dir", str(exc)) from None
    return output_dir


def _checked_model_id(request: TunixRunRequest) -> TunixRunRequest:
    """The request with the model_id the trainer gets (docs/decisions.md#model-roots)."""
    try:
        model_id = model_id_resolve(request.model_id)
    except ModelIdRefused as exc:
        raise InvalidRunRequest("model_id", str(exc)) from None
    if model_id == request.model_id:
        return request
    return request.model_copy(update={"model_id": model_id})


def _checked_lora(request: TunixRunRequest) -> TunixRunRequest:
    """The request with the LoRA target modules the run will adapt, checked against the family.

    No `target_modules`: every module of the model's family (docs/training.md#lora). A
    family known here (built-in models, checkpoint directories) is checked now; a hub
    model's is checked by the trainer's preflight (a dry-run reports it).
    """
    from runs.trainer.lora import LORA_TARGETS

    lora = request.lora
    if lora is None:
        return request
    family = model_family(request.model_id)
    if lora.target_modules is None:
        lora = lora.model_copy(update={"target_modules": lora_targets_for(family)})
        return request.model_copy(update={"lora": lora})
    allowed = LORA_TARGETS.get(family or "")
    if allowed is not None:
        unknown = [name for name in lora.target_modules if name not in allowed]
        if unknown:
            raise InvalidRunRequest(
                "lora.target_modules",
                f"The {family} family has no module {', '.join(map(repr, unknown))}; "
                f"it has: {', '.join(allowed)}",
            )
    return request


def _check_evaluate_on(request: TunixRunRequest) -> None:
    """The evaluation asked for on completion must be one that could be queued now."""
    if request.evaluate_on is None:
        return
    from evaluations.services import InvalidEvaluationRequest, evaluation_dataset

    try:
        evaluation_dataset(request.dataset_key, request.evaluate_on)
    except InvalidEvaluationRequest as exc:
        raise InvalidRunRequest("evaluate_on", str(exc)) from None


def _resume_source(request: TunixRunRequest) -> TunixRun | None:
    """The run `resume_from` names, when the request may continue its last checkpoint.

    Raises InvalidRunRequest("resume_from") naming what stands in the way: no such run,
    a dry-run, a run still active, no checkpoint, another model or another LoRA shape
    (the trainer checks the same again from the checkpoint's own run_summary.json).
    """
    from runs.trainer.train import describe_lora_shape, lora_shape

    if request.resume_from is None:
        return None
    run_id = request.resume_from
    source = TunixRun.objects.filter(pk=run_id).first()
    if source is None:
        raise InvalidRunRequest("resume_from", f"Run not found: {run_id}")
    if source.mode != RunMode.LOCAL:
        raise InvalidRunRequest(
            "resume_from", f"Run {run_id} is a dry-run: only a local run leaves checkpoints"
        )
    if source.status in ACTIVE_STATUSES:
        raise InvalidRunRequest(
            "resume_from", f"Run {run_id} is still {source.status}: resume it once it has ended"
        )
    steps = (source.training or {}).get("checkpoint_steps") or checkpoint_steps(
        output_dir_absolute(source.output_dir)
    )
    if not steps:
        raise InvalidRunRequest("resume_from", f"Run {run_id} left no checkpoint to resume from")
    if source.model_id != request.model_id:
        raise InvalidRunRequest(
            "resume_from",
            f"Run {run_id} trained model {source.model_id!r}; "
            f"this request asks for {request.model_id!r}",
        )
    before = lora_shape(source.lora)
    now = lora_shape(request.lora.model_dump() if request.lora is not None else None)
    if before != now:
        raise InvalidRunRequest(
            "resume_from",
            f"Run {run_id} trained {describe_lora_shape(before)}; "
            f"this request asks for {describe_lora_shape(now)}",
        )
    return source


def _supervised_by_this_process(run: TunixRun, now: datetime) -> None:
    pid = os.getpid()
    run.supervisor_host = host_name()
    run.supervisor_pid = pid
    run.supervisor_fingerprint = process_fingerprint(pid)
    run.heartbeat_at = now


def _new_run(request: TunixRunRequest, *, mode: str, status: str, actor: Actor) -> TunixRun:
    """An unsaved run for a checked launch request (InvalidRunRequest if it is not).

    Launched by `actor.user` (None: anonymous, or a command without `--as`).
    """
    run_id = uuid.uuid4()
    output_dir = _checked_output_dir(request, run_id)
    request = _checked_lora(_checked_model_id(request))
    _check_evaluate_on(request)
    source = _resume_source(request)
    now = timezone.now()
    return TunixRun(
        run_id=run_id,
        dataset_key=request.dataset_key,
        model_id=request.model_id,
        mode=mode,
        status=status,
        started_at=now,
        created_at=now,
        output_dir=output_dir,
        config=request.model_dump(mode="json"),
        launched_by=actor.user,
        resumed_from=source,
    )


def run_start(*, request: TunixRunRequest, actor: Actor) -> StartedRun:
    """Check a launch request, then create its row `running` with a first event.

    Raises TunixRuntimeUnavailable (501) or InvalidRunRequest (422) before any row
    exists. The calling process is recorded as the run's supervisor: it promises to
    execute the run (`runs.execution.run_execute`) and finish it. A failed insert is
    logged and rolled back; the run is returned with `recorded=False` and is still
    executed. `actor` launches it (its user is `launched_by`) and is named on its events.
    """
    mode = RunMode.DRY_RUN if request.dry_run else RunMode.LOCAL
    if mode == RunMode.LOCAL and not tunix_runtime_available():
        raise TunixRuntimeUnavailable
    run = _new_run(request, mode=mode, status=RunStatus.RUNNING, actor=actor)
    run_id = run.run_id
    _supervised_by_this_process(run, run.created_at)
    recorded = True
    try:
        with transaction.atomic():
            db_lock_wait_limit()
            run.save(force_insert=True)
            RunEvent.objects.create(
                run=run,
                from_status=None,
                to_status=RunStatus.RUNNING,
                reason=f"launched ({mode})",
                actor=actor.label,
            )
    except DatabaseError:
        logger.exception("Failed to create run record %s", run.run_id)
        recorded = False
    return StartedRun(
        run=run, directory=run_directory(run_id=run_id), recorded=recorded, actor=actor
    )


def run_enqueue(*, request: TunixRunRequest, actor: Actor, queue: str | None = None) -> TunixRun:
    """Create a run `pending` on a worker queue and return it; a worker executes it.

    The row, its first event and the django-tasks row that carries it to a worker
    are written in one transaction, so a worker sees the task exactly when the run
    exists (docs/decisions.md#queued-execution). `queue` must be one of
    TUNIX_QUEUES (None: TUNIX_DEFAULT_QUEUE). The Tunix runtime is checked by the
    worker, which may be another machine. `actor` launches it (its user is
    `launched_by`). Raises InvalidRunRequest (422) before anything is written,
    QueueUnavailable (503) when the database refuses.
    """
    from runs.tasks import execute_run

    queue = queue or settings.TUNIX_DEFAULT_QUEUE
    if queue not in settings.TUNIX_QUEUES or len(queue) > QUEUE_NAME_MAX_LENGTH:
        raise InvalidRunRequest("queue", queue_unknown(queue))
    mode = RunMode.DRY_RUN if request.dry_run else RunMode.LOCAL
    run = _new_run(request, mode=mode, status=RunStatus.PENDING, actor=actor)
    run_id = run.run_id
    run.queue = queue
    run.message = f"{mode.label.capitalize()} execution pending"
    try:
        # Three inserts and no lock wait to limit (nothing else can hold rows that do
        # not exist yet). The task goes first so that the run row is written once,
        # with its task id; no worker sees either before the commit.
        with transaction.atomic():
            result = execute_run.using(queue_name=queue).enqueue(str(run_id))
            run.task_id = str(result.id)
            run.save(force_insert=True)
            RunEvent.objects.create(
                run=run,
                from_status=None,
                to_status=RunStatus.PENDING,
                reason=f"queued ({mode}) on {queue}",
                actor=actor.label,
                created_at=run.created_at,
            )
    except DatabaseError as exc:
        logger.exception("Failed to queue run %s", run_id)
        raise QueueUnavailable("The run could not be queued: the database is unavailable") from exc
    return run


def run_claim(*, run_id: uuid.UUID, worker_id: str) -> StartedRun | None:
    """Take a pending run for this process (a worker); None if it is not pending any more.

    One compare-and-set `pending` -> `running` with an event naming the worker and
    its host, so a run is executed once even if its task is delivered twice. The
    caller executes the returned run (`runs.execution.run_execute`). The actor
    is the worker on this host (`worker:<id>@<host>`), named on the claim and on
    the run's last event.
    """
    now = timezone.now()
    claimer = TunixRun(run_id=run_id)
    _supervised_by_this_process(claimer, now)
    actor = Actor.worker(worker_id, claimer.supervisor_host)
    fields = {
        "status": RunStatus.RUNNING,
        "started_at": now,
        "worker_id": worker_id,
        "supervisor_host": claimer.supervisor_host,
        "supervisor_pid": claimer.supervisor_pid,
        "supervisor_fingerprint": claimer.supervisor_fingerprint,
        "heartbeat_at": now,
        "message": f"{_mode_label(run_id)} execution in progress",
    }
    with transaction.atomic():
        db_lock_wait_limit()
        won = TunixRun.objects.filter(pk=run_id, status=RunStatus.PENDING).update(**fields)
        if not won:
            return None
        RunEvent.objects.create(
            run_id=run_id,
            from_status=RunStatus.PENDING,
            to_status=RunStatus.RUNNING,
            reason=f"claimed by worker {worker_id} on {claimer.supervisor_host}",
            actor=actor.label,
            created_at=now,
        )
    run = TunixRun.objects.get(pk=run_id)
    return StartedRun(run=run, directory=run_directory(run_id=run_id), recorded=True, actor=actor)


def run_heartbeat(*, run_id: uuid.UUID) -> str | None:
    """Renew an executing run's lease; its status now (None: gone, or the database failed).

    The supervisor stops the trainer when this says `cancel_requested`, and stops
    supervising when it says a terminal status (someone else finished the run).
    """
    try:
        with transaction.atomic():
            db_lock_wait_limit()
            TunixRun.objects.filter(pk=run_id, status__in=EXECUTING_STATUSES).update(
                heartbeat_at=timezone.now()
            )
            return TunixRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
    except DatabaseError:
        logger.warning("run %s: heartbeat not written (database unavailable)", run_id)
        database_reset()
        return None


def database_reset() -> None:
    """After a failed query outside a transaction: drop this thread's broken connections.

    Long-running loops (a supervisor, a worker) have no request cycle to do it, and
    a connection the database server closed fails every later query until it is
    closed; the next query then connects afresh.
    """
    if not connection.in_atomic_block:
        close_old_connections()


def run_cancel(*, run_id: uuid.UUID, actor: Actor) -> str:
    """Cancel a run; the status it now has (`cancelled` or `cancel_requested`).

    A pending run is cancelled at once (its stderr says it never started); an
    executing one becomes `cancel_requested` and its supervisor stops the trainer
    (SIGTERM to its process group, SIGKILL after TUNIX_CANCEL_GRACE_SECONDS) and
    records `cancelled`. Asking again while cancellation is under way changes
    nothing. `actor` asks (named on the event). Raises RunNotFound, or
    RunAlreadyFinished for a terminal run.
    """
    now = timezone.now()
    mode = TunixRun.objects.filter(pk=run_id).values_list("mode", flat=True).first()
    if mode is None:
        raise RunNotFound(run_id)
    label = "Dry-run" if mode == RunMode.DRY_RUN else "Local"
    with transaction.atomic():
        db_lock_wait_limit()
        cancelled = TunixRun.objects.filter(pk=run_id, status=RunStatus.PENDING).update(
            status=RunStatus.CANCELLED,
            completed_at=now,
            duration_seconds=0.0,
            stderr=CANCELLED_BEFORE_START,
            message=f"{label} execution cancelled",
        )
        if cancelled:
            RunEvent.objects.create(
                run_id=run_id,
                from_status=RunStatus.PENDING,
                to_status=RunStatus.CANCELLED,
                reason="cancelled before it started",
                actor=actor.label,
                created_at=now,
            )
            _task_close(run_id, "the run was cancelled before it started")
            return RunStatus.CANCELLED
        requested = TunixRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(
            status=RunStatus.CANCEL_REQUESTED,
            message=f"{label} execution cancellation requested",
        )
        if requested:
            RunEvent.objects.create(
                run_id=run_id,
                from_status=RunStatus.RUNNING,
                to_status=RunStatus.CANCEL_REQUESTED,
                reason="cancellation requested",
                actor=actor.label,
                created_at=now,
            )
            return RunStatus.CANCEL_REQUESTED
    status = TunixRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
    if status is None:
        raise RunNotFound(run_id)
    if status in TERMINAL_STATUSES:
        raise RunAlreadyFinished(status)
    return str(status)  # already cancel_requested


def _mode_label(run_id: uuid.UUID) -> str:
    mode = TunixRun.objects.filter(pk=run_id).values_list("mode", flat=True).first()
    return "Dry-run" if mode == RunMode.DRY_RUN else "Local"


def _task_close(run_id: uuid.UUID, why: str) -> None:
    """Close the queue row of a run that will not be executed (or whose worker is lost)."""
    task_id = TunixRun.objects.filter(pk=run_id).values_list("task_id", flat=True).first()
    task_close(task_id or "", why)


def task_close(task_id: str, why: str) -> None:
    """Close a django-tasks queue row whose work will not be done ("" : nothing to close)."""
    from django_tasks_db.models import DBTaskResult

    if not task_id:
        return
    DBTaskResult.objects.filter(id=task_id, status__in=["READY", "RUNNING"]).update(
        status="FAILED",
        finished_at=timezone.now(),
        exception_class_path="",
        traceback=f"Closed by the run registry: {why}",
    )


def run_trainer_record(*, run_id: uuid.UUID, host: str, pid: int) -> None:
    """Note the trainer subprocess (host, pid) on the running row; best effort.

    The reaper uses it to kill a trainer whose supervisor died. Not a status
    change, so no event.
    """
    try:
        with transaction.atomic():
            db_lock_wait_limit()
            TunixRun.objects.filter(pk=run_id, status__in=EXECUTING_STATUSES).update(
                host=host, pid=pid
            )
    except DatabaseError:
        logger.exception("Failed to record the trainer pid of run %s", run_id)


# --- Finish -----------------------------------------------------------------------------


def run_finish(*, run: TunixRun, outcome: RunOutcome, reason: str, actor: Actor) -> bool:
    """Move an executing run to the outcome's status; True if this call did it.

    One compare-and-set update from `running` or `cancel_requested`, then an event
    and the metrics rows not stored yet, in one transaction. False when the run was
    no longer executing (someone else finished it first; the stored outcome stays)
    or when the database failed: then the outcome is kept in the run directory for
    `run_reap`. `run` is not changed. `actor` (the run's executor, or the reaper)
    is named on the event.
    """
    fields = outcome_fields(started_at=run.started_at, outcome=outcome)
    try:
        with transaction.atomic():
            db_lock_wait_limit()
            before = (
                TunixRun.objects.select_for_update()
                .filter(pk=run.pk, status__in=EXECUTING_STATUSES)
                .values_list("status", flat=True)
                .first()
            )
            updated = 0
            if before is not None:
                updated = TunixRun.objects.filter(pk=run.pk, status=before).update(**fields)
            if updated:
                RunEvent.objects.create(
                    run_id=run.pk,
                    from_status=before,
                    to_status=outcome.status,
                    reason=reason,
                    actor=actor.label,
                    created_at=outcome.completed_at,
                )
                # Steps shipped while the run trained are stored already.
                RunMetric.objects.bulk_create(
                    [
                        RunMetric(run_id=run.pk, **m)
                        for m in metric_rows(outcome.metrics, outcome.metrics)
                    ],
                    batch_size=1000,
                    ignore_conflicts=True,
                )
                if outcome.status == RunStatus.COMPLETED and (run.config or {}).get("evaluate_on"):
                    _evaluation_on_completion(run.run_id)
    except DatabaseError:
        logger.exception("Failed to update run record %s", run.run_id)
        pending_outcome_save(run_id=run.run_id, outcome=outcome)
        return False
    if not updated:
        logger.warning(
            "run %s was no longer running when its outcome (%s) arrived; kept the stored one",
            run.run_id,
            outcome.status,
        )
    return bool(updated)


def _evaluation_on_completion(run_id: uuid.UUID) -> None:
    """Queue the evaluation the run asked for, with its completion (docs/evaluation.md)."""
    from evaluations.services import evaluation_after_run

    completed = TunixRun.objects.select_related("launched_by").get(pk=run_id)
    evaluation_after_run(run=completed)


# --- Reap -------------------------------------------------------------------------------


def run_reap(
    *,
    now: datetime | None = None,
    hosts_gone: Iterable[str] = (),
    expire_leases: bool = True,
    actor: Actor = REAPER,
) -> list[uuid.UUID]:
    """Finish executing runs that nobody will finish; return their ids.

    Every worker calls this in its loop (and `manage.py reap_runs` does once):
    - A run whose outcome could not be recorded (outcome.json in its directory,
      readable from here) gets that outcome.
    - A run of this host whose supervising process is gone is marked `failed`
      (interrupted) at once; a still-alive orphaned trainer of it is killed first.
    - A run on any host whose heartbeat is older than TUNIX_RUN_LEASE_SECONDS is
      marked `failed` with a message naming the lost worker (docs/decisions.md#leases).
      On its own host a live supervising process keeps its run: liveness seen from
      here beats a heartbeat that could not be written (a database outage).
      `expire_leases=False` skips this judgement, for a caller whose own view of
      the database is younger than a lease.
    - Runs of the hosts named in `hosts_gone` (an operator's word that those
      machines are gone for good) are marked `failed` too.
    A reaped run that was `cancel_requested` ends `cancelled` instead: its trainer
    died with its supervisor. The queue row of a reaped run is closed. Pending
    runs whose task a worker took without claiming them are queued again
    (`run_requeue_unclaimed`). Every event it writes names `actor` (the reaper).
    """
    now = now or timezone.now()
    host = host_name()
    gone = set(hosts_gone) - {host}
    lease = settings.TUNIX_RUN_LEASE_SECONDS
    expired_before = now - timedelta(seconds=lease)
    reaped: list[uuid.UUID] = []
    executing = TunixRun.objects.filter(status__in=EXECUTING_STATUSES).defer("stdout", "stderr")
    for run in executing:
        pending = pending_outcome_load(run_id=run.run_id)
        if pending is not None:
            _log_catch_up(run)
            if run_finish(
                run=run,
                outcome=pending,
                reason="outcome recorded after a failed database write",
                actor=actor,
            ):
                reaped.append(run.run_id)
                pending_outcome_discard(run_id=run.run_id)
            continue
        if run.supervisor_host in gone or _supervisor_gone(run, host):
            message, reason = gone_worker_message(run), "reaped: supervising process gone"
        elif (
            expire_leases
            and (run.heartbeat_at or run.started_at) < expired_before
            and not _supervisor_alive_here(run, host)
        ):
            message = lost_worker_message(run, lease)
            reason = f"reaped: lease expired ({message})"
        else:
            continue
        outcome = _interrupted_outcome(run, now, host, message)
        if run_finish(run=run, outcome=outcome, reason=reason, actor=actor):
            _task_close(run.run_id, message)
            reaped.append(run.run_id)
    if expire_leases:
        run_requeue_unclaimed(now=now, actor=actor)
    return reaped


def run_requeue_unclaimed(*, now: datetime | None = None, actor: Actor = REAPER) -> list[uuid.UUID]:
    """Queue again the pending runs whose task a worker took but never claimed; their ids.

    A worker takes a task, then claims its run; if it dies or loses the database
    in between, the run stays `pending` with nobody to execute it. A run pending
    for more than a lease whose task row is no longer ready (or is missing) gets
    a fresh task, the old row closed and an event saying so. Exactly-once still
    holds: whichever task delivers the run first claims it (`run_claim`). The
    events name `actor` (the reaper).
    """
    from django_tasks_db.models import DBTaskResult

    now = now or timezone.now()
    older = now - timedelta(seconds=settings.TUNIX_RUN_LEASE_SECONDS)
    pending = dict(
        TunixRun.objects.filter(status=RunStatus.PENDING, created_at__lt=older).values_list(
            "run_id", "task_id"
        )
    )
    if not pending:
        return []
    ready: set[str] = set()
    task_ids = [t for t in pending.values() if t]
    for start in range(0, len(task_ids), 500):
        ready.update(
            str(t)
            for t in DBTaskResult.objects.filter(
                id__in=task_ids[start : start + 500], status="READY"
            ).values_list("id", flat=True)
        )
    requeued = []
    for run_id, task_id in pending.items():
        if task_id and str(uuid.UUID(task_id)) in ready:
            continue
        if _requeue(run_id, task_id, now, actor):
            requeued.append(run_id)
    return requeued


def _requeue(run_id: uuid.UUID, task_id: str, now: datetime, actor: Actor) -> bool:
    from django_tasks_db.models import DBTaskResult

    from runs.tasks import execute_run

    run = TunixRun.objects.filter(pk=run_id).only("queue", "status").first()
    if run is None or run.status != RunStatus.PENDING:
        return False
    queue = run.queue or settings.TUNIX_DEFAULT_QUEUE
    if queue not in settings.TUNIX_QUEUES:
        logger.warning("run %s: pending on queue %r, which is no longer configured", run_id, queue)
        return False
    taken_by = (
        DBTaskResult.objects.filter(id=task_id).values_list("worker_ids", flat=True).first()
        if task_id
        else None
    )
    who = f"worker {taken_by[-1]}" if taken_by else "a worker"
    with transaction.atomic():
        db_lock_wait_limit()
        result = execute_run.using(queue_name=queue).enqueue(str(run_id))
        moved = TunixRun.objects.filter(
            pk=run_id, status=RunStatus.PENDING, task_id=task_id
        ).update(task_id=str(result.id))
        if not moved:
            transaction.set_rollback(True)
            return False
        RunEvent.objects.create(
            run_id=run_id,
            from_status=RunStatus.PENDING,
            to_status=RunStatus.PENDING,
            reason=f"queued again on {queue}: its task was taken by {who}, which never claimed it",
            actor=actor.label,
            created_at=now,
        )
        if task_id:
            DBTaskResult.objects.filter(id=task_id, status__in=["READY", "RUNNING"]).update(
                status="FAILED",
                finished_at=now,
                traceback="Closed by the run registry: its run was queued again",
            )
    logger.warning("run %s: queued again (its task was taken by %s, never claimed)", run_id, who)
    return True


def _supervisor_alive_here(run: TunixRun, host: str) -> bool:
    """Whether the process executing `run` is alive on this very host."""
    if run.supervisor_host != host or run.supervisor_pid is None:
        return False
    return process_alive(run.supervisor_pid, run.supervisor_fingerprint)


def _log_catch_up(run: TunixRun) -> None:
    """Store the output its supervisor could not (best effort: the files keep it all)."""
    from runs.logs import log_catch_up

    try:
        log_catch_up(
            run_id=run.run_id,
            run_dir=run_directory(run_id=run.run_id),
            max_bytes=settings.TUNIX_RUN_LOG_MAX_BYTES,
        )
    except DatabaseError:
        logger.warning("run %s: its unstored output stays in the run directory", run.run_id)
        database_reset()


def _supervisor_gone(run: TunixRun, host: str) -> bool:
    """Whether this host can tell that the process executing `run` no longer exists."""
    if run.supervisor_host != host or run.supervisor_pid is None:
        return False
    return not process_alive(run.supervisor_pid, run.supervisor_fingerprint)


def _interrupted_outcome(run: TunixRun, now: datetime, host: str, message: str) -> RunOutcome:
    """A dead run's outcome: `failed`, with the output and metrics it left behind.

    On the host that executed the run its directory is read (an orphaned trainer
    is killed first); elsewhere what the supervisor shipped to the database so far
    (log chunks, metric rows) is what remains.
    """
    metrics: list[dict[str, Any]] = []
    stdout = stderr = ""
    training = None
    here = run.mode == RunMode.LOCAL and run.supervisor_host == host
    if here:
        run_dir = run_directory(run_id=run.run_id)
        if run.pid is not None and run.host == host:
            orphans_kill(run.pid, run_dir)
        stdout = log_excerpt(run_dir / "stdout.log")
        stderr = log_excerpt(run_dir / "stderr.log")
        metrics = metrics_parse(run_dir / METRICS_FILE, run_id=run.run_id)
        # What it checkpointed before it died is what a resume of it continues.
        training = training_report(output_dir_absolute(run.output_dir))
    if not here or not (stdout or stderr or metrics):
        stdout, stderr = _stored_output(run, "stdout"), _stored_output(run, "stderr")
        metrics = [
            dict(row)
            for row in RunMetric.objects.filter(run_id=run.run_id)
            .order_by("step")
            .values("step", "loss", "eval_loss", "tokens_per_second", "elapsed_seconds")
        ]
    return RunOutcome(
        # A run being cancelled ends as asked: its trainer died with its supervisor.
        status=RunStatus.CANCELLED
        if run.status == RunStatus.CANCEL_REQUESTED
        else RunStatus.FAILED,
        message=message,
        stdout=stdout,
        stderr=f"{stderr}\n{message}" if stderr else message,
        completed_at=now,
        metrics=metrics,
        training=training,
    )


def _stored_output(run: TunixRun, stream: str) -> str:
    """The head of a stream as the database holds it: its log chunks, else the row's excerpt."""
    head = bytearray()
    chunks = run_log_text(run_id=run.run_id, stream=stream)
    for chunk in chunks:
        head += chunk.encode("utf-8")
        if len(head) > OUTPUT_LIMIT_BYTES:
            break
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
    if head:
        return truncate_output(bytes(head))
    return str(getattr(run, stream))
