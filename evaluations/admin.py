"""Admin of evaluations: read-only, as the runs they evaluate (docs/decisions.md#evaluations)."""

from __future__ import annotations

from django.contrib import admin

from evaluations.models import Evaluation, EvaluationItem
from tunix_registry.admin import ReadOnlyAdminMixin


@admin.register(Evaluation)
class EvaluationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "evaluation_id",
        "run",
        "baseline",
        "dataset_key",
        "held_out",
        "status",
        "items_done",
        "items_total",
        "created_at",
    )
    list_filter = ("status", "baseline", "held_out")
    search_fields = ("=evaluation_id", "=run__run_id", "dataset_key")
    list_select_related = ("run",)
    date_hierarchy = "created_at"


@admin.register(EvaluationItem)
class EvaluationItemAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("evaluation", "index", "expected", "prediction")
    search_fields = ("=evaluation__evaluation_id",)
    list_select_related = ("evaluation",)
