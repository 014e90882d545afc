"""JSON API of the traces app (mounted at /api/traces by tunix_registry.api).

Paths, fields, status codes and messages follow REFERENCE §4. Request bodies
are read here (bounded, see `_read_body`) and validated by `traces.schemas`,
the same schema the upload page and `import_traces` use. The hot handlers
return ready JSON (`tunix_registry.rendering`, the API's one encoder) instead
of re-validating their output through a response model; the declared response
schemas document the same shapes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import Router, Schema
from ninja.errors import HttpError, ValidationError
from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from traces import selectors, services
from traces.models import Trace
from traces.schemas import (
    MAX_BATCH,
    TraceInvalid,
    errors_from_pydantic,
    reasoning_trace_json_schema,
    trace_batch_validate_json,
    trace_payload_validate_json,
)
from traces.services import iso_z
from tunix_registry.fields import PageLimit, PageOffset
from tunix_registry.pagination import PaginationOut, check_page, page_of
from tunix_registry.rendering import json_bytes, json_response, json_text, raw_json_response

router = Router(tags=["traces"])


class ErrorOut(Schema):
    detail: str


class TraceCreateOut(Schema):
    id: uuid.UUID
    created_at: datetime
    trace_version: str


class TraceBatchOut(Schema):
    created_count: int
    traces: list[TraceCreateOut]


class TraceDetailOut(TraceCreateOut):
    payload: dict[str, Any]


class TraceListOut(Schema):
    data: list[TraceCreateOut]
    pagination: PaginationOut


class TraceWithScoreOut(TraceDetailOut):
    score: float


class CompareOut(Schema):
    base: TraceWithScoreOut
    other: TraceWithScoreOut


class ScoreDetailsOut(Schema):
    step_count: int
    avg_step_length: float
    total_chars: int
    step_score: float
    length_score: float
    criteria: str
    scored_at: datetime


class ScoreOut(Schema):
    trace_id: uuid.UUID
    score: float
    details: ScoreDetailsOut


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    criteria: Literal["baseline"] = "baseline"


def _read_body(request: HttpRequest, *, limit: int) -> bytes:
    """The request body, refused with 413 when its length exceeds `limit` bytes.

    The header is checked before anything is read. A chunked body arrives here
    already read and with its length set (tunix_registry.middleware.ApiMiddleware,
    bounded by the API-wide limit), so this one check covers both.
    """
    length = int(request.META.get("CONTENT_LENGTH") or 0)
    if length > limit:
        raise HttpError(413, f"Payload size exceeds maximum of {limit} bytes")
    return request.body


_MISSING_BODY = [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]


def _required_body(request: HttpRequest, *, limit: int) -> bytes:
    """`_read_body`, with an absent or blank body refused as ninja would ("Field required")."""
    body = _read_body(request, limit=limit)
    if not body.strip():
        raise ValidationError(_MISSING_BODY)
    return body


def _summary(trace_id: uuid.UUID, created_at: datetime, version: str) -> dict[str, str]:
    return {"id": str(trace_id), "created_at": iso_z(created_at), "trace_version": version}


def _not_found(trace_id: uuid.UUID, what: str = "Trace") -> HttpError:
    return HttpError(404, f"{what} {trace_id} not found")


_TRACE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": reasoning_trace_json_schema()}},
    }
}
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                # An empty or longer batch is a 400 with its own message.
                "schema": {
                    "type": "array",
                    "items": reasoning_trace_json_schema(),
                    "minItems": 1,
                    "maxItems": MAX_BATCH,
                }
            }
        },
    }
}


@router.post(
    "",
    response={201: TraceCreateOut, 400: ErrorOut, 413: ErrorOut},
    summary="Create a trace",
    openapi_extra=_TRACE_BODY,
)
def trace_create(request: HttpRequest) -> HttpResponse:
    body = _required_body(request, limit=settings.TRACE_MAX_BYTES)
    try:
        payload = trace_payload_validate_json(body)
    except TraceInvalid as exc:
        raise ValidationError(exc.with_loc_prefix("body")) from None
    trace = services.trace_create(payload=payload)
    return json_response(_summary(trace.id, trace.created_at, trace.trace_version), 201)


@router.post(
    "/batch",
    response={201: TraceBatchOut, 400: ErrorOut, 413: ErrorOut},
    summary="Create up to 1000 traces, all or nothing",
    openapi_extra=_BATCH_BODY,
)
def trace_create_batch(request: HttpRequest) -> HttpResponse:
    body = _required_body(request, limit=settings.TRACE_BATCH_MAX_BYTES)
    try:
        payloads = trace_batch_validate_json(body)
    except TraceInvalid as exc:
        raise ValidationError(exc.with_loc_prefix("body")) from None
    if not payloads:
        raise HttpError(400, "Batch must contain at least one trace")
    if len(payloads) > MAX_BATCH:
        raise HttpError(400, f"Batch size ({len(payloads)}) exceeds maximum ({MAX_BATCH})")
    rows = services.trace_create_batch(payloads=payloads)
    return json_response(
        {
            "created_count": len(rows),
            "traces": [_summary(t.id, t.created_at, t.trace_version) for t in rows],
        },
        201,
    )


def trace_list_body(*, limit: int, offset: int) -> bytes:
    """The JSON body of a trace list page (limit and offset already checked).

    Shared with `tunix_registry.hotpath`, which answers the same request
    without the rest of Django's request cycle.
    """
    rows = selectors.trace_summary_page(limit=limit, offset=offset)
    items, pagination = page_of(rows, limit, offset)
    return json_bytes({"data": items, "pagination": pagination})


@router.get("", response={200: TraceListOut}, summary="List traces, newest first")
def trace_list(request: HttpRequest, limit: PageLimit = 20, offset: PageOffset = 0) -> HttpResponse:
    check_page(limit, offset)
    return raw_json_response(trace_list_body(limit=limit, offset=offset))


def _with_score(trace: Trace) -> dict[str, Any]:
    score, _ = services.baseline_score(payload=trace.payload, scored_at=trace.created_at)
    return {
        **_summary(trace.id, trace.created_at, trace.trace_version),
        "score": score,
        "payload": trace.payload,
    }


# Declared before "/{trace_id}" so that "compare" is not taken for an id.
@router.get(
    "/compare",
    response={200: CompareOut, 404: ErrorOut},
    summary="Two traces side by side with their baseline scores (not stored)",
)
def trace_compare(request: HttpRequest, base: uuid.UUID, other: uuid.UUID) -> HttpResponse:
    base_trace = selectors.trace_get(trace_id=base)
    if base_trace is None:
        raise _not_found(base, "Base trace")
    other_trace = base_trace if other == base else selectors.trace_get(trace_id=other)
    if other_trace is None:
        raise _not_found(other, "Other trace")
    return json_response({"base": _with_score(base_trace), "other": _with_score(other_trace)})


def trace_detail_body(*, trace_id: uuid.UUID) -> bytes | None:
    """The JSON body of one trace, or None when there is no such trace (shared with hotpath)."""
    found = selectors.trace_detail_json(trace_id=trace_id)
    if found is None:
        return None
    summary, payload = found
    # The stored JSON text is spliced in as is: no parse and re-serialise.
    head = json_text(summary)
    return (head[:-1] + ',"payload":' + payload + "}").encode()


@router.get("/{trace_id}", response={200: TraceDetailOut, 404: ErrorOut}, summary="One trace")
def trace_detail(request: HttpRequest, trace_id: uuid.UUID) -> HttpResponse:
    body = trace_detail_body(trace_id=trace_id)
    if body is None:
        raise _not_found(trace_id)
    return raw_json_response(body)


@router.post(
    "/{trace_id}/score",
    response={201: ScoreOut, 404: ErrorOut},
    summary="Score a trace with the baseline scorer and record the score",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ScoreRequest.model_json_schema()}},
        }
    },
)
def trace_score(request: HttpRequest, trace_id: uuid.UUID) -> HttpResponse:
    body = _required_body(request, limit=64 * 1024)
    try:
        criteria = ScoreRequest.model_validate_json(body).criteria
    except PydanticValidationError as exc:
        raise ValidationError(
            [{**e, "loc": ["body", *e["loc"]]} for e in errors_from_pydantic(exc)]
        ) from None
    try:
        score = services.trace_score(trace_id=trace_id, criteria=criteria)
    except Trace.DoesNotExist:
        raise _not_found(trace_id) from None
    return json_response(
        {"trace_id": str(trace_id), "score": score.score, "details": score.details}, 201
    )
