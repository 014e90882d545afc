"""Settings come from the environment through strict helpers; bad values stop start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from tunix_registry.env import env_bool, env_choice, env_int, env_list, env_str

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("1", True), ("YES", True), ("on", True), ("false", False), ("0", False)],
)
def test_env_bool_accepts_the_usual_spellings(raw: str, expected: bool) -> None:
    assert env_bool("X_FLAG", not expected, environ={"X_FLAG": raw}) is expected


def test_env_bool_uses_default_when_absent_or_blank() -> None:
    assert env_bool("X_FLAG", True, environ={}) is True
    assert env_bool("X_FLAG", False, environ={"X_FLAG": "  "}) is False


def test_env_bool_rejects_junk_naming_the_variable() -> None:
    with pytest.raises(ImproperlyConfigured, match="X_FLAG must be a boolean"):
        env_bool("X_FLAG", False, environ={"X_FLAG": "maybe"})


def test_env_int_checks_type_and_range() -> None:
    assert env_int("N", 5, environ={"N": "7"}, minimum=1, maximum=10) == 7
    assert env_int("N", 5, environ={}) == 5
    with pytest.raises(ImproperlyConfigured, match="N must be an integer"):
        env_int("N", 5, environ={"N": "seven"})
    with pytest.raises(ImproperlyConfigured, match="N must be between 1 and 10"):
        env_int("N", 5, environ={"N": "11"}, minimum=1, maximum=10)


def test_env_list_str_and_choice() -> None:
    assert env_list("L", ["a"], environ={"L": "x, y,,z"}) == ["x", "y", "z"]
    assert env_list("L", ["a"], environ={}) == ["a"]
    assert env_str("S", "d", environ={"S": " v "}) == "v"
    assert env_choice("C", "INFO", ("INFO", "DEBUG"), environ={"C": "debug"}) == "DEBUG"
    with pytest.raises(ImproperlyConfigured, match="C must be one of"):
        env_choice("C", "INFO", ("INFO", "DEBUG"), environ={"C": "loud"})


def _manage_check(tmp_path: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "DATABASE_", "TUNIX_", "TRACE_"))
    }
    env["TUNIX_REGISTRY_DATA_DIR"] = str(tmp_path)
    env.update(overrides)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"DJANGO_SECRET_KEY": "k", "DJANGO_DEBUG": "junk"}, "DJANGO_DEBUG"),
        ({}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_SECRET_KEY": "k", "DATABASE_URL": "mysql://x@y/z"}, "DATABASE_URL"),
        ({"DJANGO_SECRET_KEY": "k", "TRACE_MAX_BYTES": "12"}, "TRACE_MAX_BYTES"),
        (
            {"DJANGO_SECRET_KEY": "k", "TUNIX_RUN_TIMEOUT_SECONDS": "soon"},
            "TUNIX_RUN_TIMEOUT_SECONDS",
        ),
        (
            {"DJANGO_SECRET_KEY": "k", "TUNIX_REGISTRY_LOG_LEVEL": "loud"},
            "TUNIX_REGISTRY_LOG_LEVEL",
        ),
        (
            {
                "DJANGO_SECRET_KEY": "k",
                "DATABASE_URL": "postgres://u@localhost/db",
                "DATABASE_PREPARE_THRESHOLD": "-1",
            },
            "DATABASE_PREPARE_THRESHOLD",
        ),
    ],
)
def test_bad_configuration_fails_at_startup_naming_the_variable(
    tmp_path: Path, overrides: dict[str, str], variable: str
) -> None:
    result = _manage_check(tmp_path, **overrides)
    assert result.returncode == 2
    assert "configuration error" in result.stderr
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


def test_good_configuration_starts_and_debug_is_off_by_default(tmp_path: Path) -> None:
    result = _manage_check(tmp_path, DJANGO_SECRET_KEY="k")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "db.sqlite3").exists() or tmp_path.is_dir()


def test_debug_is_off_unless_asked_for() -> None:
    from django.conf import settings

    assert settings.DEBUG is False


def _manage_in_fresh_shell(
    data_dir: Path, *args: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    """`manage.py <args>` as a new terminal runs it: only PATH and HOME, nothing exported."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", str(data_dir)),
        "TUNIX_REGISTRY_DATA_DIR": str(data_dir),
        **extra,
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


_PRINT_KEY = (
    "shell",
    "-v",
    "0",
    "-c",
    "from django.conf import settings; print(settings.SECRET_KEY)",
)


def test_fresh_shell_uses_the_installations_generated_key(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("generated-key-of-this-installation\n")
    result = _manage_in_fresh_shell(tmp_path, *_PRINT_KEY)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "generated-key-of-this-installation"


def test_exported_secret_key_wins_over_the_generated_one(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("generated-key\n")
    result = _manage_in_fresh_shell(tmp_path, *_PRINT_KEY, DJANGO_SECRET_KEY="exported-key")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "exported-key"


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_no_key_anywhere_fails_with_a_clear_message(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "secret_key").write_text(content)
    result = _manage_in_fresh_shell(tmp_path, "check")
    assert result.returncode == 2
    assert "DJANGO_SECRET_KEY must be set" in result.stderr
    assert str(tmp_path / "secret_key") in result.stderr
    assert "Traceback" not in result.stderr
