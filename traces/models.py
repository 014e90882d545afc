from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from tunix_registry.actors import username_of


class Trace(models.Model):
    """A reasoning trace: prompt, numbered steps and a final answer.

    `payload` holds the normalised trace with exactly the five keys of the
    contract (`trace_version`, `prompt`, `final_answer`, `steps`, `meta`, the
    last one null when omitted). JSONB on PostgreSQL.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    trace_version = models.CharField(max_length=64)
    payload = models.JSONField()
    # Who created it: null for an anonymous client and for traces older than the
    # column; PROTECT: such a user is deactivated, not deleted
    # (docs/decisions.md#who-did-what).
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="created_traces",
    )

    class Meta:
        indexes = [
            # The trace list and `latest` dataset builds: newest first, id as tie-breaker.
            models.Index(fields=["created_at", "id"], name="trace_created_at_id_idx"),
        ]

    def __str__(self) -> str:
        return str(self.id)

    @property
    def created_by_name(self) -> str | None:
        """The creator's username (None: anonymous or unknown)."""
        return username_of(self, "created_by")


class Score(models.Model):
    """One evaluation of a trace; every score request adds a row."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed below by (trace, created_at), which also serves the foreign key.
    trace = models.ForeignKey(
        Trace, on_delete=models.CASCADE, related_name="scores", db_index=False
    )
    criteria = models.CharField(max_length=64)
    score = models.FloatField()
    details = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # The latest score of a trace (trace list and detail pages), and the cascade.
            models.Index(fields=["trace", "created_at"], name="score_trace_created_at_idx"),
            # Scores by criteria (admin filter).
            models.Index(fields=["criteria"], name="score_criteria_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.criteria} {self.score} for {self.trace_id}"
