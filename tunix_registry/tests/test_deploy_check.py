"""`manage.py check --deploy` is clean with the documented production settings.

The production set is read from docs/operations.md ("HTTPS settings"), so the
documentation and this test cannot drift apart. Each check is a real
`manage.py` process with the production settings module and nothing else in
its environment.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def documented_production_env() -> dict[str, str]:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text.split("\n## HTTPS settings\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    env = dict(line.split("=", 1) for line in block.splitlines() if re.match(r"^[A-Z_]+=", line))
    assert env.pop("DJANGO_SECRET_KEY").startswith("<")  # a placeholder to fill in
    return env


def manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "tunix_registry.settings",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_DEBUG": "false",
            "TUNIX_REGISTRY_DATA_DIR": str(tmp_path / "data"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture(scope="module")
def collected_static(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A deployment collects static files first (the deploy check requires their manifest)."""
    done = manage(tmp_path_factory.mktemp("collect"), "collectstatic", "--noinput", "-v", "0")
    assert done.returncode == 0, done.stderr


def test_the_documented_production_settings_pass_the_deploy_check(
    collected_static: None, tmp_path: Path
) -> None:
    env = documented_production_env()
    assert env["DJANGO_SECURE_SSL_REDIRECT"] == "true"
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNINGS" not in output and "ERRORS" not in output
    assert "System check identified no issues" in output


def test_the_defaults_are_not_fit_for_production(collected_static: None, tmp_path: Path) -> None:
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "WARNINGS" in output
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in output, check  # HSTS, SSL redirect, session and CSRF cookies


def test_hsts_alone_leaves_subdomains_and_preload_off(
    collected_static: None, tmp_path: Path
) -> None:
    result = manage(
        tmp_path, "check", "--deploy", "--fail-level", "WARNING", DJANGO_SECURE_HSTS_SECONDS="3600"
    )
    output = result.stdout + result.stderr
    assert "security.W004" not in output
    assert "security.W005" in output and "security.W021" in output


def test_a_bad_value_stops_the_command_naming_the_variable(tmp_path: Path) -> None:
    result = manage(tmp_path, "check", DJANGO_SECURE_HSTS_SECONDS="a year")
    assert result.returncode != 0
    assert "DJANGO_SECURE_HSTS_SECONDS must be an integer, got 'a year'" in result.stderr
