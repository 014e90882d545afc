"""What the registry knows of a local run's training, from the files its trainer leaves.

- `training_report`: the run's `training` record when it ends: the figures of the
  trainer's run_summary.json (the fields of runs.schemas.RunTrainingOut) and the
  steps of the checkpoints left in its output directory.
- `checkpoint_steps`: the finalized checkpoint steps of an output directory.
- `lora_targets_for`: the module names a LoRA request without `target_modules`
  adapts, the model's whole family (docs/training.md#lora).

The trainer's modules imported here are its plain-Python ones (no JAX).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from runs.trainer.lora import LORA_TARGETS
from runs.trainer.train import CHECKPOINT_SUBDIR, SUMMARY_FILE, step_directories

logger = logging.getLogger(__name__)

# A summary is a few kilobytes; a bigger file is not the trainer's.
SUMMARY_MAX_BYTES = 1 << 20
_INTEGERS = (
    "parameters",
    "trainable_parameters",
    "total_steps",
    "trained_steps",
    "peak_host_memory_bytes",
    "peak_device_memory_bytes",
)
_NUMBERS = ("steps_per_second", "tokens_per_second", "train_seconds")
_TEXTS = ("device", "export_format")
_PHASES = ("load", "compile", "train", "eval", "save")


def checkpoint_steps(output_dir: Path) -> list[int]:
    """The finalized checkpoint steps in `output_dir/checkpoints`, ascending ([] when none)."""
    return step_directories(output_dir / CHECKPOINT_SUBDIR)


def training_report(output_dir: Path) -> dict[str, Any] | None:
    """The `training` record of a local run whose output directory is `output_dir`.

    None when the trainer left neither a summary nor a checkpoint (it failed before
    building the model). Values of the wrong type are dropped, not trusted: the
    file is written by a subprocess the registry does not control.
    """
    summary = _read_summary(output_dir / SUMMARY_FILE)
    steps = checkpoint_steps(output_dir)
    if summary is None and not steps:
        return None
    summary = summary or {}
    report: dict[str, Any] = {}
    for key in _INTEGERS:
        report[key] = _integer(summary.get(key))
    for key in _NUMBERS:
        report[key] = _number(summary.get(key))
    for key in _TEXTS:
        value = summary.get(key)
        report[key] = value[:64] if isinstance(value, str) else None
    phases = summary.get("phases")
    report["phases"] = (
        {name: _number(phases.get(name)) for name in _PHASES} if isinstance(phases, dict) else None
    )
    resumed = summary.get("resumed_from")
    resumed = resumed if isinstance(resumed, dict) else {}
    report["resumed_step"] = _integer(resumed.get("step"))
    report["restore_seconds"] = _number(resumed.get("restore_seconds"))
    report["checkpoint_steps"] = steps
    return report


def lora_targets_for(family: str | None) -> list[str]:
    """Every module LoRA may adapt in `family` (None, unknown: the decoder projections)."""
    return list(LORA_TARGETS.get(family or "", LORA_TARGETS["qwen3"]))


def model_family(model_id: str) -> str | None:
    """The Tunix family of a resolved model id, when it is known without loading anything.

    Built-in models by name, a checkpoint directory by its config.json; None for a
    hub id or an unreadable directory (the preflight then reports what is wrong).
    """
    from runs.trainer.errors import ModelError
    from runs.trainer.models import RANDOM_PRESETS, TINY_SIZES, read_checkpoint_config

    preset = TINY_SIZES.get(model_id) or RANDOM_PRESETS.get(model_id)
    if preset is not None:
        return str(preset["family"])
    path = Path(model_id)
    if not path.is_absolute() or not path.is_dir():
        return None
    try:
        family, _ = read_checkpoint_config(path)
    except ModelError:
        return None
    return family


def _read_summary(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as handle:
            raw = handle.read(SUMMARY_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError:
        logger.warning("%s could not be read", path, exc_info=True)
        return None
    if len(raw) > SUMMARY_MAX_BYTES:
        logger.warning("%s is over %d bytes; not read", path, SUMMARY_MAX_BYTES)
        return None
    try:
        summary = json.loads(raw)
    except ValueError:
        logger.warning("%s is not JSON; not read", path)
        return None
    return summary if isinstance(summary, dict) else None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None
