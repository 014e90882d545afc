"""Whether the Tunix runtime is installed here, and the status the API and the panel show.

The check finds the runtime module without importing it, so asking costs no JAX import.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any

from django.conf import settings

TUNIX_DISTRIBUTION = "google-tunix"

RUNTIME_UNAVAILABLE_MESSAGE = (
    "Tunix runtime not available. Install with: EXTRAS=tunix make run "
    "(or pip install -e '.[tunix]') or set dry_run=true to validate without executing."
)
STATUS_AVAILABLE_MESSAGE = (
    "Tunix runtime is available. Supports dry-run validation and local execution. "
    "Use POST /api/tunix/run with dry_run=false to execute training runs locally."
)
STATUS_UNAVAILABLE_MESSAGE = (
    "Tunix runtime not installed. Dry-run mode available for validation. "
    "Install Tunix for local execution: EXTRAS=tunix make run (or pip install -e '.[tunix]')"
)


def tunix_runtime_available() -> bool:
    """Whether settings.TUNIX_RUNTIME_MODULE can be imported (found, not imported)."""
    try:
        return importlib.util.find_spec(settings.TUNIX_RUNTIME_MODULE) is not None
    except (ImportError, ValueError):
        return False


def tunix_status() -> dict[str, Any]:
    """The body of GET /api/tunix/status, also shown on the panel."""
    available = tunix_runtime_available()
    version: str | None = None
    if available:
        try:
            version = importlib.metadata.version(TUNIX_DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
    return {
        "available": available,
        "version": version,
        "runtime_required": not available,
        "message": STATUS_AVAILABLE_MESSAGE if available else STATUS_UNAVAILABLE_MESSAGE,
    }
