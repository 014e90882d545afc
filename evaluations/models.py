"""An evaluation of a run: the model it scored, on which items, with which metrics, and how.

An evaluation is its own record beside the run it evaluates (docs/decisions.md#evaluations):
created `pending` on a worker queue, executed once by the worker that claims it, and
immutable once it has ended; evaluating again is a new evaluation. Its items are the
engine's per-item results (evaluations/engine, docs/evaluation.md).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from runs.models import TunixRun
from tunix_registry.actors import username_of


class EvaluationStatus(models.TextChoices):
    PENDING = "pending", "pending"
    RUNNING = "running", "running"
    CANCEL_REQUESTED = "cancel_requested", "cancel_requested"
    CANCELLED = "cancelled", "cancelled"
    COMPLETED = "completed", "completed"
    FAILED = "failed", "failed"


TERMINAL_EVALUATION_STATUSES = frozenset(
    {EvaluationStatus.CANCELLED, EvaluationStatus.COMPLETED, EvaluationStatus.FAILED}
)


class Evaluation(models.Model):
    evaluation_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # PROTECT: runs and their evaluations are never deleted.
    run = models.ForeignKey(TunixRun, on_delete=models.PROTECT, related_name="evaluations")
    # True: the run's base model (its model_id) was evaluated, not what the run trained.
    baseline = models.BooleanField(default=False)
    # The dataset the items come from; `held_out`: only the part the run's trainer held
    # out of it (the run's own dataset).
    dataset_key = models.CharField(max_length=256)
    held_out = models.BooleanField(default=False)
    # Metric names with their version (evaluations.metrics.METRICS) and the generation
    # settings (max_new_tokens, temperature, seed, batch_size), as requested.
    metrics = models.JSONField()
    generation = models.JSONField()
    status = models.CharField(max_length=32, choices=EvaluationStatus.choices)
    queue = models.CharField(max_length=32)
    task_id = models.CharField(max_length=64, blank=True, default="")
    worker_id = models.CharField(max_length=200, blank=True, default="")
    host = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Progress: items scored so far, of how many (null until the dataset is written).
    items_done = models.IntegerField(default=0)
    items_total = models.IntegerField(null=True, blank=True)
    # When it completed: {metric: {"mean", "count", "ci_low", "ci_high"}} and its speed.
    scores = models.JSONField(null=True, blank=True)
    items_per_second = models.FloatField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    message = models.TextField(blank=True, default="")
    stderr = models.TextField(blank=True, default="")
    launched_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="launched_evaluations",
    )

    class Meta:
        ordering = ["-created_at", "-evaluation_id"]
        indexes = [
            # A run's evaluations, newest first, and the list of all evaluations.
            models.Index(
                fields=["run", "-created_at", "-evaluation_id"], name="evaluation_run_idx"
            ),
            models.Index(fields=["-created_at", "-evaluation_id"], name="evaluation_list_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.evaluation_id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_EVALUATION_STATUSES

    @property
    def launched_by_name(self) -> str | None:
        """The launcher's username (None: anonymous); see tunix_registry.actors."""
        return username_of(self, "launched_by")


class EvaluationItem(models.Model):
    """One scored item: the prompt, the expected answer, what the model generated."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.PROTECT, related_name="items")
    index = models.IntegerField()
    prompt = models.TextField()
    expected = models.TextField()
    prediction = models.TextField()
    # {metric: score in [0, 1]}
    scores = models.JSONField()

    class Meta:
        ordering = ["evaluation", "index"]
        constraints = [
            models.UniqueConstraint(fields=["evaluation", "index"], name="evaluation_item_unique")
        ]

    def __str__(self) -> str:
        return f"{self.evaluation_id} #{self.index}"
