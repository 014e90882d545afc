"""The leaderboard page (`/leaderboard/`): runs ranked by a metric of their evaluations.

An adapter like the run pages: a form reads the query string (the API's parameter names),
the selector of `GET /api/tunix/leaderboard` (evaluations.leaderboard) ranks the runs, the
template draws them; an htmx request from the filter form gets the table alone. Reading it
needs the permission that reads runs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.roles import VIEW_RUNS
from evaluations.leaderboard import DEFAULT_METRIC, leaderboard, leaderboard_choices
from evaluations.metrics import METRICS
from tunix_registry.pagination import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET

LEADERBOARD_TEMPLATE = "evaluations/leaderboard.html"
HELD_OUT_CHOICES = [("", "held-out or whole"), ("true", "held-out part"), ("false", "whole")]


class LeaderboardFilterForm(forms.Form):
    """The leaderboard's query string."""

    metric = forms.ChoiceField(required=False, choices=[(name, name) for name in sorted(METRICS)])
    dataset_key = forms.CharField(
        required=False,
        max_length=256,
        label="Evaluation dataset",
        widget=forms.TextInput(
            attrs={"placeholder": "any", "autocomplete": "off", "list": "leaderboard-datasets"}
        ),
    )
    model_id = forms.CharField(
        required=False,
        max_length=256,
        label="Base model",
        widget=forms.TextInput(attrs={"placeholder": "any", "autocomplete": "off"}),
    )
    held_out = forms.ChoiceField(required=False, choices=HELD_OUT_CHOICES, label="Items")
    limit = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_LIMIT, widget=forms.HiddenInput
    )
    offset = forms.IntegerField(
        required=False, min_value=0, max_value=MAX_OFFSET, widget=forms.HiddenInput
    )

    FILTERS = ("metric", "dataset_key", "model_id", "held_out")

    def filters(self) -> dict[str, str]:
        """The non-empty filters as given (valid form only), for the pager's links."""
        return {name: self.cleaned_data[name] for name in self.FILTERS if self.cleaned_data[name]}


def _page_query(filters: dict[str, str], limit: int, offset: int) -> str:
    params: dict[str, Any] = dict(filters)
    if limit != DEFAULT_LIMIT:
        params["limit"] = limit
    if offset:
        params["offset"] = offset
    return urlencode(params)


@require_GET
@permission_required(VIEW_RUNS, raise_exception=True)
def leaderboard_page(request: HttpRequest) -> HttpResponse:
    """The leaderboard with its filter form; the table alone for htmx."""
    form = LeaderboardFilterForm(request.GET)
    context: dict[str, Any] = {"form": form, "choices": leaderboard_choices()}
    status = 200
    if not form.is_valid():
        context["errors"] = [
            f"{form[name].label}: {' '.join(str(message) for message in messages)}"
            for name, messages in form.errors.items()
        ]
        status = 400
    else:
        data = form.cleaned_data
        limit = data["limit"] or DEFAULT_LIMIT
        offset = data["offset"] or 0
        held_out = {"true": True, "false": False}.get(data["held_out"])
        page = leaderboard(
            metric=data["metric"] or DEFAULT_METRIC,
            dataset_key=data["dataset_key"] or None,
            model_id=data["model_id"] or None,
            held_out=held_out,
            limit=limit,
            offset=offset,
        )
        filters = form.filters()
        next_offset = page.pagination["next_offset"]
        context.update(
            {
                "page": page,
                "filtered": any(name != "metric" for name in filters),
                "previous_query": _page_query(filters, limit, max(offset - limit, 0))
                if offset
                else None,
                "next_query": _page_query(filters, limit, next_offset)
                if next_offset is not None
                else None,
            }
        )
    template = f"{LEADERBOARD_TEMPLATE}#table" if getattr(request, "htmx", False) else None
    return render(request, template or LEADERBOARD_TEMPLATE, context, status=status)
