"""Admin of the run registry: read-only for everyone, superusers included.

Runs are immutable audit records (docs/decisions.md#no-delete-patch-retry); the admin inspects them,
their stored log chunks (a paginated list per run, linked from the run) and the workers.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import flatten_fieldsets
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from runs.models import RunEvent, RunLogChunk, TunixRun, TunixWorker
from tunix_registry.admin import ReadOnlyAdminMixin


class DatasetKeyFilter(admin.SimpleListFilter):
    """Filter by dataset key, listing the distinct keys without scanning every run.

    A recursive "loose index scan" hops from one key to the next on the
    dataset_key index (a plain DISTINCT would read the whole table).
    """

    title = "dataset key"
    parameter_name = "dataset_key"
    max_keys = 200

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        table = TunixRun._meta.db_table
        sql = f"""
            WITH RECURSIVE keys(k, n) AS (
                SELECT MIN(dataset_key), 1 FROM {table}
                UNION ALL
                SELECT (SELECT MIN(dataset_key) FROM {table} WHERE dataset_key > keys.k), n + 1
                FROM keys WHERE keys.k IS NOT NULL AND n < %s
            )
            SELECT k FROM keys WHERE k IS NOT NULL
        """  # noqa: S608 - the table name is ours, the limit a parameter
        with connection.cursor() as cursor:
            cursor.execute(sql, [self.max_keys])
            return [(key, key) for (key,) in cursor.fetchall()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(dataset_key=value) if value else queryset


class RunEventInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = RunEvent
    fields = ("created_at", "from_status", "to_status", "reason", "actor")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("created_at", "id")


@admin.register(TunixRun)
class TunixRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "run_id",
        "dataset_key",
        "model_id",
        "mode",
        "status",
        "exit_code",
        "created_at",
        "duration_seconds",
        "metrics_count",
        "launched_by",
    )
    list_filter = ("status", "mode", DatasetKeyFilter, "launched_by")
    # The launcher's username in the changelist's one query, not a query per row.
    list_select_related = ("launched_by",)
    search_fields = ("=run_id", "dataset_key", "=launched_by__username")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-run_id")
    list_per_page = 50
    show_full_result_count = False
    inlines = (RunEventInline,)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "run_id",
                    "status",
                    "mode",
                    "dataset_key",
                    "model_id",
                    "message",
                    "launched_by",
                )
            },
        ),
        (
            "Timing",
            {"fields": ("created_at", "started_at", "completed_at", "duration_seconds")},
        ),
        ("Outcome", {"fields": ("exit_code", "stdout_block", "stderr_block")}),
        (
            "Metrics",
            {
                "fields": (
                    "metrics_count",
                    "metrics_steps",
                    "final_loss",
                    "best_eval_loss",
                    "tokens_per_second",
                )
            },
        ),
        (
            "Execution",
            {
                "fields": (
                    "output_dir",
                    "config",
                    "host",
                    "pid",
                    "supervisor_host",
                    "supervisor_pid",
                    "queue",
                    "task_id",
                    "worker_id",
                    "heartbeat_at",
                    "artifacts",
                    "log_chunks_link",
                )
            },
        ),
    )
    # Everything shown is read-only (the admin only inspects runs), including the
    # computed blocks, which a fieldset can only show as read-only fields.
    readonly_fields = tuple(flatten_fieldsets(fieldsets))

    def get_queryset(self, request: HttpRequest) -> QuerySet[TunixRun]:
        qs = super().get_queryset(request)
        match = request.resolver_match
        if match and (match.url_name or "").endswith("changelist"):
            qs = qs.defer("stdout", "stderr", "config")
        return qs

    @admin.display(description="log chunks")
    def log_chunks_link(self, obj: TunixRun) -> str:
        # A link, not an inline: a run may have thousands of chunks (the list pages them).
        url = reverse("admin:runs_runlogchunk_changelist") + f"?run__run_id__exact={obj.run_id}"
        return format_html('<a href="{}">Stored log chunks of this run</a>', url)

    @admin.display(description="stdout")
    def stdout_block(self, obj: TunixRun) -> str:
        # format_html escapes the output: run output is never marked safe.
        return format_html('<pre class="run-output">{}</pre>', obj.stdout)

    @admin.display(description="stderr")
    def stderr_block(self, obj: TunixRun) -> str:
        return format_html('<pre class="run-output">{}</pre>', obj.stderr)


@admin.register(RunLogChunk)
class RunLogChunkAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """A run's stored output, chunk by chunk (open it from the run's page)."""

    list_display = ("run_id", "seq", "stream", "created_at", "chunk_preview")
    list_filter = ("stream",)
    ordering = ("run", "seq")
    list_per_page = 100
    show_full_result_count = False
    fields = ("run_id", "seq", "stream", "created_at", "chunk_block")
    readonly_fields = fields

    @admin.display(description="chunk")
    def chunk_preview(self, obj: RunLogChunk) -> str:
        return Truncator(obj.chunk).chars(120)

    @admin.display(description="chunk")
    def chunk_block(self, obj: RunLogChunk) -> str:
        return format_html('<pre class="run-output">{}</pre>', obj.chunk)


@admin.register(TunixWorker)
class TunixWorkerAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Worker processes as they last reported (written by the workers only)."""

    list_display = (
        "worker_id",
        "host",
        "pid",
        "queues",
        "current_run_id",
        "heartbeat_at",
        "started_at",
        "stopped_at",
    )
    list_filter = ("host",)
    search_fields = ("=worker_id", "host")
    ordering = ("-heartbeat_at", "worker_id")
    readonly_fields = list_display
    fields = list_display
