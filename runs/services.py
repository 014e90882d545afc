"""Every write to a run: its state transitions, each a compare-and-set plus a RunEvent row.

- `run_start`: check a launch request, create the row `running` and its first
  event (docs/decisions.md#running-row-first); returns a `StartedRun`.
- `run_trainer_record`: note the trainer subprocess on the running row.
- `run_finish`: from `running` to the outcome's terminal status; says whether it won.
- `run_reap`: finish the runs nobody else will (their process is gone).

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
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from datasets.keys import InvalidDatasetKey, dataset_key_validate
from runs.metrics import METRICS_FILE, metrics_parse
from runs.models import RunEvent, RunMetric, RunMode, RunStatus, TunixRun
from runs.outcomes import (
    RunOutcome,
    log_excerpt,
    outcome_fields,
    pending_outcome_discard,
    pending_outcome_load,
    pending_outcome_save,
)
from runs.outputs import OutputDirRefused, output_dir_resolve
from runs.processes import host_name, orphans_kill, process_alive, process_fingerprint
from runs.runtime import RUNTIME_UNAVAILABLE_MESSAGE, tunix_runtime_available
from runs.schemas import TunixRunRequest
from runs.selectors import run_directory

logger = logging.getLogger(__name__)

INTERRUPTED_MESSAGE = (
    "Run interrupted: the process executing it is gone (server restart or killed worker)"
)


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
    """

    run: TunixRun
    directory: Path
    recorded: bool


def _limit_lock_wait() -> None:
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


# --- Start ------------------------------------------------------------------------------


def run_start(*, request: TunixRunRequest) -> StartedRun:
    """Check a launch request, then create its row `running` with a first event.

    Raises TunixRuntimeUnavailable (501) or InvalidRunRequest (422) before any row
    exists. The calling process is recorded as the run's supervisor: it promises to
    execute the run (`runs.execution.run_execute`) and finish it. A failed insert is
    logged and rolled back; the run is returned with `recorded=False` and is still
    executed.
    """
    mode = RunMode.DRY_RUN if request.dry_run else RunMode.LOCAL
    if mode == RunMode.LOCAL and not tunix_runtime_available():
        raise TunixRuntimeUnavailable
    try:
        dataset_key_validate(request.dataset_key)
    except InvalidDatasetKey as exc:
        raise InvalidRunRequest("dataset_key", str(exc)) from None
    run_id = uuid.uuid4()
    try:
        output_dir, _ = output_dir_resolve(run_id=run_id, output_dir=request.output_dir)
    except OutputDirRefused as exc:
        raise InvalidRunRequest("output_dir", str(exc)) from None

    now = timezone.now()
    pid = os.getpid()
    run = TunixRun(
        run_id=run_id,
        dataset_key=request.dataset_key,
        model_id=request.model_id,
        mode=mode,
        status=RunStatus.RUNNING,
        started_at=now,
        created_at=now,
        output_dir=output_dir,
        config=request.model_dump(mode="json"),
        supervisor_host=host_name(),
        supervisor_pid=pid,
        supervisor_fingerprint=process_fingerprint(pid),
    )
    recorded = True
    try:
        with transaction.atomic():
            _limit_lock_wait()
            run.save(force_insert=True)
            RunEvent.objects.create(
                run=run, from_status=None, to_status=RunStatus.RUNNING, reason=f"launched ({mode})"
            )
    except DatabaseError:
        logger.exception("Failed to create run record %s", run.run_id)
        recorded = False
    return StartedRun(run=run, directory=run_directory(run_id=run_id), recorded=recorded)


def run_trainer_record(*, run_id: uuid.UUID, host: str, pid: int) -> None:
    """Note the trainer subprocess (host, pid) on the running row; best effort.

    The reaper uses it to kill a trainer whose supervisor died. Not a status
    change, so no event.
    """
    try:
        with transaction.atomic():
            _limit_lock_wait()
            TunixRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(host=host, pid=pid)
    except DatabaseError:
        logger.exception("Failed to record the trainer pid of run %s", run_id)


# --- Finish -----------------------------------------------------------------------------


def run_finish(*, run: TunixRun, outcome: RunOutcome, reason: str) -> bool:
    """Move a running run to the outcome's status; True if this call did it.

    One compare-and-set update from `running`, then an event and the metrics rows,
    in one transaction. False when the run was no longer running (someone else
    finished it first; the stored outcome stays) or when the database failed: then
    the outcome is kept in the run directory for `run_reap`. `run` is not changed.
    """
    fields = outcome_fields(started_at=run.started_at, outcome=outcome)
    try:
        with transaction.atomic():
            _limit_lock_wait()
            updated = TunixRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(**fields)
            if updated:
                RunEvent.objects.create(
                    run_id=run.pk,
                    from_status=RunStatus.RUNNING,
                    to_status=outcome.status,
                    reason=reason,
                    created_at=outcome.completed_at,
                )
                RunMetric.objects.bulk_create(
                    [RunMetric(run_id=run.pk, **m) for m in outcome.metrics], batch_size=1000
                )
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


# --- Reap -------------------------------------------------------------------------------


def run_reap(*, now: datetime | None = None, hosts_gone: Iterable[str] = ()) -> list[uuid.UUID]:
    """Finish runs left `running` that nobody will finish; return their ids.

    - A run whose outcome could not be recorded (outcome.json in its directory) gets it.
    - A run of this host whose supervising process is gone is marked `failed`
      (interrupted); a still-alive orphaned trainer of it is killed first.
    - Runs of the hosts named in `hosts_gone` (an operator's word that those machines
      are gone for good) are marked `failed` too.
    Other hosts' runs are left alone: their processes cannot be checked from here.
    """
    now = now or timezone.now()
    host = host_name()
    gone = set(hosts_gone) - {host}
    reaped: list[uuid.UUID] = []
    running = TunixRun.objects.filter(status=RunStatus.RUNNING).defer("stdout", "stderr")
    for run in running:
        pending = pending_outcome_load(run_id=run.run_id)
        if pending is not None:
            if run_finish(
                run=run, outcome=pending, reason="outcome recorded after a failed database write"
            ):
                reaped.append(run.run_id)
                pending_outcome_discard(run_id=run.run_id)
            continue
        if run.supervisor_host not in gone and not _supervisor_gone(run, host):
            continue
        outcome = _interrupted_outcome(run, now, host)
        if run_finish(run=run, outcome=outcome, reason="reaped: supervising process gone"):
            reaped.append(run.run_id)
    return reaped


def _supervisor_gone(run: TunixRun, host: str) -> bool:
    """Whether this host can tell that the process executing `run` no longer exists."""
    if run.supervisor_host != host or run.supervisor_pid is None:
        return False
    return not process_alive(run.supervisor_pid, run.supervisor_fingerprint)


def _interrupted_outcome(run: TunixRun, now: datetime, host: str) -> RunOutcome:
    """A dead run's outcome: `failed`, with what its trainer left in the run directory."""
    metrics: list[dict[str, Any]] = []
    stdout = stderr = ""
    if run.mode == RunMode.LOCAL:
        run_dir = run_directory(run_id=run.run_id)
        if run.pid is not None and run.host == host:
            orphans_kill(run.pid, run_dir)
        stdout = log_excerpt(run_dir / "stdout.log")
        stderr = log_excerpt(run_dir / "stderr.log")
        metrics = metrics_parse(run_dir / METRICS_FILE, run_id=run.run_id)
    return RunOutcome(
        status=RunStatus.FAILED,
        message=INTERRUPTED_MESSAGE,
        stdout=stdout,
        stderr=f"{stderr}\n{INTERRUPTED_MESSAGE}" if stderr else INTERRUPTED_MESSAGE,
        completed_at=now,
        metrics=metrics,
    )
