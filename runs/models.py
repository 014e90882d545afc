"""The run registry: every Tunix run ever launched, its audit trail and its metrics.

Runs are immutable audit records once finished (docs/decisions.md#no-delete-patch-retry).
Every status change goes through `runs.services` as a compare-and-set update plus a
`RunEvent` row; nothing else sets `status` (docs/decisions.md#status-values).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from tunix_registry.actors import ACTOR_MAX_LENGTH, username_of


class RunStatus(models.TextChoices):
    # When each is written: docs/decisions.md#status-values.
    PENDING = "pending", "pending"
    RUNNING = "running", "running"
    CANCEL_REQUESTED = "cancel_requested", "cancel_requested"
    CANCELLED = "cancelled", "cancelled"
    COMPLETED = "completed", "completed"
    FAILED = "failed", "failed"
    TIMEOUT = "timeout", "timeout"


class RunMode(models.TextChoices):
    # With a hyphen, as the API returns it (docs/decisions.md#dry-run-mode-name).
    DRY_RUN = "dry-run", "dry-run"
    LOCAL = "local", "local"


TERMINAL_STATUSES = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.CANCELLED}
)
# A run some process is (or will be) executing.
ACTIVE_STATUSES = frozenset({RunStatus.PENDING, RunStatus.RUNNING, RunStatus.CANCEL_REQUESTED})
# A run whose supervisor beats: it holds a lease (TUNIX_RUN_LEASE_SECONDS).
EXECUTING_STATUSES = frozenset({RunStatus.RUNNING, RunStatus.CANCEL_REQUESTED})


def _list_index(*equality: str, name: str) -> models.Index:
    """An index serving `WHERE <equality columns> ORDER BY created_at DESC, run_id DESC`."""
    return models.Index(fields=[*equality, "-created_at", "-run_id"], name=name)


class TunixRun(models.Model):
    """One launched run (dry-run or local).

    When each nullable field is null: docs/decisions.md#nullable-fields (also in
    the 0001 migration's docstring). `run_id` is a random UUID
    (docs/decisions.md#uuid-keys); `dataset_key` is a plain string, not a foreign
    key (docs/decisions.md#dataset-key-not-a-foreign-key).
    """

    run_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    dataset_key = models.CharField(max_length=256)
    model_id = models.CharField(max_length=256)
    mode = models.CharField(max_length=16, choices=RunMode.choices)
    status = models.CharField(max_length=16, choices=RunStatus.choices)
    exit_code = models.IntegerField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    stdout = models.TextField(default="", blank=True)
    stderr = models.TextField(default="", blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Relative to the data directory when under it (never an absolute server path
    # there); absolute only under an operator-allowed TUNIX_OUTPUT_ROOTS entry.
    output_dir = models.CharField(max_length=512)
    # The full validated request (hyperparameters included), as given.
    config = models.JSONField(default=dict)
    # The message the launch returned (stored, not reconstructed as the original did).
    message = models.TextField(default="", blank=True)
    # The trainer subprocess of a local run.
    host = models.CharField(max_length=255, blank=True, default="")
    pid = models.IntegerField(null=True, blank=True)
    # The process that executes the run and will write its outcome (a web worker or
    # `manage.py tunix_run`); the reaper fails running runs whose supervisor is gone.
    supervisor_host = models.CharField(max_length=255, blank=True, default="")
    supervisor_pid = models.IntegerField(null=True, blank=True)
    # Identifies that process beyond its pid (boot id + start time on Linux), so a
    # recycled pid after a restart is not mistaken for the original process.
    supervisor_fingerprint = models.CharField(max_length=128, blank=True, default="")
    # The task queue the run was sent to ("" for runs executed by the request that
    # launched them) and the django-tasks result row that carries it.
    queue = models.CharField(max_length=64, blank=True, default="")
    task_id = models.CharField(max_length=64, blank=True, default="")
    # The worker that claimed the run ("" when the launching request executes it).
    worker_id = models.CharField(max_length=64, blank=True, default="")
    # Written by the supervisor every TUNIX_HEARTBEAT_SECONDS while the run executes;
    # older than TUNIX_RUN_LEASE_SECONDS means its supervisor is gone.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The files of the run's output directory when it ended, as
    # [{"name", "size", "sha256"}], on `host` (null until recorded).
    artifacts = models.JSONField(null=True, blank=True)
    # Metrics summary, from the trainer's metrics.jsonl, kept current while a local
    # run trains (null when nothing was ingested: docs/decisions.md#nullable-fields).
    metrics_steps = models.IntegerField(null=True, blank=True)
    # How many steps were logged (RunMetric rows): a drawing of the series picks
    # its stride from it without counting them (runs.compare).
    metrics_count = models.IntegerField("logged steps", null=True, blank=True)
    final_loss = models.FloatField(null=True, blank=True)
    best_eval_loss = models.FloatField(null=True, blank=True)
    # Mean tokens/second over the logged steps.
    tokens_per_second = models.FloatField(null=True, blank=True)
    # Who launched it: null for an anonymous client and for runs older than the
    # column. PROTECT: a user who launched a run is deactivated, never deleted
    # (docs/decisions.md#who-did-what). Indexed by run_list_launcher_idx.
    launched_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="launched_runs",
        db_index=False,
    )
    # The run whose last checkpoint this one continued (null: it started afresh).
    # PROTECT: runs are never deleted; the link is the audit trail of a resume.
    resumed_from = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="resumed_by",
    )
    # What a local run's trainer reported when it ended (its run_summary.json, the
    # fields of runs.schemas.RunTrainingOut) and the checkpoint steps it left; null
    # for a dry-run and for a run that reported nothing (runs.training).
    training = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-run_id"]
        # Launching is `add_tunixrun`; cancelling any run is its own permission.
        permissions = [("cancel_tunixrun", "Can cancel a run")]
        indexes = [
            # GET /api/tunix/runs and the history page without filters; also
            # "recent runs" by created_at and keyset cursors (docs/decisions.md#pagination).
            _list_index(name="run_list_idx"),
            # The list filtered by status.
            _list_index("status", name="run_list_status_idx"),
            # The list filtered by dataset_key; also any lookup by dataset_key.
            _list_index("dataset_key", name="run_list_dataset_idx"),
            # The list filtered by mode.
            _list_index("mode", name="run_list_mode_idx"),
            # The list filtered by dataset_key + status (the history's "failed runs of X").
            _list_index("dataset_key", "status", name="run_list_dataset_status_idx"),
            # The list filtered by status + mode.
            _list_index("status", "mode", name="run_list_status_mode_idx"),
            # The list filtered by dataset_key + mode.
            _list_index("dataset_key", "mode", name="run_list_dataset_mode_idx"),
            # The list filtered by all three.
            _list_index("dataset_key", "status", "mode", name="run_list_all_idx"),
            # The list filtered by launcher (`?launched_by=`); also the PROTECT check
            # when a user is deleted.
            _list_index("launched_by", name="run_list_launcher_idx"),
            # The list filtered by launcher + status ("my failed runs").
            _list_index("launched_by", "status", name="run_list_launcher_status_idx"),
            # The reaper and the live views: only the few active runs, never the whole table.
            models.Index(
                fields=["status", "heartbeat_at"],
                name="run_live_idx",
                condition=models.Q(status__in=["pending", "running", "cancel_requested"]),
            ),
            # A pending run's place in its queue.
            models.Index(
                fields=["queue", "created_at"],
                name="run_pending_queue_idx",
                condition=models.Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} ({self.mode}, {self.status})"

    @property
    def launched_by_name(self) -> str | None:
        """The launcher's username (None: anonymous or unknown); see tunix_registry.actors."""
        return username_of(self, "launched_by")

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def lora(self) -> dict[str, object] | None:
        """The LoRA settings it was launched with (None: full-weight), from its config."""
        lora = (self.config or {}).get("lora")
        return lora if isinstance(lora, dict) else None

    @property
    def evaluate_on(self) -> str | None:
        """The evaluation the request asked for on completion (docs/evaluation.md)."""
        value = (self.config or {}).get("evaluate_on")
        return value if isinstance(value, str) else None

    @property
    def checkpoint_every_n_steps(self) -> int | None:
        """The checkpoint cadence it asked for (None: the trainer's default)."""
        value = (self.config or {}).get("checkpoint_every_n_steps")
        return value if isinstance(value, int) else None

    @property
    def metrics_summary(self) -> dict[str, float | int | None] | None:
        """The additive `metrics` object of the API, or None when nothing was ingested."""
        if self.metrics_steps is None:
            return None
        return {
            "steps": self.metrics_steps,
            "final_loss": self.final_loss,
            "best_eval_loss": self.best_eval_loss,
            "tokens_per_second": self.tokens_per_second,
        }


class RunEvent(models.Model):
    """An audit row for every status change of a run (creation included)."""

    run = models.ForeignKey(TunixRun, on_delete=models.CASCADE, related_name="events")
    # Null (not "") on the creation event: there was no status before it.
    from_status = models.CharField(  # noqa: DJ001
        max_length=16, choices=RunStatus.choices, null=True, blank=True
    )
    to_status = models.CharField(max_length=16, choices=RunStatus.choices)
    reason = models.TextField()
    # Who wrote it, as text that stays readable whatever becomes of a user:
    # `user:<name>`, `worker:<id>@<host>`, `reaper`, `command`, `anonymous`
    # ("" for events older than the column; docs/decisions.md#who-did-what).
    actor = models.CharField(max_length=ACTOR_MAX_LENGTH, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            # A run's events, oldest first (run page, admin inline).
            models.Index(fields=["run", "created_at", "id"], name="runevent_run_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}: {self.from_status or '-'} -> {self.to_status}"


class RunLogChunk(models.Model):
    """A piece of a run's output, stored as it comes so that any machine can show it.

    `seq` counts from 1 per run. Past TUNIX_RUN_LOG_MAX_BYTES the head and the tail
    are kept and one chunk on stream `marker` says what was left out between them.
    """

    run = models.ForeignKey(TunixRun, on_delete=models.CASCADE, related_name="log_chunks")
    seq = models.IntegerField()
    # stdout, stderr, or marker (the gap left by the cap).
    stream = models.CharField(max_length=8)
    chunk = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            # One chunk per seq; also serves "chunks of a run after seq N".
            models.UniqueConstraint(fields=["run", "seq"], name="runlogchunk_run_seq_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} #{self.seq} ({self.stream})"


class TunixWorker(models.Model):
    """A worker process (`manage.py run_worker`) on some machine, as it last reported."""

    worker_id = models.CharField(max_length=64, primary_key=True)
    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    queues = models.JSONField(default=list)
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now)
    # The run it is executing, if any (not a foreign key: a worker row outlives nothing).
    current_run_id = models.UUIDField(null=True, blank=True)
    # Set when the worker stopped cleanly; a worker that died keeps it null and its
    # heartbeat ages past the lease.
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["host", "worker_id"]
        indexes = [models.Index(fields=["heartbeat_at"], name="worker_heartbeat_idx")]

    def __str__(self) -> str:
        return f"{self.worker_id} on {self.host}"


class RunMetric(models.Model):
    """One logged training step of a local run, from the trainer's metrics.jsonl."""

    run = models.ForeignKey(TunixRun, on_delete=models.CASCADE, related_name="metrics")
    step = models.IntegerField()
    loss = models.FloatField()
    eval_loss = models.FloatField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    elapsed_seconds = models.FloatField(null=True, blank=True)
    # The row's level in its run's series (runs.metrics.metric_level): the rows of level
    # L and above are every 2**L-th step from the first, which a drawing reads through
    # runmetric_run_level_idx instead of every step (runs.compare).
    level = models.SmallIntegerField(default=0)

    class Meta:
        ordering = ["run", "step"]
        constraints = [
            # One row per step; also serves a run's series by step (metrics endpoint, chart).
            models.UniqueConstraint(fields=["run", "step"], name="runmetric_run_step_uniq"),
        ]
        indexes = [
            models.Index(fields=["run", "level"], name="runmetric_run_level_idx"),
            # The steps with an eval loss, which a run page's thinned chart keeps all of
            # (runs.selectors.run_chart_metrics).
            models.Index(
                fields=["run", "step"],
                condition=models.Q(eval_loss__isnull=False),
                name="runmetric_run_eval_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} step {self.step}: {self.loss}"


class DbWriteProbe(models.Model):
    """The database write latency `GET /metrics` reports, the same from every process.

    One row (pk 1): each scrape times one committed one-row write and adds the
    observation to this cumulative histogram (docs/decisions.md#metrics-endpoint).
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    # Cumulative counts, one per bound of runs.prometheus.DB_LATENCY_BUCKETS_MS.
    bucket_counts = models.JSONField(default=list)
    sum_ms = models.FloatField(default=0.0)
    count = models.BigIntegerField(default=0)
    probed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"database write probe ({self.count} observations)"
