"""System checks of the project itself.

A server that cannot render its pages must not start and answer `/api/health`
as if all were well. With the production static storage (whitenoise's
compressed manifest storage) every page looks its stylesheets up in the
manifest that `collectstatic` writes; without it each page is a 500. The check
below turns that into an error at start-up, naming the command that fixes it.

It is a deployment check (`manage.py check --deploy`) rather than one run by
every command, so that `migrate` and the other commands keep working on a host
that has not collected static files (a worker host, or an install before its
`collectstatic` step). The WSGI application runs it when it loads
(`ensure_ready_to_serve`), so gunicorn refuses to start without the files.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.staticfiles.storage import ManifestFilesMixin
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import storages

STATIC_MANIFEST_MISSING = "tunix_registry.E001"
STATIC_MANIFEST_UNREADABLE = "tunix_registry.E002"
_HINT = (
    "Run `manage.py collectstatic --noinput` with the same settings before starting the server "
    "(`make run` does)."
)


@checks.register(checks.Tags.staticfiles, deploy=True)
def static_manifest_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """An error when the static storage needs a manifest that `collectstatic` has not written."""
    if settings.DEBUG:
        return []  # the manifest storages serve unhashed names in debug mode
    where = f"{settings.STATIC_ROOT}/{ManifestFilesMixin.manifest_name}"
    try:
        # A manifest storage reads its manifest as it is created.
        storage = storages["staticfiles"]
        if not isinstance(storage, ManifestFilesMixin):
            return []  # plain storages (the test suite's) need no collected files
        where = f"{settings.STATIC_ROOT}/{storage.manifest_name}"
        content = storage.read_manifest()
    except (OSError, ValueError) as exc:
        return [
            checks.Error(
                f"The static files manifest {where} cannot be read ({exc}).",
                hint=_HINT,
                id=STATIC_MANIFEST_UNREADABLE,
            )
        ]
    if content is None:
        return [
            checks.Error(
                f"Collected static files are missing: there is no {where}, so every page "
                "would fail with a server error.",
                hint=_HINT,
                id=STATIC_MANIFEST_MISSING,
            )
        ]
    return []


def ensure_ready_to_serve() -> None:
    """Raise ImproperlyConfigured when a serving check fails (called as the WSGI app loads)."""
    found = checks.run_checks(tags=[checks.Tags.staticfiles], include_deployment_checks=True)
    serious = [message for message in found if message.is_serious()]
    if serious:
        lines = "\n".join(f"{m.id}: {m.msg} HINT: {m.hint}" for m in serious)
        raise ImproperlyConfigured(f"the server cannot serve pages:\n{lines}")
