"""JSON API of the runs app, mounted at /api/tunix.

Run reads return TunixRun objects that ninja serialises through the declared
response schemas (runs.schemas), with the API's one renderer. A finished run is
immutable: its detail has an identity ETag and is answered 304 after only a
primary-key check; live runs and the list revalidate against a body ETag
(tunix_registry.http_cache, docs/decisions.md#immutable-resources).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError

from datasets.keys import InvalidDatasetKey, dataset_key_validate
from datasets.selectors import dataset_export_lines, dataset_get, traces_export_lines
from runs import execution, manifest, runtime, selectors, services
from runs.models import TunixRun
from runs.schemas import (
    RunMetricsResponse,
    TunixExportRequest,
    TunixManifestRequest,
    TunixManifestResponse,
    TunixRunListResponse,
    TunixRunRequest,
    TunixRunResponse,
    TunixStatusResponse,
)
from tunix_registry.fields import PageLimit, PageOffset, Text
from tunix_registry.http_cache import mark_immutable, mark_revalidate, not_modified, strong_etag
from tunix_registry.pagination import check_page

router = Router(tags=["runs"])

NDJSON = "application/x-ndjson"


class ErrorOut(Schema):
    detail: Any


class RunListQuery(Schema):
    limit: PageLimit = 20
    offset: PageOffset = 0
    # Filters: an unknown value matches nothing; longer values could not match.
    status: Text | None = Field(None, max_length=64)
    dataset_key: Text | None = Field(None, max_length=256)
    mode: Text | None = Field(None, max_length=64)
    cursor: Text | None = Field(None, max_length=512)


def _valid_key(key: str) -> str:
    try:
        return dataset_key_validate(key)
    except InvalidDatasetKey as exc:
        raise HttpError(422, str(exc)) from None


@router.get("/status", response=TunixStatusResponse, summary="Is the Tunix runtime installed?")
def tunix_status(request: HttpRequest) -> dict[str, Any]:
    return runtime.tunix_status()


@router.post(
    "/sft/export",
    response={200: None, 400: ErrorOut, 404: ErrorOut, 422: ErrorOut},
    summary="Export a dataset or traces in tunix_sft format (NDJSON, streamed)",
)
def sft_export(request: HttpRequest, body: TunixExportRequest) -> StreamingHttpResponse:
    if body.dataset_key:
        key = _valid_key(body.dataset_key)
        if dataset_get(key=key) is None:
            raise HttpError(404, f"Manifest not found for dataset: {key}")
        lines = dataset_export_lines(key=key, fmt="tunix_sft")
    elif body.trace_ids:
        try:
            ids = [uuid.UUID(raw.strip()) for raw in body.trace_ids]
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        lines = traces_export_lines(trace_ids=ids, fmt="tunix_sft")
    else:
        raise HttpError(400, "Either dataset_key or trace_ids must be provided")
    return StreamingHttpResponse(lines, content_type=NDJSON)


@router.post(
    "/sft/manifest",
    response={201: TunixManifestResponse, 404: ErrorOut, 422: ErrorOut},
    summary="Generate the training manifest YAML of a dataset (nothing is written)",
)
def sft_manifest(request: HttpRequest, body: TunixManifestRequest) -> Status[dict[str, Any]]:
    key = _valid_key(body.dataset_key)
    if dataset_get(key=key) is None:
        raise HttpError(404, f"Dataset not found: {key}")
    text = manifest.manifest_yaml(
        dataset_key=key,
        model_id=body.model_id,
        output_dir=body.output_dir,
        learning_rate=body.learning_rate,
        num_epochs=body.num_epochs,
        batch_size=body.batch_size,
        max_seq_length=body.max_seq_length,
    )
    return Status(
        201,
        {
            "manifest_yaml": text,
            "dataset_key": key,
            "model_id": body.model_id,
            "format": "tunix_sft",
            "message": (
                f"Manifest generated for dataset {key}. Save as YAML and execute with Tunix CLI."
            ),
        },
    )


@router.post(
    "/run",
    response={200: TunixRunResponse, 422: ErrorOut, 501: ErrorOut},
    summary="Launch a run (dry-run by default) and wait for its outcome",
)
def tunix_run(request: HttpRequest, body: TunixRunRequest) -> TunixRun:
    try:
        return execution.run_execute(started=services.run_start(request=body))
    except services.TunixRuntimeUnavailable as exc:
        raise HttpError(501, str(exc)) from None
    except services.InvalidRunRequest as exc:
        raise HttpError(422, str(exc)) from None


@router.get(
    "/runs",
    response={200: TunixRunListResponse, 422: ErrorOut},
    summary="The run registry, newest first",
)
def run_list(
    request: HttpRequest, response: HttpResponse, query: Query[RunListQuery]
) -> dict[str, Any]:
    check_page(query.limit, query.offset)
    try:
        page = selectors.run_list(
            status=query.status,
            dataset_key=query.dataset_key,
            mode=query.mode,
            limit=query.limit,
            offset=query.offset,
            cursor=query.cursor,
        )
    except selectors.InvalidCursor as exc:
        raise HttpError(422, str(exc)) from None
    mark_revalidate(response)
    return {"data": page.items, "pagination": page.pagination}


def _run_not_found(run_id: uuid.UUID) -> HttpError:
    return HttpError(404, f"Tunix run not found: {run_id}")


def _run_or_404(run_id: uuid.UUID) -> TunixRun:
    run = selectors.run_get(run_id=run_id)
    if run is None:
        raise _run_not_found(run_id)
    return run


def final_etag(run_id: uuid.UUID) -> str:
    """The ETag of a finished run's detail: its identity alone, since it never changes."""
    return strong_etag("run", run_id, "final")


@router.get(
    "/runs/{run_id}",
    response={200: TunixRunResponse, 304: None, 404: ErrorOut, 422: ErrorOut},
    summary="One run, as stored",
)
def run_detail(request: HttpRequest, response: HttpResponse, run_id: uuid.UUID) -> Any:
    etag = final_etag(run_id)
    cached = not_modified(
        request, etag, exists=lambda: selectors.run_finished_exists(run_id=run_id)
    )
    if cached is not None:
        return cached
    run = _run_or_404(run_id)
    if run.is_terminal:
        mark_immutable(response, etag)
    else:
        mark_revalidate(response)
    return run


@router.get(
    "/runs/{run_id}/metrics",
    response={200: RunMetricsResponse, 404: ErrorOut, 422: ErrorOut},
    summary="A local run's per-step training metrics",
)
def run_metrics(request: HttpRequest, run_id: uuid.UUID) -> dict[str, Any]:
    run = _run_or_404(run_id)
    return {
        "run_id": run.run_id,
        "metrics": [
            {
                "step": m.step,
                "loss": m.loss,
                "eval_loss": m.eval_loss,
                "tokens_per_second": m.tokens_per_second,
                "elapsed_seconds": m.elapsed_seconds,
            }
            for m in selectors.run_metrics(run_id=run.run_id)
        ],
    }
