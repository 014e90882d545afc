"""Admin for traces (searchable by prompt) and scores (read-only)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.db.models.fields.json import KT
from django.db.models.functions import Substr
from django.http import HttpRequest

from traces.models import Score, Trace
from tunix_registry.admin import ReadOnlyAdminMixin

PREVIEW = 80


@admin.register(Trace)
class TraceAdmin(admin.ModelAdmin):
    list_display = ["id", "created_at", "trace_version", "prompt_preview", "created_by"]
    list_filter = ["created_by"]
    list_select_related = ["created_by"]
    search_fields = ["payload__prompt"]
    date_hierarchy = "created_at"
    ordering = ["-created_at", "-id"]
    readonly_fields = ["id", "created_at", "created_by"]
    show_full_result_count = False

    def save_model(self, request: HttpRequest, obj: Trace, form: Any, change: bool) -> None:
        # A trace added here is credited to the admin who added it
        # (docs/decisions.md#who-did-what); an edit keeps its creator.
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Trace]:
        # The list shows a preview cut in the database; payloads are not loaded.
        return (
            super()
            .get_queryset(request)
            .annotate(_preview=Substr(KT("payload__prompt"), 1, PREVIEW + 1))
        )

    @admin.display(description="prompt")
    def prompt_preview(self, obj: Any) -> str:
        text: str = getattr(obj, "_preview", None) or obj.payload.get("prompt", "")
        return text if len(text) <= PREVIEW else text[: PREVIEW - 1] + "…"


@admin.register(Score)
class ScoreAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # trace_id, not trace: the list never loads a trace (and its payload).
    list_display = ["id", "trace_id", "criteria", "score", "created_at"]
    list_filter = ["criteria"]
    ordering = ["-created_at"]
    readonly_fields = ["id", "trace", "criteria", "score", "details", "created_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Score]:
        return super().get_queryset(request).defer("details")
