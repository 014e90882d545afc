"""The one NinjaAPI of the product, mounted at /api/.

Each app owns a ninja Router in its `api.py`; this module mounts them, answers
the health check and holds what every endpoint shares
(docs/decisions.md#api-errors):

- one renderer (`tunix_registry.rendering`): one encoder, one content type;
- every error is `{"detail": ...}`: a string, or for request validation a list
  of `{"type", "loc", "msg", ...}` whose `loc` is `["body", <field>, ...]`,
  `["query", <param>]` or `["path", <param>]`;
- an unhandled exception is logged and answered with a JSON 500 (503 when the
  database is unavailable), never with a traceback;
- the OpenAPI document lists the 400/413/422 answers of every operation that
  can give them, so it describes what the API does.

Oversized and chunked bodies, unknown paths and wrong methods are handled
before ninja, by `tunix_registry.middleware.ApiMiddleware`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI, Status
from ninja.errors import ValidationError, ValidationErrorContext
from ninja.openapi.schema import OpenAPISchema

from accounts.access import AccessDenied, access_denied_response
from datasets.api import router as datasets_router
from evaluations.api import router as evaluations_router
from runs.api import router as runs_router
from traces.api import router as traces_router
from tunix_registry.fields import JSON_VALUE_COMPONENT, NO_NUL_MESSAGE, NO_NUL_PATTERN
from tunix_registry.rendering import ApiRenderer
from tunix_registry.schemas import ApiModel, ErrorOut

logger = logging.getLogger(__name__)

_REF = "#/components/schemas/"
_DESCRIPTIONS = {
    "400": "Malformed request (for instance a body that is not JSON)",
    "413": "Request body too large",
    "422": "Request validation failed; `loc` names the field",
    "401": "No usable credentials: none, or a bad or revoked token (WWW-Authenticate: Bearer)",
    "403": "Authenticated, but without the permission this operation needs",
    "415": "The request body is not application/json",
}


def _error_response(code: str) -> dict[str, Any]:
    return {
        "description": _DESCRIPTIONS[code],
        "content": {"application/json": {"schema": {"$ref": _REF + "ErrorOut"}}},
    }


_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _standard_bounds(node: Any) -> None:
    """Spell bounds the JSON Schema way where pydantic left its own names (`ge` for
    `minimum`: it does so for bounds placed after a validator, see fields.Integer)."""
    if isinstance(node, dict):
        if node.get("type") in ("integer", "number"):
            for name, standard in _BOUNDS.items():
                if name in node:
                    node[standard] = node.pop(name)
        for value in node.values():
            _standard_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _standard_bounds(value)


class RegistryAPI(NinjaAPI):
    """NinjaAPI with the product's error shapes and a complete OpenAPI document."""

    def validation_error_from_error_contexts(
        self, error_contexts: list[ValidationErrorContext]
    ) -> ValidationError:
        """Ninja's errors, with `loc` relative to the body and the NUL pattern worded plainly.

        A handler declares its body as one schema parameter (`body: SomeIn`);
        ninja would put that parameter's name into `loc` (`["body", "body",
        "field"]`); the contract is `["body", "field"]`.
        """
        error = super().validation_error_from_error_contexts(error_contexts)
        single = {
            getattr(c.model, "__read_from_single_attr__", None)
            for c in error_contexts
            if getattr(c.model, "__ninja_param_source__", None) == "body"
        } - {None}
        for item in error.errors:
            loc = tuple(item["loc"])
            if len(loc) >= 2 and loc[0] == "body" and loc[1] in single:
                item["loc"] = ("body", *loc[2:])
            item["loc"] = list(item["loc"])
            if item.get("type") == "string_pattern_mismatch" and (
                item.get("ctx", {}).get("pattern") == NO_NUL_PATTERN
            ):
                item["msg"] = f"Value error, {NO_NUL_MESSAGE}"
        return error

    def get_openapi_schema(self, **kwargs: Any) -> OpenAPISchema:
        schema = super().get_openapi_schema(**kwargs)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        # The one error shape, also where no operation declared it.
        error_out = ErrorOut.model_json_schema(ref_template=_REF + "{model}")
        for name, definition in error_out.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components.setdefault("ErrorOut", error_out)
        components.setdefault("JsonValue", JSON_VALUE_COMPONENT)
        _standard_bounds(schema)
        for methods in schema.get("paths", {}).values():
            for operation in methods.values():
                responses = operation.setdefault("responses", {})
                codes = []
                if operation.get("parameters") or "requestBody" in operation:
                    codes.append("422")
                if operation.get("security"):
                    codes += ["401", "403"]
                if "requestBody" in operation:
                    codes += ["400", "413", "415"]
                documented = {str(code) for code in responses}
                for code in codes:
                    if code not in documented:
                        responses[code] = _error_response(code)
        return schema


api = RegistryAPI(
    title="Tunix Registry API",
    version="1.0.0",
    description=(
        "Reasoning traces, versioned datasets and the registry of Tunix training runs. "
        "Paths and shapes are compatible with the original Tunix RT API."
    ),
    urls_namespace="api",
    renderer=ApiRenderer(),
)


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return api.create_response(
        request,
        {"detail": f"Payload size exceeds maximum of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"},
        status=413,
    )


@api.exception_handler(AccessDenied)
def _access_denied(request: HttpRequest, exc: AccessDenied) -> HttpResponse:
    return access_denied_response(exc)


@api.exception_handler(DatabaseError)
def _database_error(request: HttpRequest, exc: DatabaseError) -> HttpResponse:
    # Django drops a broken connection when the request ends (close_old_connections).
    logger.exception("%s %s: database error", request.method, request.path)
    return api.create_response(request, {"detail": "Database unavailable"}, status=503)


@api.exception_handler(Exception)
def _unhandled(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("%s %s: unhandled exception", request.method, request.path)
    return api.create_response(request, {"detail": "Internal server error"}, status=500)


class HealthOut(ApiModel):
    status: str
    detail: str | None = None


@api.get(
    "/health",
    response={200: HealthOut, 503: HealthOut},
    tags=["health"],
    summary="Service and database health",
    exclude_none=True,
)
def health(request: HttpRequest) -> Status[dict[str, str]]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        logger.warning("health check: database unreachable: %s", exc)
        with contextlib.suppress(DatabaseError):
            connection.close()
        return Status(503, {"status": "unhealthy", "detail": "database unreachable"})
    return Status(200, {"status": "healthy"})


api.add_router("/traces", traces_router)
api.add_router("/datasets", datasets_router)
api.add_router("/tunix", runs_router)
api.add_router("/tunix", evaluations_router)
