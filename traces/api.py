"""JSON API of the traces app (mounted at /api/traces by tunix_registry.api).

Request bodies are read here (bounded, see `_read_body`) and validated by
`traces.schemas`, the same schema the upload page and `import_traces` use.
Responses are the declared schemas below, rendered by the API's one renderer.
A trace never changes once stored (docs/decisions.md#immutable-resources):
its detail carries an identity ETag and is answered 304 without being read;
the list is revalidated with the ETag of its body.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import Router, Status
from ninja.errors import HttpError, ValidationError
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from accounts.access import Access, acting_user
from accounts.roles import ADD_TRACES, VIEW_TRACES
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
from tunix_registry.fields import PageLimit, PageOffset
from tunix_registry.http_cache import mark_immutable, mark_revalidate, not_modified, strong_etag
from tunix_registry.pagination import PaginationOut, check_page, page_of
from tunix_registry.schemas import ApiModel, ErrorOut
from tunix_registry.timestamps import ZuluMoment

router = Router(tags=["traces"], auth=Access(VIEW_TRACES))


class TraceCreateOut(ApiModel):
    id: uuid.UUID
    created_at: ZuluMoment
    trace_version: str


class TraceBatchOut(ApiModel):
    created_count: int
    traces: list[TraceCreateOut]


class TraceDetailOut(TraceCreateOut):
    payload: dict[str, Any]
    # Additive: the creator's username (null: anonymous, or created before the field),
    # a Trace's `created_by_name` or a dict's "created_by".
    created_by: str | None = Field(
        None, validation_alias=AliasChoices("created_by_name", "created_by")
    )


class TraceListOut(ApiModel):
    data: list[TraceCreateOut]
    pagination: PaginationOut


class TraceWithScoreOut(TraceDetailOut):
    score: float


class CompareOut(ApiModel):
    base: TraceWithScoreOut
    other: TraceWithScoreOut


class ScoreDetailsOut(ApiModel):
    step_count: int
    avg_step_length: float
    total_chars: int
    step_score: float
    length_score: float
    criteria: str
    scored_at: ZuluMoment


class ScoreOut(ApiModel):
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
    auth=Access(ADD_TRACES),
    openapi_extra=_TRACE_BODY,
)
def trace_create(request: HttpRequest) -> Status[services.TraceCreated]:
    body = _required_body(request, limit=settings.TRACE_MAX_BYTES)
    try:
        payload = trace_payload_validate_json(body)
    except TraceInvalid as exc:
        raise ValidationError(exc.with_loc_prefix("body")) from None
    return Status(201, services.trace_create(payload=payload, created_by=acting_user(request)))


@router.post(
    "/batch",
    response={201: TraceBatchOut, 400: ErrorOut, 413: ErrorOut},
    summary="Create up to 1000 traces, all or nothing",
    auth=Access(ADD_TRACES),
    openapi_extra=_BATCH_BODY,
)
def trace_create_batch(request: HttpRequest) -> Status[dict[str, Any]]:
    body = _required_body(request, limit=settings.TRACE_BATCH_MAX_BYTES)
    try:
        payloads = trace_batch_validate_json(body)
    except TraceInvalid as exc:
        raise ValidationError(exc.with_loc_prefix("body")) from None
    if not payloads:
        raise HttpError(400, "Batch must contain at least one trace")
    if len(payloads) > MAX_BATCH:
        raise HttpError(400, f"Batch size ({len(payloads)}) exceeds maximum ({MAX_BATCH})")
    rows = services.trace_create_batch(payloads=payloads, created_by=acting_user(request))
    return Status(201, {"created_count": len(rows), "traces": rows})


@router.get("", response={200: TraceListOut}, summary="List traces, newest first")
def trace_list(
    request: HttpRequest, response: HttpResponse, limit: PageLimit = 20, offset: PageOffset = 0
) -> dict[str, Any]:
    check_page(limit, offset)
    items, pagination = page_of(
        selectors.trace_summary_page(limit=limit, offset=offset), limit, offset
    )
    mark_revalidate(response)
    return {"data": items, "pagination": pagination}


def _with_score(trace: Trace) -> dict[str, Any]:
    score, _ = services.baseline_score(payload=trace.payload, scored_at=trace.created_at)
    return {
        "id": trace.id,
        "created_at": trace.created_at,
        "trace_version": trace.trace_version,
        "score": score,
        "payload": trace.payload,
        "created_by": trace.created_by_name,
    }


# Declared before "/{trace_id}" so that "compare" is not taken for an id.
@router.get(
    "/compare",
    response={200: CompareOut, 404: ErrorOut},
    summary="Two traces side by side with their baseline scores (not stored)",
)
def trace_compare(request: HttpRequest, base: uuid.UUID, other: uuid.UUID) -> dict[str, Any]:
    base_trace = selectors.trace_get(trace_id=base)
    if base_trace is None:
        raise _not_found(base, "Base trace")
    other_trace = base_trace if other == base else selectors.trace_get(trace_id=other)
    if other_trace is None:
        raise _not_found(other, "Other trace")
    return {"base": _with_score(base_trace), "other": _with_score(other_trace)}


@router.get(
    "/{trace_id}",
    response={200: TraceDetailOut, 304: None, 404: ErrorOut},
    summary="One trace (immutable: conditional requests are answered 304)",
)
def trace_detail(
    request: HttpRequest, response: HttpResponse, trace_id: uuid.UUID
) -> Trace | HttpResponse:
    etag = strong_etag("trace", trace_id)
    unchanged = not_modified(
        request, etag, exists=lambda: selectors.trace_exists(trace_id=trace_id)
    )
    if unchanged is not None:
        return unchanged
    trace = selectors.trace_get(trace_id=trace_id)
    if trace is None:
        raise _not_found(trace_id)
    mark_immutable(response, etag)
    return trace


@router.post(
    "/{trace_id}/score",
    response={201: ScoreOut, 404: ErrorOut},
    summary="Score a trace with the baseline scorer and record the score",
    auth=Access(ADD_TRACES),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ScoreRequest.model_json_schema()}},
        }
    },
)
def trace_score(request: HttpRequest, trace_id: uuid.UUID) -> Status[dict[str, Any]]:
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
    return Status(201, {"trace_id": trace_id, "score": score.score, "details": score.details})
