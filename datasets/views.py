"""Dataset pages: the list, the build form and one dataset's page."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods
from django_htmx.middleware import HtmxDetails

from accounts.decorators import action_permission
from accounts.roles import BUILD_DATASETS
from datasets import selectors, services
from datasets.exports import FORMATS
from datasets.forms import FILTER_HELP, DatasetBuildForm, PageForm
from datasets.keys import InvalidDatasetKey, dataset_key_validate
from datasets.models import Dataset
from tunix_registry.actors import user_or_none

PAGE_SIZE = 20


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _page(rows: list[Any], offset: int) -> dict[str, Any]:
    items = rows[:PAGE_SIZE]
    return {
        "items": items,
        "offset": offset,
        "previous_offset": max(offset - PAGE_SIZE, 0) if offset else None,
        "next_offset": offset + PAGE_SIZE if len(rows) > PAGE_SIZE else None,
    }


def dataset_list(request: HtmxHttpRequest) -> HttpResponse:
    offset = PageForm(request.GET).offset_or_zero()
    rows = selectors.dataset_list(limit=PAGE_SIZE + 1, offset=offset)
    context = {"page": _page(rows, offset)}
    template = "datasets/list.html#table" if request.htmx else "datasets/list.html"
    return render(request, template, context)


@require_http_methods(["GET", "POST"])
@action_permission(BUILD_DATASETS)
def dataset_build(request: HtmxHttpRequest) -> HttpResponse:
    result: Dataset | None = None
    if request.method == "POST":
        form = DatasetBuildForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                result = services.dataset_build(
                    name=data["dataset_name"],
                    version=data["dataset_version"],
                    filters=data["filters"],
                    limit=data["limit"],
                    selection_strategy=data["selection_strategy"],
                    seed=data["seed"],
                    created_by=user_or_none(request.user),
                )
            except InvalidDatasetKey as exc:
                form.add_error(exc.field if exc.field in form.fields else None, str(exc))
            except services.DatasetAlreadyExists as exc:
                form.add_error("dataset_version", str(exc))
            except ValueError as exc:
                form.add_error(None, str(exc))
        if result is not None:
            if not request.htmx:
                messages.success(request, f"Built {result.key} with {result.trace_count} traces.")
                return redirect("datasets:detail", key=result.key)
            form = DatasetBuildForm()
    else:
        form = DatasetBuildForm()
    context = {"form": form, "result": result, "filter_help": FILTER_HELP}
    template = "datasets/build.html#form" if request.htmx else "datasets/build.html"
    status = 422 if request.method == "POST" and result is None and not request.htmx else 200
    return render(request, template, context, status=status)


def dataset_detail(request: HtmxHttpRequest, key: str) -> HttpResponse:
    try:
        dataset_key_validate(key)
    except InvalidDatasetKey:
        raise Http404("No such dataset") from None
    dataset = selectors.dataset_get(key=key)
    if dataset is None:
        raise Http404("No such dataset")
    offset = PageForm(request.GET).offset_or_zero()
    rows = selectors.dataset_traces(dataset=dataset, limit=PAGE_SIZE + 1, offset=offset)
    export_url = reverse("api:dataset_export", kwargs={"dataset_key": dataset.key})
    context = {
        "dataset": dataset,
        "filters_json": json.dumps(dataset.filters, indent=2, ensure_ascii=False),
        "page": _page(rows, offset),
        "downloads": [(fmt, f"{export_url}?format={fmt}") for fmt in FORMATS],
        "manifest_url": reverse("api:dataset_manifest", kwargs={"dataset_key": dataset.key}),
        "existing_count": selectors.dataset_trace_count(key=dataset.key),
    }
    template = "datasets/detail.html#traces" if request.htmx else "datasets/detail.html"
    return render(request, template, context)
