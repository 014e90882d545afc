"""A local run's artifacts: the files directly in its output directory.

- `artifacts_scan`: what the executing machine records on the run when it ends
  (`TunixRun.artifacts`): name, size and sha256 of each regular file, directories
  and symbolic links left out (docs/decisions.md#artifacts).
- `artifact_name_check` / `artifact_file`: the file to serve for a download; a
  name is a bare file name, never a path.
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


def artifacts_scan(directory: Path, *, with_hashes: bool = True) -> list[dict[str, Any]]:
    """The regular files directly in `directory` as [{"name", "size", "sha256"}], by name.

    A missing directory has none; an unreadable file is left out (logged). Without
    hashes (or for a file over HASH_MAX_BYTES) sha256 is None.
    """
    try:
        entries = sorted(directory.iterdir(), key=lambda p: p.name)
    except OSError:
        return []
    found: list[dict[str, Any]] = []
    for entry in entries:
        if len(found) >= MAX_ARTIFACTS:
            logger.warning("%s has over %d files; rest not recorded", directory, MAX_ARTIFACTS)
            break
        try:
            if entry.is_symlink() or not entry.is_file():
                continue
            size = entry.stat().st_size
            sha256 = _sha256(entry) if with_hashes and size <= HASH_MAX_BYTES else None
        except OSError:
            logger.warning("artifact %s could not be read; not recorded", entry, exc_info=True)
            continue
        found.append({"name": entry.name, "size": size, "sha256": sha256})
    return found


class InvalidArtifactName(ValueError):
    """An artifact name that is not a bare file name (HTTP 403 "Invalid artifact path")."""


def artifact_name_check(name: str) -> str:
    """`name` if it is a bare file name; raises InvalidArtifactName otherwise.

    Refused: "", ".", "..", any "/" or "\\", a NUL character (so no absolute path
    and no way out of the directory).
    """
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise InvalidArtifactName("Invalid artifact path")
    return name


def artifact_file(*, run: TunixRun, name: str) -> Path | None:
    """The regular file `name` directly in the run's output directory on this machine, or None.

    Raises InvalidArtifactName for a name that is not a bare file name. None when
    the file is not there (another machine holds it, or it was removed), or is a
    directory or a symbolic link.
    """
    artifact_name_check(name)
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
