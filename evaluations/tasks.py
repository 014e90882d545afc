"""The background task that executes a queued evaluation on a worker.

`evaluations.services.evaluation_enqueue` queues `execute_evaluation` in the
transaction that creates the evaluation; any worker serving its queue
(`manage.py run_worker`) delivers it here. The evaluation row is the source of
truth: the task claims it by a compare-and-set and does nothing if it is no
longer pending (cancelled, or the task delivered twice).
"""

from __future__ import annotations

import logging
import uuid

from django_tasks import TaskContext, task

from evaluations import execution, services
from evaluations.models import EvaluationStatus
from runs.runtime import tunix_runtime_available

logger = logging.getLogger(__name__)


@task(takes_context=True)
def execute_evaluation(context: TaskContext, evaluation_id: str) -> str:
    """Claim the evaluation and execute it here; its final status ("" if not claimed)."""
    worker_ids = context.task_result.worker_ids
    worker_id = worker_ids[-1] if worker_ids else "unknown"
    evaluation = services.evaluation_claim(
        evaluation_id=uuid.UUID(evaluation_id), worker_id=worker_id
    )
    if evaluation is None:
        logger.info("evaluation %s is not pending any more; its task is skipped", evaluation_id)
        return ""
    if not tunix_runtime_available():
        services.evaluation_finish(
            evaluation_id=evaluation.evaluation_id,
            outcome=services.EvaluationOutcome(
                status=EvaluationStatus.FAILED,
                message="Evaluation failed: Tunix runtime not available on this worker",
                stderr="Tunix runtime not available. Install with: pip install -e '.[tunix]'",
            ),
        )
        return EvaluationStatus.FAILED
    return execution.evaluation_execute(evaluation)
