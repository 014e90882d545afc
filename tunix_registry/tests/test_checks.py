"""The static files check: no collected files, no server (and the tests are unaffected)."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from tunix_registry.checks import (
    STATIC_MANIFEST_MISSING,
    STATIC_MANIFEST_UNREADABLE,
    ensure_ready_to_serve,
    static_manifest_check,
)

MANIFEST_STORAGE = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}


@pytest.fixture
def production_static(tmp_path: Path) -> Iterator[Path]:
    """The production static storage, with an empty temporary STATIC_ROOT."""
    root = tmp_path / "staticfiles"
    root.mkdir()
    with override_settings(STORAGES=MANIFEST_STORAGE, STATIC_ROOT=str(root), DEBUG=False):
        yield root


def test_missing_manifest_is_an_error_naming_collectstatic(production_static: Path) -> None:
    errors = static_manifest_check()
    assert [e.id for e in errors] == [STATIC_MANIFEST_MISSING]
    assert str(production_static / "staticfiles.json") in errors[0].msg
    assert "collectstatic" in (errors[0].hint or "")
    assert errors[0].is_serious()


def test_collected_manifest_passes(production_static: Path) -> None:
    (production_static / "staticfiles.json").write_text(
        json.dumps({"version": "1.1", "paths": {"app.css": "app.0123abcd.css"}, "hash": "x"})
    )
    assert static_manifest_check() == []
    ensure_ready_to_serve()


def test_corrupt_manifest_is_an_error(production_static: Path) -> None:
    (production_static / "staticfiles.json").write_text("{not json")
    errors = static_manifest_check()
    assert [e.id for e in errors] == [STATIC_MANIFEST_UNREADABLE]
    assert "collectstatic" in (errors[0].hint or "")


def test_the_wsgi_application_refuses_to_load_without_collected_files(
    production_static: Path,
) -> None:
    with pytest.raises(ImproperlyConfigured, match="collectstatic"):
        ensure_ready_to_serve()
    sys.modules.pop("tunix_registry.wsgi", None)
    try:
        with pytest.raises(ImproperlyConfigured, match="collectstatic"):
            importlib.import_module("tunix_registry.wsgi")
    finally:
        sys.modules.pop("tunix_registry.wsgi", None)


def test_debug_mode_needs_no_manifest(production_static: Path) -> None:
    with override_settings(DEBUG=True):
        assert static_manifest_check() == []


def test_the_test_settings_static_storage_needs_no_collected_files() -> None:
    assert static_manifest_check() == []
    ensure_ready_to_serve()


def test_the_check_is_registered_as_a_deployment_check() -> None:
    from django.core import checks

    assert static_manifest_check in checks.registry.registry.get_checks(
        include_deployment_checks=True
    )
    assert static_manifest_check not in checks.registry.registry.get_checks(
        include_deployment_checks=False
    )


def test_gunicorn_refuses_to_start_without_collected_files(tmp_path: Path) -> None:
    """The production settings and gunicorn config, with an empty STATIC_ROOT: no server."""
    import os
    import socket
    import subprocess

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "no_static_settings.py").write_text(
        "from tunix_registry.settings import *  # noqa: F403\n"
        f"STATIC_ROOT = {str(tmp_path / 'staticfiles')!r}\n"
    )
    (tmp_path / "staticfiles").mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(tmp_path),
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{root}",
        "DJANGO_SETTINGS_MODULE": "no_static_settings",
        "DJANGO_SECRET_KEY": "only-for-this-test",
        "TUNIX_REGISTRY_DATA_DIR": str(tmp_path / "data"),
        "WEB_CONCURRENCY": "1",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "tunix_registry.wsgi:application",
            "--config",
            "python:tunix_registry.gunicorn_conf",
            "--bind",
            f"127.0.0.1:{port}",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "collectstatic" in result.stderr
    assert "Worker failed to boot" in result.stderr
