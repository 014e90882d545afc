"""Reading and validating the evaluation config (layout in docs/evaluation.md).

Validated strictly, with the trainer's rules and messages: unknown keys are refused, every value
is checked, relative paths resolve against the config's directory. Nothing here imports JAX.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluations.metrics import METRICS
from runs.trainer.errors import ConfigError
from runs.trainer.manifest import OUTPUT_ROOTS_ENV, model_roots, output_roots, read_yaml_config

_REQUIRED: dict[str, set[str]] = {
    "model": {"model_id"},
    "dataset": {"format", "path"},
    "output": {"dir"},
}
_GENERATION = {"max_new_tokens", "temperature", "seed", "batch_size"}
_TOP_LEVEL = {"version", "generation", "metrics", *_REQUIRED}

DEFAULT_MAX_NEW_TOKENS = 64
DEFAULT_TEMPERATURE = 0.0
DEFAULT_SEED = 0
DEFAULT_BATCH_SIZE = 8
MAX_SEED = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Generation:
    """How answers are generated: temperature 0 is greedy decoding."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = DEFAULT_TEMPERATURE
    seed: int = DEFAULT_SEED
    batch_size: int = DEFAULT_BATCH_SIZE

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "batch_size": self.batch_size,
        }


@dataclass(frozen=True, slots=True)
class EvalConfig:
    """A validated config, with its paths resolved against the config's directory."""

    path: Path
    config_dir: Path
    model_id: str
    dataset_path: Path
    generation: Generation
    metrics: tuple[str, ...]
    output_dir: Path
    # Where checkpoint directories may load from (TUNIX_MODEL_ROOTS); None: anywhere.
    model_roots: list[Path] | None = None


def load_config(
    path: str | os.PathLike[str], *, environ: dict[str, str] | None = None
) -> EvalConfig:
    """Read, parse and validate the config at ``path``; raise ConfigError with the reason."""
    config_path, data = read_yaml_config(path)
    return parse_config(data, config_path=config_path, environ=environ)


def parse_config(
    data: Any, *, config_path: Path, environ: dict[str, str] | None = None
) -> EvalConfig:
    """Validate an already-parsed config mapping."""
    if not isinstance(data, dict):
        raise ConfigError("config must be a YAML mapping")
    _no_unknown_keys(data, _TOP_LEVEL, "config")
    if "version" not in data:
        raise ConfigError("version is required (expected '1.0')")
    if data["version"] != "1.0":
        raise ConfigError(f"version must be '1.0', got {data['version']!r}")
    sections = {name: _section(data, name, _REQUIRED[name]) for name in _REQUIRED}

    model_id = _string(sections["model"], "model_id", "model", max_length=256)
    dataset = sections["dataset"]
    if dataset.get("format") != "tunix_sft":
        raise ConfigError(f"dataset.format must be 'tunix_sft', got {dataset.get('format')!r}")
    dataset_path = _string(dataset, "path", "dataset", max_length=4096)
    output_dir_text = _string(sections["output"], "dir", "output", max_length=4096)

    generation = _generation(data.get("generation"))
    metrics = _metrics(data.get("metrics"))

    config_dir = config_path.parent
    output_dir = _resolve(config_dir, output_dir_text)
    env = os.environ if environ is None else environ
    _check_output_dir(output_dir, env)
    return EvalConfig(
        path=config_path,
        config_dir=config_dir,
        model_id=model_id,
        dataset_path=_resolve(config_dir, dataset_path),
        generation=generation,
        metrics=metrics,
        output_dir=output_dir,
        model_roots=model_roots(env),
    )


def _generation(section: Any) -> Generation:
    if section is None:
        return Generation()
    if not isinstance(section, dict):
        raise ConfigError("'generation' must be a mapping")
    _no_unknown_keys(section, _GENERATION, "generation")
    max_new_tokens = _integer(section, "max_new_tokens", 1, 4096, DEFAULT_MAX_NEW_TOKENS)
    batch_size = _integer(section, "batch_size", 1, 256, DEFAULT_BATCH_SIZE)
    seed = _integer(section, "seed", 0, MAX_SEED, DEFAULT_SEED)
    temperature = section.get("temperature", DEFAULT_TEMPERATURE)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise ConfigError(f"generation.temperature must be a number, got {temperature!r}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ConfigError(f"generation.temperature must be finite and >= 0, got {temperature!r}")
    return Generation(
        max_new_tokens=max_new_tokens,
        temperature=float(temperature),
        seed=seed,
        batch_size=batch_size,
    )


def _metrics(value: Any) -> tuple[str, ...]:
    known = ", ".join(sorted(METRICS))
    if value is None:
        raise ConfigError(f"metrics is required: a list of metric names ({known})")
    if not isinstance(value, list) or not value or not all(isinstance(n, str) for n in value):
        raise ConfigError(f"metrics must be a non-empty list of metric names ({known})")
    unknown = [name for name in value if name not in METRICS]
    if unknown:
        raise ConfigError(
            f"unknown metric(s) {', '.join(repr(n) for n in unknown)}: known metrics are {known}"
        )
    if len(set(value)) != len(value):
        raise ConfigError("metrics must not repeat a name")
    return tuple(value)


def _section(data: dict[Any, Any], name: str, allowed: set[str]) -> dict[Any, Any]:
    if name not in data:
        raise ConfigError(f"config is missing the '{name}' section")
    section = data[name]
    if not isinstance(section, dict):
        raise ConfigError(f"'{name}' must be a mapping")
    _no_unknown_keys(section, allowed, name)
    return section


def _no_unknown_keys(mapping: dict[Any, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(key) for key in mapping if key not in allowed)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown)}")


def _string(mapping: dict[Any, Any], key: str, where: str, *, max_length: int) -> str:
    name = f"{where}.{key}"
    value = mapping.get(key)
    if value is None:
        raise ConfigError(f"{name} is required")
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


def _integer(mapping: dict[Any, Any], key: str, low: int, high: int, default: int) -> int:
    name = f"generation.{key}"
    value = mapping.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if not (low <= value <= high):
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _check_output_dir(output_dir: Path, environ: dict[str, str] | os._Environ[str]) -> None:
    """Refuse an output directory outside TUNIX_OUTPUT_ROOTS when that is set, symlinks resolved
    (the trainer's rule for its output_dir)."""
    roots = output_roots(environ)
    if roots is None:
        return
    real = Path(os.path.realpath(output_dir))
    if not any(real == root or real.is_relative_to(root) for root in roots):
        allowed = os.pathsep.join(str(root) for root in roots)
        raise ConfigError(
            f"output.dir {output_dir} is outside the allowed roots ({OUTPUT_ROOTS_ENV}={allowed})"
        )


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base / path
    return Path(os.path.normpath(path))
