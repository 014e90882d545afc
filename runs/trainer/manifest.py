"""Reading and validating the training manifest (layout in docs/training.md).

The registry writes the manifest into the run directory; the trainer checks every field again, so a
hand-written manifest gets the same rules. Nothing here imports JAX.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from runs.trainer.errors import ConfigError
from runs.trainer.lora import LORA_EXPORTS, LoraSettings

OUTPUT_ROOTS_ENV = "TUNIX_OUTPUT_ROOTS"
MODEL_ROOTS_ENV = "TUNIX_MODEL_ROOTS"

_SECTIONS: dict[str, set[str]] = {
    "model": {"model_id"},
    "dataset": {"format", "path"},
    "training": {
        "learning_rate",
        "num_epochs",
        "batch_size",
        "max_seq_length",
        "checkpoint_every_n_steps",
    },
    "output": {"output_dir"},
}
# Sections a manifest may leave out.
_OPTIONAL_SECTIONS: dict[str, set[str]] = {
    "lora": {"rank", "alpha", "dropout", "target_modules", "export"},
    "resume": {"run_id", "checkpoint_dir"},
}
_TOP_LEVEL = {"version", "runner", "mode", *_SECTIONS, *_OPTIONAL_SECTIONS}


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated manifest, with its paths resolved against the manifest's directory."""

    path: Path
    run_dir: Path
    model_id: str
    dataset_path: Path
    learning_rate: float
    num_epochs: int
    batch_size: int
    max_seq_length: int
    output_dir: Path
    # Where checkpoints may load from; None: anywhere (docs/decisions.md#model-roots).
    model_roots: list[Path] | None = None
    # None: every ceil(total_steps / 3) steps.
    checkpoint_every_n_steps: int | None = None
    # None: full-weight SFT.
    lora: LoraSettings | None = None
    # The checkpoints directory of the run this one continues, and that run's id.
    resume_checkpoint_dir: Path | None = None
    resume_run_id: str | None = None


def load_manifest(
    path: str | os.PathLike[str], *, environ: dict[str, str] | None = None
) -> Manifest:
    """Read, parse and validate the manifest at ``path``; raise ConfigError with the reason."""
    manifest_path, data = read_yaml_config(path)
    return parse_manifest(data, manifest_path=manifest_path, environ=environ)


def read_yaml_config(path: str | os.PathLike[str]) -> tuple[Path, Any]:
    """The absolute path of a YAML config file and what it parses to; ConfigError otherwise.

    The trainer's manifest and the evaluation engine's config are read by this one function, so
    both refuse a missing, unreadable or malformed file in the same words.
    """
    config_path = Path(path).absolute()
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {config_path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory: {config_path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {config_path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config is not valid YAML: {first_line}") from None
    return config_path, data


def parse_manifest(
    data: Any, *, manifest_path: Path, environ: dict[str, str] | None = None
) -> Manifest:
    """Validate an already-parsed manifest mapping."""
    if not isinstance(data, dict):
        raise ConfigError("config must be a YAML mapping")
    _no_unknown_keys(data, _TOP_LEVEL, "config")
    _expect_equal(data, "version", "1.0", where="config")
    _expect_equal(data, "runner", "tunix", where="config")
    _expect_equal(data, "mode", "sft", where="config")
    sections = {name: _section(data, name) for name in _SECTIONS}

    model_id = _string(sections["model"], "model_id", "model", max_length=256)
    _expect_equal(sections["dataset"], "format", "tunix_sft", where="dataset")
    dataset_path = _string(sections["dataset"], "path", "dataset", max_length=4096)

    training = sections["training"]
    learning_rate = _number(training, "learning_rate")
    if not (0.0 < learning_rate <= 1.0):
        raise ConfigError(f"training.learning_rate must be > 0 and <= 1.0, got {learning_rate}")
    num_epochs = _integer(training, "num_epochs", 1, 100)
    batch_size = _integer(training, "batch_size", 1, 512)
    max_seq_length = _integer(training, "max_seq_length", 128, 32768)
    checkpoint_every = None
    if training.get("checkpoint_every_n_steps") is not None:
        checkpoint_every = _integer(training, "checkpoint_every_n_steps", 1, 1_000_000)
    lora = _lora(_optional_section(data, "lora"))

    output_dir_text = _string(sections["output"], "output_dir", "output", max_length=512)

    run_dir = manifest_path.parent
    output_dir = _resolve(run_dir, output_dir_text)
    env = os.environ if environ is None else environ
    check_output_dir(output_dir, environ=env)
    resume = _optional_section(data, "resume")
    resume_dir: Path | None = None
    resume_run_id: str | None = None
    if resume is not None:
        resume_dir = _resolve(run_dir, _string(resume, "checkpoint_dir", "resume", max_length=4096))
        check_output_dir(resume_dir, environ=env, name="resume.checkpoint_dir")
        if resume.get("run_id") is not None:
            resume_run_id = _string(resume, "run_id", "resume", max_length=256)
    return Manifest(
        path=manifest_path,
        run_dir=run_dir,
        model_id=model_id,
        dataset_path=_resolve(run_dir, dataset_path),
        learning_rate=learning_rate,
        num_epochs=num_epochs,
        batch_size=batch_size,
        max_seq_length=max_seq_length,
        output_dir=output_dir,
        model_roots=model_roots(env),
        checkpoint_every_n_steps=checkpoint_every,
        lora=lora,
        resume_checkpoint_dir=resume_dir,
        resume_run_id=resume_run_id,
    )


def output_roots(environ: dict[str, str] | os._Environ[str]) -> list[Path] | None:
    """The allowed output roots from TUNIX_OUTPUT_ROOTS, or None when any directory is allowed."""
    raw = environ.get(OUTPUT_ROOTS_ENV, "")
    if not raw.strip():
        return None
    return _roots(raw, OUTPUT_ROOTS_ENV)


def model_roots(environ: dict[str, str] | os._Environ[str]) -> list[Path] | None:
    """The roots checkpoints load from (TUNIX_MODEL_ROOTS); None when it is unset.

    Set but empty allows no directory: the registry always sets it.
    """
    raw = environ.get(MODEL_ROOTS_ENV)
    return None if raw is None else _roots(raw, MODEL_ROOTS_ENV)


def _roots(raw: str, name: str) -> list[Path]:
    entries = [entry for entry in raw.split(os.pathsep) if entry.strip()]
    roots = []
    for entry in entries:
        root = Path(entry.strip()).expanduser()
        if not root.is_absolute():
            raise ConfigError(f"{name} entries must be absolute paths, got {entry!r}")
        roots.append(Path(os.path.realpath(root)))
    return roots


def check_output_dir(
    output_dir: Path,
    *,
    environ: dict[str, str] | os._Environ[str],
    name: str = "output.output_dir",
) -> None:
    """Refuse a directory outside the allowed output roots (symlinks resolved); `name` is the
    manifest field the message names."""
    roots = output_roots(environ)
    if roots is None:
        return
    real = Path(os.path.realpath(output_dir))
    for root in roots:
        if real == root or real.is_relative_to(root):
            return
    allowed = os.pathsep.join(str(root) for root in roots)
    raise ConfigError(
        f"{name} {output_dir} is outside the allowed roots ({OUTPUT_ROOTS_ENV}={allowed})"
    )


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base / path
    return Path(os.path.normpath(path))


def _lora(section: dict[Any, Any] | None) -> LoraSettings | None:
    """The lora section; which target names a family has is checked once the model is known."""
    if section is None:
        return None
    rank = _integer(section, "rank", 1, 256, where="lora")
    alpha = _number(section, "alpha", where="lora")
    if not (0.0 < alpha <= 1024.0):
        raise ConfigError(f"lora.alpha must be > 0 and <= 1024, got {alpha}")
    dropout = _number(section, "dropout", where="lora")
    if not (0.0 <= dropout < 1.0):
        raise ConfigError(f"lora.dropout must be >= 0 and < 1, got {dropout}")
    targets = section.get("target_modules")
    if (
        not isinstance(targets, list)
        or not targets
        or not all(isinstance(name, str) and name.strip() for name in targets)
        or len({name.strip() for name in targets}) != len(targets)
    ):
        raise ConfigError("lora.target_modules must be a non-empty list of unique names")
    export = section.get("export")
    if export not in LORA_EXPORTS:
        raise ConfigError(f"lora.export must be one of {', '.join(LORA_EXPORTS)}, got {export!r}")
    return LoraSettings(
        rank=rank,
        alpha=alpha,
        dropout=dropout,
        target_modules=tuple(name.strip() for name in targets),
        export=str(export),
    )


def _optional_section(data: dict[Any, Any], name: str) -> dict[Any, Any] | None:
    section = data.get(name)
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ConfigError(f"'{name}' must be a mapping")
    _no_unknown_keys(section, _OPTIONAL_SECTIONS[name], name)
    return section


def _section(data: dict[Any, Any], name: str) -> dict[Any, Any]:
    if name not in data:
        raise ConfigError(f"config is missing the '{name}' section")
    section = data[name]
    if not isinstance(section, dict):
        raise ConfigError(f"'{name}' must be a mapping")
    _no_unknown_keys(section, _SECTIONS[name], name)
    return section


def _no_unknown_keys(mapping: dict[Any, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(key) for key in mapping if key not in allowed)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown)}")


def _expect_equal(mapping: dict[Any, Any], key: str, expected: str, *, where: str) -> None:
    name = key if where == "config" else f"{where}.{key}"
    if key not in mapping:
        raise ConfigError(f"{name} is required (expected {expected!r})")
    if mapping[key] != expected:
        raise ConfigError(f"{name} must be {expected!r}, got {mapping[key]!r}")


def _string(mapping: dict[Any, Any], key: str, where: str, *, max_length: int) -> str:
    name = f"{where}.{key}"
    if key not in mapping or mapping[key] is None:
        raise ConfigError(f"{name} is required")
    value = mapping[key]
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise ConfigError(f"{name} must not be empty")
    if len(value) > max_length:
        raise ConfigError(f"{name} must be at most {max_length} characters")
    if "\x00" in value:
        raise ConfigError(f"{name} must not contain NUL characters")
    return value


def _number(mapping: dict[Any, Any], key: str, *, where: str = "training") -> float:
    name = f"{where}.{key}"
    if key not in mapping:
        raise ConfigError(f"{name} is required")
    value = mapping[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return number


def _integer(
    mapping: dict[Any, Any], key: str, low: int, high: int, *, where: str = "training"
) -> int:
    name = f"{where}.{key}"
    if key not in mapping:
        raise ConfigError(f"{name} is required")
    value = mapping[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if not (low <= value <= high):
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value
