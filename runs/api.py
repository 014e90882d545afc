"""JSON API of the runs app, mounted at /api/tunix.

Run reads return TunixRun objects that ninja serialises through the declared
response schemas (runs.schemas), with the API's one renderer. A finished run is
immutable: its detail has an identity ETag and is answered 304 after only a
primary-key check; live runs and the list revalidate against a body ETag
(tunix_registry.http_cache, docs/decisions.md#immutable-resources).

`POST /run?mode=async` queues the run for a worker
(docs/decisions.md#queued-execution); `/runs/{id}/status`, `/cancel`, `/logs` and
`/artifacts` follow it wherever it executes (docs/decisions.md#cancellation,
docs/decisions.md#live-logs, docs/decisions.md#artifacts).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Field, Query, Router, Status
from ninja.errors import HttpError, ValidationError

from accounts.access import Access, acting_user
from accounts.roles import CANCEL_RUNS, LAUNCH_RUNS, VIEW_DATASETS, VIEW_RUNS
from datasets.keys import InvalidDatasetKey, dataset_key_validate
from datasets.selectors import dataset_export_lines, dataset_get, traces_export_lines
from runs import artifacts, compare, execution, manifest, runtime, selectors, services
from runs.models import TERMINAL_STATUSES, RunStatus, TunixRun
from runs.outputs import output_dir_absolute
from runs.processes import host_name
from runs.schemas import (
    ArtifactListResponse,
    RunCancelResponse,
    RunCompareResponse,
    RunLogChunkOut,
    RunLogsResponse,
    RunMetricsResponse,
    RunStatusResponse,
    TunixExportRequest,
    TunixManifestRequest,
    TunixManifestResponse,
    TunixRunListResponse,
    TunixRunRequest,
    TunixRunResponse,
    TunixStatusResponse,
)
from tunix_registry.actors import Actor
from tunix_registry.fields import PageLimit, PageOffset, Text
from tunix_registry.http_cache import (
    mark_immutable,
    mark_revalidate,
    not_modified,
    permanent_etag,
)
from tunix_registry.pagination import check_page
from tunix_registry.schemas import ApiModel, ErrorOut

logger = logging.getLogger(__name__)

router = Router(tags=["runs"], auth=Access(VIEW_RUNS))

NDJSON = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"
# The largest seq a run's log can reach (a 32-bit column).
MAX_SEQ = 2**31 - 1
# How often an open log stream looks for new chunks and the run's status.
LOG_POLL_SECONDS = 1.0


class RunListQuery(ApiModel):
    limit: PageLimit = 20
    offset: PageOffset = 0
    # Filters: an unknown value matches nothing; longer values could not match.
    status: Text | None = Field(None, max_length=64)
    dataset_key: Text | None = Field(None, max_length=256)
    mode: Text | None = Field(None, max_length=64)
    # Additive: runs launched by this username (an unknown one matches nothing).
    launched_by: Text | None = Field(None, max_length=150)
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
    # A read sent as POST (its body names what to export): writes nothing.
    auth=Access(VIEW_DATASETS),
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
    auth=Access(VIEW_DATASETS),
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


class RunLaunchQuery(ApiModel):
    # "async" queues the run for a worker; absent or any other value executes it
    # in the request, as the original did.
    mode: Text | None = Field(None, max_length=64)


def _invalid_request(exc: services.InvalidRunRequest) -> ValidationError:
    """A launch refused by the services, shaped as request validation naming the field."""
    return ValidationError([{"type": "value_error", "loc": ["body", exc.field], "msg": str(exc)}])


@router.post(
    "/run",
    response={200: TunixRunResponse, 422: ErrorOut, 501: ErrorOut, 503: ErrorOut},
    summary="Launch a run: wait for its outcome, or with mode=async queue it for a worker",
    auth=Access(LAUNCH_RUNS),
)
def tunix_run(
    request: HttpRequest, body: TunixRunRequest, query: Query[RunLaunchQuery]
) -> TunixRun:
    try:
        actor = Actor.of(acting_user(request))
        if query.mode == "async":
            return services.run_enqueue(request=body, actor=actor, queue=body.queue)
        return execution.run_execute(started=services.run_start(request=body, actor=actor))
    except services.TunixRuntimeUnavailable as exc:
        raise HttpError(501, str(exc)) from None
    except services.InvalidRunRequest as exc:
        raise _invalid_request(exc) from None
    except services.QueueUnavailable as exc:
        raise HttpError(503, str(exc)) from None


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
            launched_by=query.launched_by,
            limit=query.limit,
            offset=query.offset,
            cursor=query.cursor,
        )
    except selectors.InvalidCursor as exc:
        raise HttpError(422, str(exc)) from None
    mark_revalidate(response)
    return {"data": page.items, "pagination": page.pagination}


_UUID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


class RunCompareQuery(ApiModel):
    # The document shows the canonical list; the handler refuses the rest itself,
    # each problem with its own message (runs.compare), and also takes spaces.
    # Up to nine ids and their commas (332 characters), so that one too many is told
    # apart by the handler; a longer value is refused here, before its encoding could
    # outgrow the server's request line.
    runs: Text = Field(
        max_length=333,
        description=f"{compare.MIN_RUNS} to {compare.MAX_RUNS} distinct run ids, comma-separated",
        json_schema_extra={
            "pattern": f"^{_UUID_PATTERN}(,{_UUID_PATTERN}){{{compare.MIN_RUNS - 1},"
            f"{compare.MAX_RUNS - 1}}}$"
        },
    )


# Declared before "/runs/{run_id}" so that "compare" is not taken for an id.
@router.get(
    "/runs/compare",
    response={200: RunCompareResponse, 404: ErrorOut, 422: ErrorOut},
    summary="2 to 8 runs side by side: summaries, configuration diff, loss series",
)
def runs_compare(
    request: HttpRequest, response: HttpResponse, query: Query[RunCompareQuery]
) -> compare.Comparison:
    try:
        comparison = compare.run_compare(run_ids=compare.run_ids_parse(query.runs))
    except compare.InvalidComparison as exc:
        raise ValidationError(
            [{"type": "value_error", "loc": ["query", "runs"], "msg": str(exc)}]
        ) from None
    except compare.RunsNotFound as exc:
        raise HttpError(404, str(exc)) from None
    mark_revalidate(response)
    return comparison


def _run_not_found(run_id: uuid.UUID) -> HttpError:
    return HttpError(404, f"Tunix run not found: {run_id}")


def _run_or_404(run_id: uuid.UUID) -> TunixRun:
    run = selectors.run_get(run_id=run_id)
    if run is None:
        raise _run_not_found(run_id)
    return run


def final_etag(run_id: uuid.UUID) -> str:
    """The ETag of a finished run's detail: its identity, signed.

    A finished run never changes and is never deleted
    (docs/decisions.md#immutable-resources), and only this server can issue the
    signed tag, so a match is proof enough: the 304 reads nothing.
    """
    return permanent_etag("run", run_id, "final")


@router.get(
    "/runs/{run_id}",
    response={200: TunixRunResponse, 304: None, 404: ErrorOut, 422: ErrorOut},
    summary="One run, as stored",
)
def run_detail(request: HttpRequest, response: HttpResponse, run_id: uuid.UUID) -> Any:
    etag = final_etag(run_id)
    cached = not_modified(request, etag, exists=None)
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


@router.get(
    "/runs/{run_id}/status",
    response={200: RunStatusResponse, 404: ErrorOut, 422: ErrorOut},
    summary="A run's status and times, without its output",
)
def run_status(request: HttpRequest, response: HttpResponse, run_id: uuid.UUID) -> dict[str, Any]:
    run = _run_or_404(run_id)
    mark_revalidate(response)
    return {
        "run_id": run.run_id,
        "status": run.status,
        "queued_at": run.created_at,
        "started_at": None if run.status == RunStatus.PENDING else run.started_at,
        "completed_at": run.completed_at,
        "exit_code": run.exit_code,
    }


@router.post(
    "/runs/{run_id}/cancel",
    response={200: RunCancelResponse, 400: ErrorOut, 404: ErrorOut, 422: ErrorOut},
    summary="Cancel a pending run at once, or ask an executing one to stop",
    auth=Access(CANCEL_RUNS),
)
def run_cancel(request: HttpRequest, run_id: uuid.UUID) -> dict[str, Any]:
    try:
        status = services.run_cancel(run_id=run_id, actor=Actor.of(acting_user(request)))
    except services.RunNotFound:
        raise _run_not_found(run_id) from None
    except services.RunAlreadyFinished as exc:
        raise HttpError(400, str(exc)) from None
    return {"message": "Run cancellation requested", "status": status}


# --- Live logs --------------------------------------------------------------------------


class RunLogsQuery(ApiModel):
    since_seq: int | None = Field(None, ge=0, le=MAX_SEQ)


_EVENT_SCHEMAS = {
    "log": {"$ref": "#/components/schemas/RunLogChunkOut"},
    "heartbeat": {
        "type": "object",
        "required": ["seq"],
        "properties": {"seq": {"type": "integer", "minimum": 0}},
    },
    "status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    },
}
_LOGS_OPENAPI = {
    "parameters": [
        {
            "in": "header",
            "name": "Last-Event-ID",
            "required": False,
            "description": "The id of the last event received; resumes after it when "
            "since_seq is absent (values other than a seq are ignored)",
            "schema": {"type": "string"},
        }
    ],
    "responses": {
        200: {
            "description": "Server-Sent Events (the default), or JSON for "
            "`Accept: application/json`",
            "content": {
                EVENT_STREAM: {
                    # One event, as a client reads it: `event`, `data` (JSON), `id`.
                    "schema": {
                        "oneOf": [
                            {
                                "type": "object",
                                "required": ["event", "data"],
                                "properties": {
                                    "event": {"const": name},
                                    "id": {"type": "string"},
                                    "retry": {"type": "integer"},
                                    "data": {
                                        "type": "string",
                                        "contentMediaType": "application/json",
                                        "contentSchema": schema,
                                    },
                                },
                            }
                            for name, schema in _EVENT_SCHEMAS.items()
                        ]
                    }
                }
            },
        }
    },
}


def _resume_seq(request: HttpRequest, since_seq: int | None) -> int:
    """Where a log read starts: since_seq, else a reconnecting client's Last-Event-ID, else 0."""
    if since_seq is not None:
        return since_seq
    last = request.headers.get("Last-Event-ID", "").strip()
    if re.fullmatch(r"[0-9]{1,10}", last) and int(last) <= MAX_SEQ:
        return int(last)
    return 0


def _chunk_out(chunk: Any) -> dict[str, Any]:
    return RunLogChunkOut.model_validate(chunk).model_dump(mode="json")


def _sse(event: str, data: dict[str, Any], *, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    # json.dumps escapes every line break, so the data is one line.
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def log_events(*, run_id: uuid.UUID, since_seq: int) -> Iterator[str]:
    """The Server-Sent Events of a run's log after `since_seq`, for a bounded time.

    Every LOG_POLL_SECONDS: the run's status and its chunks after the last seq sent
    (two indexed queries), each chunk an `event: log` with `id: <seq>`, then an
    `event: heartbeat`. Once the run is terminal and every chunk is sent, one
    `event: status` and the end. After TUNIX_LOG_STREAM_SECONDS the stream ends
    anyway and the client reconnects with Last-Event-ID (the `retry:` hint).
    """
    deadline = time.monotonic() + settings.TUNIX_LOG_STREAM_SECONDS
    cursor = since_seq
    yield f"retry: {int(LOG_POLL_SECONDS * 1000)}\n\n"
    try:
        while True:
            # The status first: chunks read after it include all a terminal run has.
            status = selectors.run_status(run_id=run_id)
            caught_up = False
            while True:
                chunks = selectors.run_log_chunks(run_id=run_id, since_seq=cursor)
                for chunk in chunks:
                    yield _sse("log", _chunk_out(chunk), event_id=chunk.seq)
                    cursor = chunk.seq
                caught_up = len(chunks) < selectors.LOG_CHUNK_PAGE
                if caught_up or time.monotonic() >= deadline:
                    break
            if status is None:
                return
            if status in TERMINAL_STATUSES and caught_up:
                yield _sse("status", {"status": status})
                return
            yield _sse("heartbeat", {"seq": cursor})
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(LOG_POLL_SECONDS, remaining))
    except DatabaseError:
        # The client reconnects from its last id once the database is back.
        logger.warning("log stream of run %s ended: database unavailable", run_id)


@router.get(
    "/runs/{run_id}/logs",
    response={200: RunLogsResponse, 404: ErrorOut, 422: ErrorOut},
    summary="A run's output: Server-Sent Events while it executes, or JSON for polling",
    openapi_extra=_LOGS_OPENAPI,
)
def run_logs(
    request: HttpRequest, response: HttpResponse, run_id: uuid.UUID, query: Query[RunLogsQuery]
) -> Any:
    status = selectors.run_status(run_id=run_id)
    if status is None:
        raise _run_not_found(run_id)
    since_seq = _resume_seq(request, query.since_seq)
    if request.get_preferred_type([EVENT_STREAM, "application/json"]) == "application/json":
        chunks = selectors.run_log_chunks(run_id=run_id, since_seq=since_seq)
        mark_revalidate(response)
        return {
            "run_id": run_id,
            "status": status,
            "chunks": chunks,
            "next_seq": chunks[-1].seq if chunks else since_seq,
        }
    stream = StreamingHttpResponse(
        log_events(run_id=run_id, since_seq=since_seq), content_type=EVENT_STREAM
    )
    stream["Cache-Control"] = "no-cache"
    # Proxies such as nginx must pass events on as they come.
    stream["X-Accel-Buffering"] = "no"
    return stream


# --- Artifacts --------------------------------------------------------------------------

OCTET_STREAM = "application/octet-stream"
RUN_NOT_FOUND = "Run not found"
ARTIFACT_NOT_FOUND = "Artifact not found"


def _artifact_holder(run: TunixRun) -> str:
    """The host whose disk holds the run's output directory ("" when none executed it)."""
    return run.host or run.supervisor_host


def _artifact_run(run_id: uuid.UUID) -> TunixRun:
    run = selectors.run_get(run_id=run_id)
    if run is None:
        raise HttpError(404, RUN_NOT_FOUND)
    return run


@router.get(
    "/runs/{run_id}/artifacts",
    response={200: ArtifactListResponse, 404: ErrorOut, 422: ErrorOut},
    summary="The files of a run's output directory, as recorded when it ended",
)
def run_artifacts(request: HttpRequest, run_id: uuid.UUID) -> dict[str, Any]:
    run = _artifact_run(run_id)
    if run.artifacts is not None:
        listed = run.artifacts
    else:
        # A run still executing, or one older than recorded lists: what this machine
        # sees, sizes only (hashing checkpoints on every request costs too much).
        listed = artifacts.artifacts_scan(output_dir_absolute(run.output_dir), with_hashes=False)
    return {
        "artifacts": [
            {
                "name": item["name"],
                "size": item["size"],
                "path": item["name"],
                "sha256": item.get("sha256"),
            }
            for item in listed
        ],
        "host": _artifact_holder(run) or None,
    }


_DOWNLOAD_OPENAPI = {
    "responses": {
        200: {
            "description": "The file, streamed",
            "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        }
    }
}


@router.get(
    "/runs/{run_id}/artifacts/{path:filename}/download",
    response={200: None, 403: ErrorOut, 404: ErrorOut, 422: ErrorOut},
    summary="Download one file of a run's output directory",
    openapi_extra=_DOWNLOAD_OPENAPI,
)
def run_artifact_download(request: HttpRequest, run_id: uuid.UUID, filename: str) -> FileResponse:
    try:
        artifacts.artifact_name_check(filename)
    except artifacts.InvalidArtifactName:
        raise HttpError(403, "Invalid artifact path") from None
    run = _artifact_run(run_id)
    if run.artifacts is not None and filename not in {a["name"] for a in run.artifacts}:
        raise HttpError(404, ARTIFACT_NOT_FOUND)
    path = artifacts.artifact_file(run=run, name=filename)
    if path is None:
        holder = _artifact_holder(run)
        if holder and holder != host_name():
            raise HttpError(404, f"Artifact not on this server: held by host {holder}")
        raise HttpError(404, ARTIFACT_NOT_FOUND)
    return FileResponse(
        path.open("rb"),
        as_attachment=True,
        filename=path.name,
        content_type=OCTET_STREAM,
    )
