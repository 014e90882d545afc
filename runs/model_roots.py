"""Which checkpoint directories a run may load: the model-root policy.

A `model_id` that names a directory must resolve (symlinks followed) inside one of
the operator's TUNIX_MODEL_ROOTS; anything else is refused with one message that is
the same whether the path exists, is a file or is missing, and nothing outside the
roots is looked at (docs/decisions.md#model-roots). Built-in names and hub ids pass
unchanged. The trainer gets the resolved directory, and checks the roots again.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from django.conf import settings

from runs.trainer.errors import ModelError
from runs.trainer.models import TINY_MODELS, read_checkpoint_config

# The model_id column and the manifest's model.model_id hold at most this many characters.
MAX_MODEL_ID_LENGTH = 256

MODEL_ID_REFUSED = (
    "model_id must be a built-in model, a hub id (owner/name) or a checkpoint directory "
    "inside the model roots (TUNIX_MODEL_ROOTS)"
)


class ModelIdRefused(ValueError):
    """The model_id of a request breaks the policy; the message says how."""


def model_id_is_path(model_id: str) -> bool:
    """Whether `model_id` is written as a path (as runs.trainer.models reads it), not a name."""
    return (
        model_id.startswith(("/", "./", "../", "~"))
        or model_id in {".", ".."}
        or ".." in PurePosixPath(model_id).parts
    )


def model_id_resolve(model_id: str) -> str:
    """The model_id to give the trainer: a checkpoint's resolved directory, else unchanged.

    A path (absolute, `~`, or relative: then relative to each model root in turn) must
    resolve strictly inside a root. A bare name or hub id that is an entry of a root
    (`<root>/my-ckpt`, `<root>/owner/name`) is that checkpoint; otherwise it passes as
    is (a built-in or hub model, or an unknown name the trainer reports); its first
    component decides (`<root>/owner` existing makes `owner/name` a checkpoint path). A directory
    inside a root must hold a checkpoint (config.json and *.safetensors weights).
    Raises ModelIdRefused.
    """
    if model_id in TINY_MODELS:
        return model_id
    if "\x00" in model_id:
        raise ModelIdRefused(MODEL_ID_REFUSED)
    roots = [Path(os.path.realpath(root)) for root in settings.TUNIX_MODEL_ROOTS]
    is_path = model_id_is_path(model_id)
    given = Path(model_id).expanduser() if model_id.startswith("~") else Path(model_id)
    if given.is_absolute():
        candidates = [given]
    elif is_path:
        candidates = [root / given for root in roots]
    else:
        # Only a root's own entries are looked at, no link followed (a dangling one counts).
        first = given.parts[0]
        candidates = [root / given for root in roots if os.path.lexists(root / first)]
        if not candidates:
            return model_id
    # Containment first, on the real path, before anything about the target is read.
    inside = [real for real in map(_real, candidates) if _inside(real, roots)]
    if not inside:
        raise ModelIdRefused(MODEL_ID_REFUSED)
    directory = next((real for real in inside if real.is_dir()), None)
    if directory is None:
        raise ModelIdRefused(f"checkpoint directory not found: {inside[0]}")
    try:
        read_checkpoint_config(directory)
    except ModelError as exc:
        raise ModelIdRefused(exc.reason) from None
    if len(str(directory)) > MAX_MODEL_ID_LENGTH:
        raise ModelIdRefused(
            f"the checkpoint directory {directory} is longer than {MAX_MODEL_ID_LENGTH} characters"
        )
    return str(directory)


def trainer_model_roots() -> str:
    """TUNIX_MODEL_ROOTS for the trainer's environment (runs.trainer.manifest reads it)."""
    return os.pathsep.join(str(root) for root in settings.TUNIX_MODEL_ROOTS)


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path != root and path.is_relative_to(root) for root in roots)
