"""Dataset keys: how they are made from a name and version, and what a valid one is.

A key names a directory under the data directory, so every key that enters the
system (API path and body, forms, commands, other apps) passes through
`dataset_key_validate` before anything else looks at it. Both functions are
pure: they never touch the filesystem.
"""

from __future__ import annotations

import re

KEY_MAX_LENGTH = 256

_KEY_RE = re.compile(r"[A-Za-z0-9_.-]+")
_ECHO_MAX = 80


class InvalidDatasetKey(ValueError):
    """A dataset key that may not be used; `str(exc)` is a message fit for a 422 detail."""

    def __init__(self, message: str, *, field: str = "dataset_key") -> None:
        super().__init__(message)
        self.field = field


def _echo(key: str) -> str:
    shown = key if len(key) <= _ECHO_MAX else key[:_ECHO_MAX] + "…"
    return repr(shown)


def dataset_key_validate(key: str) -> str:
    """Return `key` unchanged when it is a valid dataset key, else raise InvalidDatasetKey.

    Valid: 1..256 characters of letters, digits, "_", "." and "-", and no ".." anywhere.
    """
    if not isinstance(key, str) or not key:
        raise InvalidDatasetKey("dataset_key must not be empty")
    if len(key) > KEY_MAX_LENGTH:
        raise InvalidDatasetKey(
            f"dataset_key must be at most {KEY_MAX_LENGTH} characters (got {len(key)})"
        )
    if not _KEY_RE.fullmatch(key):
        raise InvalidDatasetKey(
            f"dataset_key may contain only letters, digits, '_', '.' and '-' (got {_echo(key)})"
        )
    if ".." in key:
        raise InvalidDatasetKey(f"dataset_key must not contain '..' (got {_echo(key)})")
    return key


def _sanitise(part: str) -> str:
    return part.replace(" ", "_").replace("/", "_")


def dataset_key_make(name: str, version: str) -> str:
    """The key of dataset `name` at `version`: `<name>-<version>` with spaces and "/" as "_".

    Raises InvalidDatasetKey (field "dataset_name"/"dataset_version") when the
    result is not a valid key.
    """
    key = f"{_sanitise(name)}-{_sanitise(version)}"
    try:
        return dataset_key_validate(key)
    except InvalidDatasetKey as exc:
        field = "dataset_name" if not dataset_key_is_valid(_sanitise(name)) else "dataset_version"
        message = str(exc).replace("dataset_key", "the dataset key", 1)
        raise InvalidDatasetKey(
            f"{field}: {message} (made from dataset_name and dataset_version)", field=field
        ) from None


def dataset_key_is_valid(key: str) -> bool:
    try:
        dataset_key_validate(key)
    except InvalidDatasetKey:
        return False
    return True
