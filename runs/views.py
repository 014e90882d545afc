"""The run pages: the Tunix panel with its run history, a run's own page, its logs, workers.

Views are adapters: a form validates the input, one selector or service does
the work, a template (or one of its partials, for htmx) renders it. The history
table uses `run_list`, the selector of `GET /api/tunix/runs`.

A local run launched from the form is queued for a worker (`run_enqueue`) and
the browser lands on its page; a dry run still executes in the request. The
page of a live run polls `run_live` with a cursor (the last log chunk shown,
the status and metrics steps shown) and gets only what is new, as out-of-band
swaps; the answer for a finished run has no trigger, so polling stops
(docs/decisions.md#live-logs).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from django.contrib import messages
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseClientRedirect, push_url, trigger_client_event
from django_htmx.middleware import HtmxDetails
from pydantic import ValidationError as PydanticValidationError

from accounts.decorators import action_permission, write_permission
from accounts.roles import CANCEL_RUNS, LAUNCH_RUNS
from datasets.selectors import dataset_list
from evaluations.schemas import HELD_OUT, EvaluationRequest
from evaluations.selectors import run_evaluations
from evaluations.services import (
    EvaluationQueueUnavailable,
    EvaluationRunNotFound,
    InvalidEvaluationRequest,
    RunNotEvaluable,
    evaluation_enqueue,
)
from runs.execution import run_execute
from runs.forms import HistoryFilterForm, LaunchForm, LiveCursorForm
from runs.metrics import series_level
from runs.models import ACTIVE_STATUSES, RunMode, RunStatus, TunixRun
from runs.runtime import tunix_status
from runs.selectors import (
    LOG_STREAMS,
    queue_depths,
    run_chart_metrics,
    run_events,
    run_get,
    run_list,
    run_log_chunks,
    run_log_path,
    run_log_tail,
    run_log_text,
    run_queue_position,
    run_resumed_by,
    workers_live,
)
from runs.services import (
    InvalidRunRequest,
    QueueUnavailable,
    RunAlreadyFinished,
    RunNotFound,
    TunixRuntimeUnavailable,
    run_cancel,
    run_enqueue,
    run_start,
)
from runs.templatetags.run_pages import MAX_POINTS
from tunix_registry.actors import Actor
from tunix_registry.pagination import DEFAULT_LIMIT

HOME_TEMPLATE = "runs/home.html"
DETAIL_TEMPLATE = "runs/detail.html"
CANCEL_TEMPLATE = "runs/cancel.html"
WORKERS_TEMPLATE = "runs/workers.html"
# The client event a cancellation sends: live regions on the page refresh at once.
RUNS_CHANGED_EVENT = "runs:changed"
# Log chunks on a run page when it opens, and at most per poll (a client behind reads on).
LOG_TAIL_CHUNKS = 200
LIVE_CHUNKS = 100
# A run page reads every logged step up to this many (its table by step lists up to
# 1,000; its chart's lines keep at most run_pages.MAX_POINTS points each); a longer
# run is read thinned to about this many (runs.selectors.run_chart_metrics).
CHART_POINTS = 2 * MAX_POINTS
# A run that can still be cancelled (a cancel_requested one is being cancelled).
CANCELLABLE_STATUSES = frozenset({RunStatus.PENDING, RunStatus.RUNNING})
# Datasets offered by the launch form's suggestion list (newest first); any key may be typed.
DATASET_CHOICES_LIMIT = 200
# Query parameters that open the history on page load (the filters, the page, or history=1).
HISTORY_PARAMS = ("status", "mode", "dataset_key", "launched_by", "limit", "offset", "history")


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


# --- The Tunix panel ---------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@write_permission(LAUNCH_RUNS)
def home(request: HtmxHttpRequest) -> HttpResponse:
    """GET: the panel (launch form, runtime status, run history). POST: launch a run
    (launchers only; others see the history without the form)."""
    if request.method == "POST":
        return _launch(request)
    initial, prefill_notice = _prefill(
        request.GET.get("from"), resume=bool(request.GET.get("resume"))
    )
    return _render_home(request, form=LaunchForm(initial=initial), prefill_notice=prefill_notice)


def _launch(request: HtmxHttpRequest) -> HttpResponse:
    form = LaunchForm(request.POST)
    context: dict[str, Any] = {"form": form}
    status = 200
    if form.is_valid() and form.run_request is not None:
        actor = Actor.of(request.user)
        try:
            if not form.run_request.dry_run:
                queued = run_enqueue(
                    request=form.run_request, actor=actor, queue=form.run_request.queue
                )
                return _to_queued_run(request, queued)
            context["result"] = run_execute(
                started=run_start(request=form.run_request, actor=actor)
            )
        except TunixRuntimeUnavailable as exc:
            context["runtime_error"] = str(exc)
            status = 501
        except InvalidRunRequest as exc:
            # "lora.target_modules" is the lora_target_modules box, "resume_from" its own.
            form.add_error(form.field_for(exc.field), str(exc))
            status = 422
        except QueueUnavailable as exc:
            form.add_error(None, f"{exc}. Nothing was launched; the form keeps your values.")
            status = 503
    else:
        status = 422
    if request.htmx:
        # htmx swaps only 2xx answers; the outcome is in the fragment itself.
        return render(request, f"{HOME_TEMPLATE}#launch", _launch_context(context))
    return _render_home(request, status=status, **context)


def _to_queued_run(request: HtmxHttpRequest, run: TunixRun) -> HttpResponse:
    """The browser goes to the page of the run it just queued."""
    messages.success(request, f"Run queued on {run.queue}; this page follows it live.")
    url = reverse("runs:detail", args=[run.run_id])
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def _prefill(run_id: str | None, *, resume: bool = False) -> tuple[dict[str, Any], str]:
    """Initial launch values copied from a stored run ("launch again"), and a notice.

    With `resume`, the new run also continues that run's last checkpoint (`resume_from`).
    """
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
    if resume:
        initial["resume_from"] = str(run.run_id)
        return initial, (
            f"Pre-filled from run {run.run_id} to resume from its last checkpoint. "
            "Launching creates a new run."
        )
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
        "any_active": any(run.status in ACTIVE_STATUSES for run in page.items),
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


def _active(run: TunixRun) -> bool:
    return run.status in ACTIVE_STATUSES


def _run_facts(run: TunixRun) -> dict[str, Any]:
    """The fields of the run page that move while it executes (no query but a pending run's)."""
    now = timezone.now()
    facts: dict[str, Any] = {
        "run": run,
        "active": _active(run),
        "cancellable": run.status in CANCELLABLE_STATUSES,
        "queue_position": None,
        "queue_served": True,
        "elapsed": None,
        "heartbeat_age": None,
    }
    if run.status == RunStatus.PENDING:
        facts["queue_position"] = run_queue_position(run=run)
        facts["queue_served"] = any(run.queue in w.queues for w in workers_live(now=now))
        facts["elapsed"] = (now - run.created_at).total_seconds()
    elif _active(run):
        facts["elapsed"] = (now - run.started_at).total_seconds()
        if run.heartbeat_at is not None:
            facts["heartbeat_age"] = max((now - run.heartbeat_at).total_seconds(), 0.0)
    return facts


# The trainer's phases in the order they happen (runs.schemas.RunPhasesOut).
TRAINING_PHASES = ("load", "compile", "train", "eval", "save")


def _training_context(run: TunixRun) -> dict[str, Any]:
    """The run page's Training panel: what the trainer reported, LoRA, checkpoints, resumes.

    One query (the runs that resumed this one); the rest is the run's own row.
    """
    training = run.training if isinstance(run.training, dict) else None
    share = None
    phases: list[tuple[str, float]] = []
    checkpoint_steps: list[int] = []
    if training is not None:
        total, trainable = training.get("parameters"), training.get("trainable_parameters")
        if isinstance(total, int) and isinstance(trainable, int) and total > 0:
            share = 100 * trainable / total
        reported = training.get("phases") or {}
        phases = [
            (name, reported[name]) for name in TRAINING_PHASES if reported.get(name) is not None
        ]
        checkpoint_steps = list(training.get("checkpoint_steps") or [])
    return {
        "training": training,
        "trainable_share": share,
        "training_phases": phases,
        "checkpoint_steps": checkpoint_steps,
        "lora": run.lora,
        "resumed_by": run_resumed_by(run_id=run.run_id),
        # The service's rules for a resume source, as far as the row tells them.
        "resumable": (run.mode == RunMode.LOCAL and run.is_terminal and bool(checkpoint_steps)),
    }


def _log_files(run: TunixRun) -> dict[str, bool]:
    return {
        stream: run_log_path(run_id=run.run_id, stream=stream) is not None for stream in LOG_STREAMS
    }


def _metrics_context(run: TunixRun) -> dict[str, Any]:
    """The metrics panel's rows: every step, or for a long run the steps its chart draws
    (`metrics_thinned`; the table by step is shown only with every step)."""
    return {
        "metrics": run_chart_metrics(run=run, max_points=CHART_POINTS),
        "metrics_thinned": series_level(run.metrics_count, CHART_POINTS) > 0,
    }


def _live_url(run: TunixRun, *, since_seq: int) -> str:
    params: dict[str, str | int] = {"since_seq": since_seq, "status": run.status}
    if run.metrics_steps is not None:
        params["steps"] = run.metrics_steps
    return f"{reverse('runs:live', args=[run.run_id])}?{urlencode(params)}"


@require_GET
def run_detail(request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    """Everything stored about one run: fields, configuration, events, metrics, output.

    A live run's page polls `run_live`; the log panel opens on the latest chunks.
    """
    run = _run_or_404(run_id)
    chunks = run_log_tail(run_id=run.run_id, max_chunks=LOG_TAIL_CHUNKS)
    since_seq = chunks[-1].seq if chunks else 0
    context = {
        **_run_facts(run),
        "events": run_events(run_id=run.run_id),
        **_metrics_context(run),
        "logs": _log_files(run),
        "chunks": chunks,
        "has_chunks": bool(chunks),
        "live_url": _live_url(run, since_seq=since_seq),
        "is_local": run.mode == RunMode.LOCAL,
        "config_rows": sorted((run.config or {}).items()),
        **_training_context(run),
        **_evaluations_context(run),
    }
    return render(request, DETAIL_TEMPLATE, context)


# --- Evaluations ------------------------------------------------------------------------


def _evaluations_context(run: TunixRun) -> dict[str, Any]:
    """The run page's Evaluations panel (one query); it polls while one is under way."""
    rows = run_evaluations(run_id=run.run_id)
    return {
        "evaluations": rows,
        "evaluations_active": any(not row.evaluation.is_terminal for row in rows),
    }


@never_cache
@require_GET
def run_evaluations_panel(request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    """The Evaluations panel alone: what the page swaps in while an evaluation runs."""
    run = _run_or_404(run_id)
    context = {"run": run, "is_local": run.mode == RunMode.LOCAL, **_evaluations_context(run)}
    return render(request, f"{DETAIL_TEMPLATE}#evaluations-section", context)


@require_http_methods(["POST"])
@action_permission(LAUNCH_RUNS)
def run_evaluate_view(request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    """Queue an evaluation of the run from its page's form; back to the page with a message."""
    try:
        body = EvaluationRequest(
            dataset=request.POST.get("dataset", "").strip() or HELD_OUT,
            baseline=request.POST.get("baseline") == "1",
        )
        evaluation_enqueue(run_id=run_id, request=body, actor=Actor.of(request.user))
    except EvaluationRunNotFound:
        raise Http404("No run with this id") from None
    except PydanticValidationError as exc:
        messages.error(request, f"Evaluation refused: {exc.errors()[0]['msg']}")
    except (RunNotEvaluable, InvalidEvaluationRequest, EvaluationQueueUnavailable) as exc:
        messages.error(request, f"Evaluation refused: {exc}")
    else:
        messages.success(
            request, "Evaluation queued: a worker generates and scores the answers; see below."
        )
    return redirect(reverse("runs:detail", args=[run_id]) + "#run-evaluations")


@never_cache
@require_GET
def run_live(request: HtmxHttpRequest, run_id: uuid.UUID) -> HttpResponse:
    """What changed on a run page since its cursor, as htmx out-of-band swaps.

    Always the moving fields and the log chunks after `since_seq`; the metrics
    when the steps differ from `steps`; the head, events and output when the
    status differs from `status`. A finished run's answer carries no trigger, so
    the page stops polling. Two queries when nothing moved (three or four for a
    pending run: its queue position, live workers).
    """
    form = LiveCursorForm(request.GET)
    if not form.is_valid():
        return HttpResponseBadRequest("Invalid live cursor")
    since_seq, shown_status, shown_steps = form.cursor()
    run = _run_or_404(run_id)
    if not request.htmx:
        return redirect("runs:detail", run_id=run.run_id)
    chunks = run_log_chunks(run_id=run.run_id, since_seq=since_seq, limit=LIVE_CHUNKS)
    status_changed = run.status != shown_status
    # The metrics section says "final" rather than "latest" once the run has ended.
    steps_changed = run.metrics_steps != shown_steps or (status_changed and not _active(run))
    context: dict[str, Any] = {
        **_run_facts(run),
        "oob": True,
        "chunks": chunks,
        "status_changed": status_changed,
        "steps_changed": steps_changed,
        "live_url": _live_url(run, since_seq=chunks[-1].seq if chunks else since_seq),
        "is_local": run.mode == RunMode.LOCAL,
    }
    if steps_changed:
        context.update(_metrics_context(run))
    if status_changed:
        context["events"] = run_events(run_id=run.run_id)
        context["logs"] = _log_files(run)
        context["has_chunks"] = bool(chunks) or since_seq > 0
        context.update(_training_context(run))
    return render(request, f"{DETAIL_TEMPLATE}#live", context)


# --- Cancellation ------------------------------------------------------------------------


def _safe_next(request: HttpRequest, candidate: str | None) -> str | None:
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return None


@require_http_methods(["GET", "POST"])
@action_permission(CANCEL_RUNS)
def run_cancel_view(request: HtmxHttpRequest, run_id: uuid.UUID) -> HttpResponse:
    """GET: the confirmation page (for browsers without JavaScript). POST: cancel the run.

    POST only changes state, behind Django's CSRF check (token and origin). With
    htmx the answer is a notice and a `runs:changed` event that refreshes the
    page's live regions; otherwise a message and a redirect (to `next` if safe).
    """
    if request.method == "GET":
        run = _run_or_404(run_id)
        context = {
            "run": run,
            "cancellable": run.status in CANCELLABLE_STATUSES,
            "next": _safe_next(request, request.GET.get("next")),
        }
        return render(request, CANCEL_TEMPLATE, context)
    try:
        new_status = run_cancel(run_id=run_id, actor=Actor.of(request.user))
    except RunNotFound:
        raise Http404("No run with this id") from None
    except RunAlreadyFinished as exc:
        level, text = messages.ERROR, str(exc)
    else:
        level = messages.SUCCESS
        text = (
            "Run cancelled before it started."
            if new_status == RunStatus.CANCELLED
            else "Cancellation requested: the trainer is being stopped, then the run is "
            "recorded cancelled with its output so far."
        )
    if request.htmx:
        notice = {"level": "success" if level == messages.SUCCESS else "error", "text": text}
        response = render(request, f"{DETAIL_TEMPLATE}#cancel-notice", {"notice": notice})
        trigger_client_event(response, RUNS_CHANGED_EVENT)
        return response
    messages.add_message(request, level, text)
    return redirect(
        _safe_next(request, request.POST.get("next")) or reverse("runs:detail", args=[run_id])
    )


# --- Log downloads -----------------------------------------------------------------------


def _encoded(pieces: Iterator[str]) -> Iterator[bytes]:
    for piece in pieces:
        yield piece.encode("utf-8")


@require_GET
def run_log(
    request: HttpRequest, run_id: uuid.UUID, stream: str
) -> StreamingHttpResponse | FileResponse:
    """The complete stdout or stderr of a run, as a plain-text download.

    Served from the chunks stored in the database, so it works wherever the run
    executed; a run without stored chunks (from before they were stored) is
    served from its log file in the run directory, if this machine has it.
    """
    if stream not in LOG_STREAMS:
        raise Http404("Unknown log stream")
    run = _run_or_404(run_id)
    filename = f"run-{run.run_id}-{stream}.log"
    pieces = run_log_text(run_id=run.run_id, stream=stream)
    first = next(pieces, None)
    if first is not None or run_log_chunks(run_id=run.run_id, since_seq=0, limit=1):
        body = itertools.chain([] if first is None else [first], pieces)
        response = StreamingHttpResponse(_encoded(body), content_type="text/plain; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
    path = run_log_path(run_id=run.run_id, stream=stream)
    if path is None:
        raise Http404("This run has no such log")
    return FileResponse(
        path.open("rb"),
        as_attachment=True,
        filename=filename,
        content_type="text/plain; charset=utf-8",
    )


# --- Workers -----------------------------------------------------------------------------


@never_cache
@require_GET
def workers(request: HtmxHttpRequest) -> HttpResponse:
    """The live workers (host, queues, current run, heartbeat) and the queue depths."""
    now = timezone.now()
    live = workers_live(now=now)
    context = {
        "workers": [
            {
                "worker": worker,
                "heartbeat_age": max((now - worker.heartbeat_at).total_seconds(), 0.0),
            }
            for worker in live
        ],
        "depths": sorted(queue_depths().items()),
    }
    template = f"{WORKERS_TEMPLATE}#workers-live" if request.htmx else WORKERS_TEMPLATE
    return render(request, template, context)
