"""Admin: datasets are read-only (built only through dataset_build)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from datasets.models import Dataset
from tunix_registry.admin import ReadOnlyAdminMixin

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Dataset]
else:  # ModelAdmin is generic only for the type checker
    _ModelAdmin = admin.ModelAdmin


@admin.register(Dataset)
class DatasetAdmin(ReadOnlyAdminMixin, _ModelAdmin):
    list_display = (
        "key",
        "name",
        "version",
        "trace_count",
        "selection_strategy",
        "created_at",
        "created_by",
    )
    list_filter = ("selection_strategy", "created_by")
    list_select_related = ("created_by",)
    search_fields = ("key", "name", "session_id", "training_run_id")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    readonly_fields = (
        "key",
        "name",
        "version",
        "build_id",
        "created_at",
        "created_by",
        "filters",
        "selection_strategy",
        "seed",
        "trace_count",
        "stats",
        "session_id",
        "parent_dataset_id",
        "training_run_id",
        "traces_link",
    )
    fields = readonly_fields

    @admin.display(description="Traces")
    def traces_link(self, obj: Dataset) -> str:
        url = reverse("datasets:detail", kwargs={"key": obj.key})
        return format_html(
            '<a href="{}">{} traces, in order, on the dataset page</a>', url, obj.trace_count
        )
