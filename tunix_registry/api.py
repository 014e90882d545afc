"""The one NinjaAPI of the product, mounted at /api/.

Each app owns a ninja Router in its `api.py`; this module only mounts them and
answers the health check. Error bodies follow the original: `{"detail": ...}`.
"""

from __future__ import annotations

import contextlib
import logging

from django.db import DatabaseError, connection
from django.http import HttpRequest
from ninja import NinjaAPI, Schema, Status

from datasets.api import router as datasets_router
from runs.api import router as runs_router
from traces.api import router as traces_router

logger = logging.getLogger(__name__)

api = NinjaAPI(
    title="Tunix Registry API",
    version="1.0.0",
    description=(
        "Reasoning traces, versioned datasets and the registry of Tunix training runs. "
        "Paths and shapes are compatible with the original Tunix RT API."
    ),
    urls_namespace="api",
)


class HealthOut(Schema):
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
