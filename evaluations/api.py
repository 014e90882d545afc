"""JSON API of evaluations, mounted at /api/tunix beside the runs.

- `POST /runs/{run_id}/evaluations`: queue an evaluation of a run (or of its base model);
- `GET /runs/{run_id}/evaluations` and `GET /evaluations`: newest first, keyset pages;
- `GET /evaluations/{id}`, `GET /evaluations/{id}/items`, `POST /evaluations/{id}/cancel`;
- `GET /leaderboard`: runs ranked by a metric of their evaluations (evaluations.leaderboard).

Launching and cancelling need the permissions that launch and cancel runs; reading,
the one that reads runs (docs/decisions.md#evaluations).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Field, Query, Router
from ninja.errors import HttpError, ValidationError

from accounts.access import Access, acting_user
from accounts.roles import CANCEL_RUNS, LAUNCH_RUNS, VIEW_RUNS
from evaluations import leaderboard, selectors, services
from evaluations.metrics import METRICS
from evaluations.models import Evaluation
from evaluations.schemas import (
    EvaluationCancelResponse,
    EvaluationItemsResponse,
    EvaluationListResponse,
    EvaluationOut,
    EvaluationRequest,
    LeaderboardResponse,
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

router = Router(tags=["evaluations"], auth=Access(VIEW_RUNS))


class ListQuery(ApiModel):
    limit: PageLimit = 20
    cursor: Text | None = Field(None, max_length=512)


@router.post(
    "/runs/{run_id}/evaluations",
    response={200: EvaluationOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut, 503: ErrorOut},
    summary="Queue an evaluation of a run's trained model (or of its base model) for a worker",
    auth=Access(LAUNCH_RUNS),
)
def evaluation_launch(
    request: HttpRequest, run_id: uuid.UUID, body: EvaluationRequest
) -> Evaluation:
    try:
        return services.evaluation_enqueue(
            run_id=run_id, request=body, actor=Actor.of(acting_user(request))
        )
    except services.EvaluationRunNotFound as exc:
        raise HttpError(404, str(exc)) from None
    except services.RunNotEvaluable as exc:
        raise HttpError(409, str(exc)) from None
    except services.InvalidEvaluationRequest as exc:
        raise ValidationError(
            [{"type": "value_error", "loc": ["body", exc.field], "msg": str(exc)}]
        ) from None
    except services.EvaluationQueueUnavailable as exc:
        raise HttpError(503, str(exc)) from None


def _page(query: ListQuery, run_id: uuid.UUID | None) -> dict[str, Any]:
    check_page(query.limit, 0)
    try:
        page = selectors.evaluation_list(run_id=run_id, limit=query.limit, cursor=query.cursor)
    except selectors.InvalidCursor as exc:
        raise HttpError(422, str(exc)) from None
    return {"data": page.items, "pagination": page.pagination}


@router.get(
    "/runs/{run_id}/evaluations",
    response={200: EvaluationListResponse, 422: ErrorOut},
    summary="A run's evaluations, newest first",
)
def run_evaluations(
    request: HttpRequest, response: HttpResponse, run_id: uuid.UUID, query: Query[ListQuery]
) -> dict[str, Any]:
    mark_revalidate(response)
    return _page(query, run_id)


@router.get(
    "/evaluations",
    response={200: EvaluationListResponse, 422: ErrorOut},
    summary="Every evaluation, newest first",
)
def evaluation_list(
    request: HttpRequest, response: HttpResponse, query: Query[ListQuery]
) -> dict[str, Any]:
    mark_revalidate(response)
    return _page(query, None)


def _evaluation_or_404(evaluation_id: uuid.UUID) -> Evaluation:
    evaluation = selectors.evaluation_get(evaluation_id=evaluation_id)
    if evaluation is None:
        raise HttpError(404, f"Evaluation not found: {evaluation_id}")
    return evaluation


@router.get(
    "/evaluations/{evaluation_id}",
    response={200: EvaluationOut, 304: None, 404: ErrorOut, 422: ErrorOut},
    summary="One evaluation, with its status, progress and scores",
)
def evaluation_detail(
    request: HttpRequest, response: HttpResponse, evaluation_id: uuid.UUID
) -> Any:
    # An evaluation that has ended never changes and is never deleted, and only this
    # server signs the tag: a match answers 304 before anything is read.
    etag = permanent_etag("evaluation", evaluation_id, "final")
    cached = not_modified(request, etag, exists=None)
    if cached is not None:
        return cached
    evaluation = _evaluation_or_404(evaluation_id)
    if evaluation.is_terminal:
        mark_immutable(response, etag)
    else:
        mark_revalidate(response)
    return evaluation


class ItemsQuery(ApiModel):
    limit: PageLimit = 100
    cursor: Text | None = Field(None, max_length=512)


@router.get(
    "/evaluations/{evaluation_id}/items",
    response={200: EvaluationItemsResponse, 404: ErrorOut, 422: ErrorOut},
    summary="An evaluation's scored items, in dataset order",
)
def evaluation_items(
    request: HttpRequest, response: HttpResponse, evaluation_id: uuid.UUID, query: Query[ItemsQuery]
) -> dict[str, Any]:
    check_page(query.limit, 0)
    _evaluation_or_404(evaluation_id)
    try:
        page = selectors.evaluation_items(
            evaluation_id=evaluation_id, limit=query.limit, cursor=query.cursor
        )
    except selectors.InvalidCursor as exc:
        raise HttpError(422, str(exc)) from None
    mark_revalidate(response)
    return {"data": page.items, "pagination": page.pagination}


@router.post(
    "/evaluations/{evaluation_id}/cancel",
    response={200: EvaluationCancelResponse, 400: ErrorOut, 404: ErrorOut, 422: ErrorOut},
    summary="Cancel a pending evaluation at once, or ask an executing one to stop",
    auth=Access(CANCEL_RUNS),
)
def evaluation_cancel(request: HttpRequest, evaluation_id: uuid.UUID) -> dict[str, Any]:
    try:
        status = services.evaluation_cancel(evaluation_id=evaluation_id)
    except services.EvaluationNotFound as exc:
        raise HttpError(404, str(exc)) from None
    except services.EvaluationAlreadyFinished as exc:
        raise HttpError(400, str(exc)) from None
    return {"message": "Evaluation cancellation requested", "status": status}


_METRIC_ENUM: dict[str, Any] = {"enum": sorted(METRICS)}


class LeaderboardQuery(ApiModel):
    limit: PageLimit = 20
    offset: PageOffset = 0
    # Any other name is a 422 that names it (the handler checks, the document lists them).
    metric: Text = Field(
        leaderboard.DEFAULT_METRIC,
        max_length=64,
        json_schema_extra=_METRIC_ENUM,
    )
    # Filters: the evaluation's dataset, the runs' base model, held-out parts or whole datasets.
    dataset_key: Text | None = Field(None, max_length=256)
    model_id: Text | None = Field(None, max_length=256)
    held_out: bool | None = None


@router.get(
    "/leaderboard",
    response={200: LeaderboardResponse, 422: ErrorOut},
    summary="Runs ranked by a metric of their best evaluation on each dataset",
)
def evaluation_leaderboard(
    request: HttpRequest, response: HttpResponse, query: Query[LeaderboardQuery]
) -> dict[str, Any]:
    check_page(query.limit, query.offset)
    try:
        page = leaderboard.leaderboard(
            metric=query.metric,
            dataset_key=query.dataset_key,
            model_id=query.model_id,
            held_out=query.held_out,
            limit=query.limit,
            offset=query.offset,
        )
    except leaderboard.UnknownMetric as exc:
        raise HttpError(422, str(exc)) from None
    mark_revalidate(response)
    return {"metric": page.metric, "data": page.rows, "pagination": page.pagination}
