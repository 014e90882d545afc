"""HTML pages of the traces app: list, detail (+ score), upload, compare.

Each view validates its input with a form, calls one selector or service and
renders; with htmx only the partial that changes is rendered.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.decorators import action_permission
from accounts.roles import ADD_TRACES
from traces import selectors, services
from traces.forms import CompareForm, PageForm, TraceUploadForm
from traces.models import Trace
from tunix_registry.actors import user_or_none
from tunix_registry.pagination import page_of


def _htmx(request: HttpRequest) -> bool:
    return bool(getattr(request, "htmx", False))


@require_GET
def trace_list(request: HttpRequest) -> HttpResponse:
    limit, offset = PageForm(request.GET).page()
    rows = selectors.trace_list_page(limit=limit, offset=offset)
    traces, pagination = page_of(rows, limit, offset)
    previous_offset = max(offset - limit, 0) if offset > 0 else None
    context = {
        "traces": traces,
        "pagination": pagination,
        "limit": limit,
        "previous_offset": previous_offset,
        "first_shown": offset + 1,
        "last_shown": offset + len(traces),
        "preview_chars": selectors.PROMPT_PREVIEW_CHARS,
    }
    template = "traces/list.html#table" if _htmx(request) else "traces/list.html"
    return render(request, template, context)


def _get_or_404(trace_id: uuid.UUID) -> Trace:
    trace = selectors.trace_get(trace_id=trace_id)
    if trace is None:
        raise Http404(f"Trace {trace_id} not found")
    return trace


@require_GET
def trace_detail(request: HttpRequest, trace_id: uuid.UUID) -> HttpResponse:
    trace = _get_or_404(trace_id)
    meta = trace.payload.get("meta")
    context = {
        "trace": trace,
        "payload": trace.payload,
        "meta_json": json.dumps(meta, indent=2, ensure_ascii=False) if meta is not None else None,
        "score": selectors.score_latest(trace_id=trace_id),
    }
    return render(request, "traces/detail.html", context)


@require_POST
@action_permission(ADD_TRACES)
def trace_score(request: HttpRequest, trace_id: uuid.UUID) -> HttpResponse:
    try:
        score = services.trace_score(trace_id=trace_id)
    except Trace.DoesNotExist:
        raise Http404(f"Trace {trace_id} not found") from None
    if _htmx(request):
        return render(
            request, "traces/detail.html#score", {"score": score, "trace_id": trace_id}, status=201
        )
    return redirect(reverse("traces:detail", args=[trace_id]) + "#score", permanent=False)


@require_http_methods(["GET", "POST"])
@action_permission(ADD_TRACES)
def trace_upload(request: HttpRequest) -> HttpResponse:
    context: dict[str, Any] = {}
    if request.method == "POST":
        form = TraceUploadForm(request.POST, request.FILES)
        if form.is_valid():
            payload = form.cleaned_data["trace_json"]
            if payload is not None:
                created = services.trace_create(
                    payload=payload, created_by=user_or_none(request.user)
                )
                context["created_trace"] = created
                form = TraceUploadForm()
            else:
                upload = form.cleaned_data["jsonl_file"]
                context["import_result"] = services.trace_import(
                    stream=upload.file,
                    all_or_nothing=form.cleaned_data["all_or_nothing"],
                    max_line_bytes=settings.TRACE_MAX_BYTES,
                    created_by=user_or_none(request.user),
                )
                context["file_name"] = upload.name
    else:
        form = TraceUploadForm()
    context["form"] = form
    return render(request, "traces/upload.html", context)


@require_GET
def trace_compare(request: HttpRequest) -> HttpResponse:
    form = CompareForm(request.GET or None)
    context: dict[str, Any] = {"form": form, "sides": None, "missing": []}
    if form.is_valid():
        now = timezone.now()
        sides = []
        for label, key in (("Base trace", "base"), ("Other trace", "other")):
            trace = selectors.trace_get(trace_id=form.cleaned_data[key])
            if trace is None:
                context["missing"].append(f"{label} {form.cleaned_data[key]} not found")
                continue
            score, details = services.baseline_score(payload=trace.payload, scored_at=now)
            sides.append({"label": label, "trace": trace, "score": score, "details": details})
        if not context["missing"]:
            context["sides"] = sides
    status = 404 if context["missing"] else 200
    return render(request, "traces/compare.html", context, status=status)
