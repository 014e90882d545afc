"""A local run's artifacts: the files directly in its output directory.

- `artifacts_list`: what the executing machine records on the run when it ends
  (`TunixRun.artifacts`): name, size and sha256 of each regular file, directories
  and symbolic links left out (docs/decisions.md#artifacts).
- `artifact_path`: the file to serve for a download, or None; a name is a bare
  file name, never a path.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from runs.models import TunixRun
from runs.outputs import output_dir_absolute

logger = logging.getLogger(__name__)

# At most this many files are recorded (by name), and files larger than this are
# listed without a digest (sha256 null): recording must not take longer than the run.
MAX_ARTIFACTS = 1000
HASH_MAX_BYTES = 8 << 30
_HASH_BLOCK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def artifacts_list(directory: Path) -> list[dict[str, Any]]:
    """The regular files directly in `directory` as [{"name", "size", "sha256"}], by name.

    A missing directory has none; an unreadable file is left out (logged).
    """
    try:
        entries = sorted(directory.iterdir(), key=lambda p: p.name)
    except OSError:
        return []
    found: list[dict[str, Any]] = []
    for entry in entries:
        if len(found) >= MAX_ARTIFACTS:
            logger.warning(
                "%s holds more than %d files; rest not recorded", directory, MAX_ARTIFACTS
            )
            break
        try:
            if entry.is_symlink() or not entry.is_file():
                continue
            size = entry.stat().st_size
            sha256 = _sha256(entry) if size <= HASH_MAX_BYTES else None
        except OSError:
            logger.warning("artifact %s could not be read; not recorded", entry, exc_info=True)
            continue
        found.append({"name": entry.name, "size": size, "sha256": sha256})
    return found


def artifact_name_valid(name: str) -> bool:
    """Whether `name` is a bare file name (no separator, no "..", no NUL, not absolute)."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


def artifact_path(*, run: TunixRun, name: str) -> Path | None:
    """The regular file `name` directly in the run's output directory on this machine, or None.

    None for an invalid name (see `artifact_name_valid`), a file that is not there
    (another machine holds it, or it was removed), a directory or a symbolic link.
    """
    if not artifact_name_valid(name):
        return None
    directory = output_dir_absolute(run.output_dir)
    path = directory / name
    try:
        if path.is_symlink() or not path.is_file():
            return None
        if path.resolve().parent != directory.resolve():
            return None
    except OSError:
        return None
    return path
