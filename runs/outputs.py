"""Where a run may write its checkpoints: the output-directory policy.

No request makes the server write outside the directories the operator gave it: a
relative output_dir lives under the data directory's `outputs/`, an absolute one
only under the data directory or an operator's TUNIX_OUTPUT_ROOTS.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from django.conf import settings

MAX_STORED_LENGTH = 512


class OutputDirRefused(ValueError):
    """The output_dir of a request breaks the policy; the message says how."""


def outputs_root() -> Path:
    """DATA_DIR/outputs: where relative output directories resolve."""
    return Path(settings.DATA_DIR) / "outputs"


def output_dir_resolve(*, run_id: uuid.UUID, output_dir: str | None) -> tuple[str, Path]:
    """(stored form, absolute path) of a run's output directory, or OutputDirRefused.

    Default `outputs/tunix_run_<first 8 of run_id>` under the data directory. A
    relative path resolves under DATA_DIR/outputs and may not leave it; an absolute
    one must lie under the data directory or an operator's TUNIX_OUTPUT_ROOTS. The
    stored form is relative to the data directory whenever the path is under it.
    """
    data_dir = Path(settings.DATA_DIR).resolve()
    root = data_dir / "outputs"
    if output_dir is None:
        resolved = root / f"tunix_run_{str(run_id)[:8]}"
    else:
        if "\x00" in output_dir or not output_dir.strip():
            raise OutputDirRefused("output_dir must be a non-empty path")
        given = Path(output_dir)
        if given.is_absolute():
            resolved = given.resolve()
            allowed = [data_dir, *settings.TUNIX_OUTPUT_ROOTS]
            if not any(_strictly_under(resolved, Path(r).resolve()) for r in allowed):
                raise OutputDirRefused(
                    "output_dir must be a relative path (under the data directory's outputs/) "
                    "or lie under one of the allowed output roots"
                )
        else:
            resolved = (root / given).resolve()
            if not _strictly_under(resolved, root):
                raise OutputDirRefused("output_dir must stay inside the outputs directory")
    if resolved.is_relative_to(data_dir):
        stored = resolved.relative_to(data_dir).as_posix()
    else:
        stored = str(resolved)
    if len(stored) > MAX_STORED_LENGTH:
        raise OutputDirRefused(f"output_dir is longer than {MAX_STORED_LENGTH} characters")
    return stored, resolved


def output_dir_absolute(stored: str) -> Path:
    """The absolute path of a stored output_dir."""
    path = Path(stored)
    return path if path.is_absolute() else Path(settings.DATA_DIR) / path


def _strictly_under(path: Path, root: Path) -> bool:
    return path != root and path.is_relative_to(root)
