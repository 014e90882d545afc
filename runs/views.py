"""The run pages: the Tunix panel with its run history, a run's own page, its logs.

Views are adapters: a form validates the input, one selector or service does
the work, a template (or one of its partials, for htmx) renders it. The history
table uses `run_list`, the selector of `GET /api/tunix/runs`.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import push_url
from django_htmx.middleware import HtmxDetails

from datasets.selectors import dataset_list
from runs.execution import run_execute
from runs.forms import HistoryFilterForm, LaunchForm
from runs.models import RunMode, TunixRun
from runs.runtime import tunix_status
from runs.selectors import LOG_STREAMS, run_events, run_get, run_list, run_log_path, run_metrics
from runs.services import InvalidRunRequest, TunixRuntimeUnavailable, run_start
from tunix_registry.pagination import DEFAULT_LIMIT

HOME_TEMPLATE = "runs/home.html"
DETAIL_TEMPLATE = "runs/detail.html"
# Datasets offered by the launch form's suggestion list (newest first); any key may be typed.
DATASET_CHOICES_LIMIT = 200
# Query parameters that open the history on page load (the filters, the page, or history=1).
HISTORY_PARAMS = ("status", "mode", "dataset_key", "limit", "offset", "history")


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


# --- The Tunix panel ---------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def home(request: HtmxHttpRequest) -> HttpResponse:
    """GET: the panel (launch form, runtime status, run history). POST: launch a run."""
    if request.method == "POST":
        return _launch(request)
    initial, prefill_notice = _prefill(request.GET.get("from"))
    return _render_home(request, form=LaunchForm(initial=initial), prefill_notice=prefill_notice)


def _launch(request: HtmxHttpRequest) -> HttpResponse:
    form = LaunchForm(request.POST)
    context: dict[str, Any] = {"form": form}
    status = 200
    if form.is_valid() and form.run_request is not None:
        try:
            context["result"] = run_execute(started=run_start(request=form.run_request))
        except TunixRuntimeUnavailable as exc:
            context["runtime_error"] = str(exc)
            status = 501
        except InvalidRunRequest as exc:
            form.add_error(exc.field if exc.field in form.fields else None, str(exc))
            status = 422
    else:
        status = 422
    if request.htmx:
        # htmx swaps only 2xx answers; the outcome is in the fragment itself.
        return render(request, f"{HOME_TEMPLATE}#launch", _launch_context(context))
    return _render_home(request, status=status, **context)


def _prefill(run_id: str | None) -> tuple[dict[str, Any], str]:
    """Initial launch values copied from a stored run ("launch again"), and a notice."""
    if not run_id:
        return {}, ""
    try:
        run = run_get(run_id=uuid.UUID(run_id))
    except ValueError:
        run = None
    if run is None:
        return {}, "There is no run with that id to copy; the form shows the defaults."
    initial = {"dataset_key": run.dataset_key, "model_id": run.model_id}
    initial.update(LaunchForm.initial_from_config(run.config or {}))
    return initial, f"Pre-filled from run {run.run_id}. Launching creates a new run."


def _launch_context(context: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": tunix_status(),
        "dataset_keys": [d.key for d in dataset_list(limit=DATASET_CHOICES_LIMIT, offset=0)],
        **context,
    }


def _render_home(request: HtmxHttpRequest, *, status: int = 200, **context: Any) -> HttpResponse:
    filters = HistoryFilterForm(request.GET)
    history_open = any(name in request.GET for name in HISTORY_PARAMS)
    context = _launch_context(context)
    context["filters"] = filters
    context["history_open"] = history_open
    if history_open:
        context.update(_history_context(filters))
        if context["history_errors"] and status == 200:
            status = 400
    return render(request, HOME_TEMPLATE, context, status=status)


# --- Run history -------------------------------------------------------------------------


def _page_query(filters: dict[str, str], *, limit: int, offset: int) -> str:
    """The canonical query string of a history view (the API's parameter names)."""
    params: dict[str, str | int] = dict(filters)
    if limit != DEFAULT_LIMIT:
        params["limit"] = limit
    if offset:
        params["offset"] = offset
    return urlencode(params)


def _history_context(form: HistoryFilterForm) -> dict[str, Any]:
    if not form.is_valid():
        errors = [f"{name}: {' '.join(str(m) for m in msgs)}" for name, msgs in form.errors.items()]
        return {"history_errors": errors, "runs": [], "page_query": ""}
    filters = form.filters()
    limit, offset = form.page()
    page = run_list(**filters, limit=limit, offset=offset)
    next_offset = page.pagination["next_offset"]
    previous_offset = max(offset - limit, 0) if offset else None
    return {
        "history_errors": [],
        "runs": page.items,
        "filtered": bool(filters),
        "offset": offset,
        "page_query": _page_query(filters, limit=limit, offset=offset),
        "next_query": (
            _page_query(filters, limit=limit, offset=next_offset)
            if next_offset is not None
            else None
        ),
        "previous_query": (
            _page_query(filters, limit=limit, offset=previous_offset)
            if previous_offset is not None
            else None
        ),
    }


def _history_state(query: str) -> dict[str, list[str]]:
    parsed = parse_qs(query)
    return {name: parsed[name] for name in HISTORY_PARAMS if name in parsed and name != "history"}


@require_GET
def history(request: HtmxHttpRequest) -> HttpResponse:
    """The history table (htmx fragment); the page's URL follows its filters and page."""
    context = _history_context(HistoryFilterForm(request.GET))
    page_url = reverse("runs:home") + (f"?{context['page_query']}" if context["page_query"] else "")
    if not request.htmx:
        # Without JavaScript the page itself shows the history, opened.
        return redirect(page_url if context["page_query"] else f"{page_url}?history=1")
    response = render(request, f"{HOME_TEMPLATE}#history-table", context)
    current = request.htmx.current_url
    if not context["history_errors"] and (
        current is None
        or _history_state(urlsplit(current).query) != _history_state(context["page_query"])
    ):
        push_url(response, page_url)
    return response


@require_GET
def run_row(request: HtmxHttpRequest, run_id: uuid.UUID) -> HttpResponse:
    """The inline detail of one history row (htmx fragment)."""
    run = _run_or_404(run_id)
    if not request.htmx:
        return redirect("runs:detail", run_id=run.run_id)
    return render(request, f"{HOME_TEMPLATE}#run-detail", {"run": run})


# --- The run page ------------------------------------------------------------------------


def _run_or_404(run_id: uuid.UUID) -> TunixRun:
    run = run_get(run_id=run_id)
    if run is None:
        raise Http404("No run with this id")
    return run


@require_GET
def run_detail(request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    """Everything stored about one run: fields, configuration, events, metrics, outputs."""
    run = _run_or_404(run_id)
    logs = {
        stream: run_log_path(run_id=run.run_id, stream=stream) is not None for stream in LOG_STREAMS
    }
    context = {
        "run": run,
        "events": run_events(run_id=run.run_id),
        "metrics": run_metrics(run_id=run.run_id),
        "logs": logs,
        "is_local": run.mode == RunMode.LOCAL,
        "config_rows": sorted((run.config or {}).items()),
    }
    return render(request, DETAIL_TEMPLATE, context)


@require_GET
def run_log(request: HttpRequest, run_id: uuid.UUID, stream: str) -> FileResponse:
    """The complete stdout.log or stderr.log of a run, as a plain-text download."""
    if stream not in LOG_STREAMS:
        raise Http404("Unknown log stream")
    run = _run_or_404(run_id)
    path = run_log_path(run_id=run.run_id, stream=stream)
    if path is None:
        raise Http404("This run has no such log file")
    return FileResponse(
        path.open("rb"),
        as_attachment=True,
        filename=f"run-{run.run_id}-{stream}.log",
        content_type="text/plain; charset=utf-8",
    )
