"""The background task that executes a queued run on a worker.

`runs.services.run_enqueue` queues `execute_run` (django-tasks, database
backend) in the transaction that creates the run; a worker (`manage.py
run_worker`, `runs.worker`) delivers it here. The run row, not the task, is the
source of truth: the task claims the run by a compare-and-set and does nothing
if it is no longer pending (cancelled, or the task was delivered twice).
"""

from __future__ import annotations

import logging
import uuid

from django_tasks import TaskContext, task

from runs import execution, services
from runs.models import RunMode
from runs.runtime import tunix_runtime_available
from runs.worker import executing, worker_stopping

logger = logging.getLogger(__name__)


@task(takes_context=True)
def execute_run(context: TaskContext, run_id: str) -> str:
    """Claim the run and execute it here; return its final status ("" if not claimed)."""
    worker_ids = context.task_result.worker_ids
    worker_id = worker_ids[-1] if worker_ids else "unknown"
    started = services.run_claim(run_id=uuid.UUID(run_id), worker_id=worker_id)
    if started is None:
        logger.info("run %s is not pending any more; its task is skipped", run_id)
        return ""
    with executing(started.run):
        if started.run.mode == RunMode.LOCAL and not tunix_runtime_available():
            return execution.run_fail_unavailable(started=started).status
        try:
            return execution.run_execute(started=started).status
        except (SystemExit, KeyboardInterrupt):
            if not worker_stopping():
                raise
            # This worker was told to stop: the run is recorded as stopped, and the
            # worker's loop ends by itself; the task itself went as it should.
            return str(started.run.status)
