"""Datasets: immutable, versioned selections of traces.

A `Dataset` row is the dataset's manifest (rendered from the database, mirrored
to `DATA_DIR/datasets/<key>/manifest.json` when built or materialised); its
`DatasetMember` rows are the selected traces in selection order.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from traces.models import Trace
from tunix_registry.actors import username_of


class SelectionStrategy(models.TextChoices):
    LATEST = "latest", "Latest (newest first)"
    RANDOM = "random", "Random (seeded)"


class Dataset(models.Model):
    """One built version of a dataset; never changed after it is built.

    `key` is `<name>-<version>` sanitised and validated (datasets.keys);
    building the same key again is refused. `parent_dataset_id` holds the
    parent's key as free text (the original's field name, not a foreign key).
    """

    key = models.CharField(max_length=256, unique=True)
    name = models.CharField(max_length=128)
    version = models.CharField(max_length=64)
    build_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    filters = models.JSONField(default=dict, blank=True)
    selection_strategy = models.CharField(
        max_length=16, choices=SelectionStrategy.choices, default=SelectionStrategy.LATEST
    )
    seed = models.BigIntegerField(null=True, blank=True)
    trace_count = models.PositiveIntegerField(default=0)
    stats = models.JSONField(default=dict, blank=True)
    # Null and "" differ in the manifest (the original's fields are nullable strings).
    session_id = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    parent_dataset_id = models.CharField(max_length=256, null=True, blank=True)  # noqa: DJ001
    training_run_id = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    # Who built it: null for an anonymous client and for datasets older than the
    # column; PROTECT: such a user is deactivated, not deleted
    # (docs/decisions.md#who-did-what).
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="created_datasets",
    )

    class Meta:
        indexes = [
            # GET /api/datasets and the dataset list page: newest first, id as tie-breaker.
            models.Index(fields=["created_at", "id"], name="dataset_created_at_id_idx"),
        ]

    def __str__(self) -> str:
        return self.key

    @property
    def created_by_name(self) -> str | None:
        """The builder's username (None: anonymous or unknown)."""
        return username_of(self, "created_by")


class DatasetMember(models.Model):
    """A trace's place in a dataset.

    The trace reference is a foreign key WITHOUT a database constraint and with
    DO_NOTHING on delete: deleting a trace leaves the membership in place, so a
    dataset never changes after its build, and exports (which join to the trace
    table) simply skip traces that no longer exist. `sft_line` and `trace_line`
    keep the trace's `tunix_sft` and `trace` records as rendered at build time.
    """

    # Indexed by the (dataset, position) constraint below; no separate index.
    dataset = models.ForeignKey(
        Dataset, on_delete=models.CASCADE, related_name="members", db_index=False
    )
    position = models.PositiveIntegerField()
    trace = models.ForeignKey(
        Trace,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="dataset_memberships",
    )
    # The trace's `tunix_sft` and `trace` export lines, rendered once at build
    # time (datasets and traces never change,
    # docs/decisions.md#immutable-resources), so those exports stream stored text.
    sft_line = models.TextField(blank=True, default="")
    trace_line = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            # Also the index of exports and the dataset page: members of one
            # dataset in position order.
            models.UniqueConstraint(
                fields=["dataset", "position"], name="dataset_member_position_uniq"
            ),
        ]
        indexes = [
            # dataset_trace_count (a dry-run's count of the dataset's traces that
            # still exist): an index-only scan of one dataset's trace ids, each
            # looked up in the traces' primary key.
            models.Index(fields=["dataset", "trace"], name="dataset_member_trace_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.dataset_id}#{self.position}"
