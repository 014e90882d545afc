"""A local run's artifacts: the files directly in its output directory and in its model.

- `artifacts_scan`: what the executing machine records on the run when it ends
  (`TunixRun.artifacts`): name, size and sha256 of each regular file directly in
  the output directory, then of each in its `model/` directory (the exported
  model, named `model/<file>`); other directories (checkpoints) and symbolic links
  left out (docs/decisions.md#artifacts).
- `artifact_name_check` / `artifact_file`: the file to serve for a download; a
  name is a bare file name, or `model/` and a bare file name, never another path.
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
# The one subdirectory whose files are artifacts: the trainer's exported model.
MODEL_SUBDIR = "model"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def artifacts_scan(directory: Path, *, with_hashes: bool = True) -> list[dict[str, Any]]:
    """The regular files of `directory` and of its `model/` as [{"name", "size", "sha256"}].

    The output directory's files by name, then `model/<file>` by name. A missing
    directory has none; an unreadable file is left out (logged). Without hashes (or
    for a file over HASH_MAX_BYTES) sha256 is None.
    """
    found: list[dict[str, Any]] = []
    _scan_into(found, directory, prefix="", with_hashes=with_hashes)
    model = directory / MODEL_SUBDIR
    if not model.is_symlink() and model.is_dir():
        _scan_into(found, model, prefix=f"{MODEL_SUBDIR}/", with_hashes=with_hashes)
    return found


def _scan_into(
    found: list[dict[str, Any]], directory: Path, *, prefix: str, with_hashes: bool
) -> None:
    try:
        entries = sorted(directory.iterdir(), key=lambda p: p.name)
    except OSError:
        return
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
        found.append({"name": prefix + entry.name, "size": size, "sha256": sha256})


class InvalidArtifactName(ValueError):
    """An artifact name that is neither a bare file name nor `model/<bare file name>`
    (HTTP 403 "Invalid artifact path")."""


def _bare(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


def artifact_name_check(name: str) -> str:
    """`name` if it is a bare file name or `model/<bare file name>`; else InvalidArtifactName.

    A bare name has no "/" or "\\" and no NUL and is not "" or "." or ".." (so no
    absolute path and no way out of the directory).
    """
    head, slash, tail = name.partition("/")
    if not (_bare(name) or (slash and head == MODEL_SUBDIR and _bare(tail))):
        raise InvalidArtifactName("Invalid artifact path")
    return name


def artifact_file(*, run: TunixRun, name: str) -> Path | None:
    """The regular file `name` of the run's output directory on this machine, or None.

    `name` is a file directly in the output directory or `model/<file>`; raises
    InvalidArtifactName for any other name. None when
    the file is not there (another machine holds it, or it was removed), or is a
    directory or a symbolic link.
    """
    artifact_name_check(name)
    output_dir = output_dir_absolute(run.output_dir)
    directory = output_dir / MODEL_SUBDIR if "/" in name else output_dir
    path = output_dir / name
    try:
        if directory.is_symlink() or path.is_symlink() or not path.is_file():
            return None
        if path.resolve().parent != directory.resolve():
            return None
    except OSError:
        return None
    return path
