"""The comparison page: 2 to 8 runs side by side (`/runs/compare/?runs=<id>,<id>`).

An adapter like the other run pages: a form reads the query string, the
selector of `GET /api/tunix/runs/compare` (runs.compare.run_compare) reads the
runs, the template draws them. Without `runs` the page offers a box to paste
ids into; a malformed list is a 400 and unknown runs a 404, each saying why.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from runs.compare import (
    MAX_RUNS,
    MIN_RUNS,
    InvalidComparison,
    RunsNotFound,
    run_compare,
    run_ids_check,
    run_ids_parse,
)
from runs.templatetags.run_pages import MAX_POINTS

COMPARE_TEMPLATE = "runs/compare.html"
# The points of each run the page reads: what its chart draws (runs.templatetags.run_pages).
CHART_POINTS = MAX_POINTS
LOG_SCALE = "log"


class CompareForm(forms.Form):
    runs = forms.CharField(
        max_length=2000,
        label="Run ids",
        help_text=f"{MIN_RUNS} to {MAX_RUNS} run ids, separated by commas.",
    )

    def clean_runs(self) -> list[uuid.UUID]:
        try:
            run_ids = run_ids_parse(self.cleaned_data["runs"])
            run_ids_check(run_ids)
        except InvalidComparison as exc:
            raise forms.ValidationError(str(exc)) from None
        return run_ids


def _compare_url(run_ids: list[uuid.UUID], *, log: bool) -> str:
    params = {"runs": ",".join(str(run_id) for run_id in run_ids)}
    if log:
        params["scale"] = LOG_SCALE
    return f"{reverse('runs:compare')}?{urlencode(params)}"


@require_GET
def run_compare_page(request: HttpRequest) -> HttpResponse:
    """The runs side by side: their table, the configuration diff, the overlaid loss curves,
    metrics and training figures."""
    ticked = request.GET.getlist("run")
    if ticked and not request.GET.get("runs"):
        # The rows ticked in the run history (`run=<id>` each): the canonical URL.
        params = {"runs": ",".join(piece.strip() for piece in ticked)}
        if request.GET.get("scale") == LOG_SCALE:
            params["scale"] = LOG_SCALE
        return redirect(f"{reverse('runs:compare')}?{urlencode(params)}")
    if not request.GET.get("runs", "").strip():
        # No runs asked for yet: the page with its box (and no error).
        return render(request, COMPARE_TEMPLATE, {"form": CompareForm()})
    form = CompareForm(request.GET)
    context: dict[str, Any] = {"form": form, "error": None}
    if not form.is_valid():
        context["error"] = "; ".join(str(message) for message in form.errors["runs"])
        return render(request, COMPARE_TEMPLATE, context, status=400)
    run_ids = form.cleaned_data["runs"]
    # `scale=log` draws the loss axis logarithmic; any other value, linear.
    log = request.GET.get("scale") == LOG_SCALE
    try:
        comparison = run_compare(run_ids=run_ids, max_points=CHART_POINTS)
    except RunsNotFound as exc:
        context["error"] = str(exc)
        return render(request, COMPARE_TEMPLATE, context, status=404)
    context.update(
        {
            "comparison": comparison,
            "log": log,
            "scale_url": _compare_url(run_ids, log=not log),
            "differing": len(comparison.differing),
        }
    )
    return render(request, COMPARE_TEMPLATE, context)
