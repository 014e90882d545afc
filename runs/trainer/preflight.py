"""The preflight: everything about a run that can be checked before JAX is imported.

`preflight(manifest, records)` resolves the model, reads its configuration, loads its tokenizer,
tokenises every record, checks the LoRA target modules and estimates the memory training needs,
raising the trainer's own errors (ModelError, DatasetError, ConfigError) with the reason the
trainer prints. The trainer calls it first thing; the registry's dry-run calls the same function
in its own process, so a dry-run fails for the same reason, in the same words, as the run would
(docs/decisions.md#preflight). Nothing here imports JAX or Django.

The memory estimate (`estimate_memory`), in bytes, is deliberately simple:

- parameters: P x b, with b = 4 on CPU (float32 weights) and 2 on an accelerator (bfloat16);
- optimizer: T x (b + 8): the gradients of the T trainable parameters (T = P for full-weight
  SFT; for LoRA, rank x (in + out) per targeted matrix per layer) plus AdamW's two float32
  moments;
- activations: batch x length x (layers x embed x 34 + vocab x 8): about 34 bytes per layer,
  embedding unit and token kept for the backward pass, and the float32 logits with their
  gradient;
- total: the sum, compared with the memory the device offers.
"""

from __future__ import annotations

import importlib
import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runs.trainer import data
from runs.trainer.errors import ModelError
from runs.trainer.models import (
    RANDOM_PRESETS,
    TINY_SIZES,
    ModelSpec,
    estimate_parameters,
    read_checkpoint_config,
    resolve_model_id,
    sizes_from_hf_config,
)
from runs.trainer.tokenizer import ByteTokenizer, TextTokenizer, load_tokenizer

GIB = 1024**3
# Bytes per activation value kept per layer, embedding unit and token (see the module docstring).
ACTIVATION_BYTES_PER_LAYER_UNIT = 34
# Bytes per vocabulary entry and token: float32 logits and their gradient.
LOGIT_BYTES_PER_ENTRY = 8
ADAM_STATE_BYTES = 8
HUB_DOWNLOAD_SUBDIR = "hub_download"
_TRUE = {"1", "true", "yes", "on"}
# config.json `model_type` -> Tunix family, for hub models (checkpoint directories use
# models.LOCAL_FAMILIES, the families the trainer loads from a directory).
_HUB_FAMILIES = {
    "qwen3": "qwen3",
    "qwen2": "qwen2",
    "llama": "llama3",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
}


@dataclass(slots=True)
class DeviceInfo:
    """Where the run trains: platform ("cpu", "gpu", "tpu", "accelerator") and its memory."""

    platform: str
    memory_bytes: int | None
    label: str

    def as_dict(self) -> dict[str, Any]:
        return {"platform": self.platform, "memory_bytes": self.memory_bytes, "label": self.label}


def host_device(meminfo: Path = Path("/proc/meminfo")) -> DeviceInfo:
    """This machine's CPU, with its MemAvailable (None when it cannot be read: no check)."""
    memory: int | None = None
    try:
        for line in meminfo.read_text(encoding="ascii").splitlines():
            name, _, value = line.partition(":")
            if name == "MemAvailable":
                parts = value.split()
                memory = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
                break
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        memory = None
    return DeviceInfo(platform="cpu", memory_bytes=memory, label="this machine (MemAvailable)")


@dataclass(slots=True)
class PreflightReport:
    spec: ModelSpec
    family: str
    tokenizer: TextTokenizer
    examples: list[data.Example]
    train_examples: list[data.Example]
    eval_examples: list[data.Example]
    length: int
    truncated: int
    parameters: int
    trainable_parameters: int
    # {"parameters", "optimizer", "activations", "total"}, bytes.
    memory: dict[str, int]
    device: DeviceInfo
    # What the estimate was made from, so memory_check can redo it for another device.
    sizes: dict[str, Any] | None = None
    batch_size: int = 1
    max_seq_length: int = 0
    lora_matrices: dict[str, tuple[int, int]] = field(default_factory=dict)
    lora_rank: int | None = None

    @property
    def longest(self) -> int:
        """The longest example in tokens, before truncation."""
        return max((example.total_tokens for example in self.examples), default=0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.spec.model_id,
            "model_source": self.spec.kind,
            "family": self.family,
            "parameters": self.parameters,
            "trainable_parameters": self.trainable_parameters,
            "vocab_size": self.tokenizer.vocab_size,
            "examples": len(self.examples),
            "train_examples": len(self.train_examples),
            "eval_examples": len(self.eval_examples),
            "truncated_examples": self.truncated,
            "longest_example_tokens": self.longest,
            "sequence_length": self.length,
            "max_seq_length": self.max_seq_length,
            "batch_size": self.batch_size,
            "memory": dict(self.memory),
            "device": self.device.as_dict(),
        }

    def lines(self) -> list[str]:
        trainable = (
            f", {self.trainable_parameters:,} trainable (LoRA)"
            if self.trainable_parameters != self.parameters
            else ""
        )
        memory = self.memory
        available = (
            f"{_gib(self.device.memory_bytes)} available on {self.device.label}"
            if self.device.memory_bytes is not None
            else f"{self.device.label}: available memory unknown, not checked"
        )
        return [
            f"Model: {self.spec.model_id} ({self.spec.kind}, family {self.family})",
            f"Parameters: {self.parameters:,}{trainable}",
            f"Tokenizer: {type(self.tokenizer).__name__}, vocabulary {self.tokenizer.vocab_size:,}",
            f"Dataset: {len(self.examples)} examples ({len(self.train_examples)} train / "
            f"{len(self.eval_examples)} eval), {self.truncated} truncated, "
            f"longest {self.longest} tokens",
            f"Sequence length: {self.length} (max_seq_length {self.max_seq_length})",
            f"Memory estimate: {_gib(memory['total'])} (parameters {_gib(memory['parameters'])}, "
            f"optimizer {_gib(memory['optimizer'])}, activations {_gib(memory['activations'])})"
            f" vs {available}",
        ]


def preflight(
    manifest: Any,
    records: Sequence[data.Record],
    *,
    device: DeviceInfo | None = None,
    hub_offline: bool | None = None,
) -> PreflightReport:
    """Check a run before training; raise the TrainerError the trainer would end with.

    `manifest` is a runs.trainer.manifest.Manifest; `records` its dataset's records. `device`
    defaults to host_device(). `hub_offline` (default: HF_HUB_OFFLINE) says whether a hub model
    must already be in this machine's cache.
    """
    device = device if device is not None else host_device()
    spec = resolve_model_id(manifest.model_id, manifest.run_dir, roots=manifest.model_roots)
    family, sizes, tokenizer, directory = _model_of(spec, manifest, hub_offline=hub_offline)

    max_seq_length = int(manifest.max_seq_length)
    examples = data.encode_records(records, tokenizer, max_seq_length)
    truncated = sum(example.truncated for example in examples)
    train_examples, eval_examples = data.split_train_eval(examples)
    length = data.padded_length(examples, max_seq_length)

    lora = getattr(manifest, "lora", None)
    lora_matrices: dict[str, tuple[int, int]] = {}
    if lora is not None:
        # Imported here: runs.trainer.lora is only needed for LoRA runs.
        lora_lib = importlib.import_module("runs.trainer.lora")
        lora_lib.lora_check(lora, family)
        if sizes is not None:
            shapes = lora_shapes(sizes)
            lora_matrices = {name: shapes[name] for name in lora.target_modules if name in shapes}

    if sizes is not None:
        parameters = estimate_parameters(sizes)
    else:
        parameters = _safetensors_parameters(directory)
    trainable = parameters
    if lora is not None:
        trainable = lora_parameters(sizes, lora_matrices, int(lora.rank))
    report = PreflightReport(
        spec=spec,
        family=family,
        tokenizer=tokenizer,
        examples=examples,
        train_examples=train_examples,
        eval_examples=eval_examples,
        length=length,
        truncated=truncated,
        parameters=parameters,
        trainable_parameters=trainable,
        memory={},
        device=device,
        sizes=sizes,
        batch_size=int(manifest.batch_size),
        max_seq_length=max_seq_length,
        lora_matrices=lora_matrices,
        lora_rank=int(lora.rank) if lora is not None else None,
    )
    report.memory = _estimate_for(report, device.platform)
    memory_check(report, device)
    return report


def memory_check(report_or_estimate: PreflightReport | dict[str, int], device: DeviceInfo) -> None:
    """Raise ModelError "model does not fit" when the estimate exceeds the device's memory.

    Given a report, the estimate is made again for `device`'s platform (weights are 2 bytes
    each on an accelerator, 4 on CPU); given an estimate dict, it is compared as it is.
    """
    if isinstance(report_or_estimate, PreflightReport):
        estimate = _estimate_for(report_or_estimate, device.platform)
    else:
        estimate = report_or_estimate
    if device.memory_bytes is None or estimate["total"] <= device.memory_bytes:
        return
    raise ModelError(
        f"model does not fit: estimated {_gib(estimate['total'])} "
        f"(parameters {_gib(estimate['parameters'])}, optimizer {_gib(estimate['optimizer'])}, "
        f"activations {_gib(estimate['activations'])}) > {_gib(device.memory_bytes)} available "
        f"on {device.label}"
    )


def bytes_per_parameter(platform: str) -> int:
    return 4 if platform == "cpu" else 2


def estimate_memory(
    *,
    parameters: int,
    trainable_parameters: int,
    sizes: dict[str, Any] | None,
    batch_size: int,
    length: int,
    platform: str,
) -> dict[str, int]:
    """The training memory estimate in bytes (formula in the module docstring)."""
    width = bytes_per_parameter(platform)
    weights = parameters * width
    optimizer = trainable_parameters * (width + ADAM_STATE_BYTES)
    activations = 0
    if sizes is not None:
        per_token = (
            int(sizes["num_layers"]) * int(sizes["embed_dim"]) * ACTIVATION_BYTES_PER_LAYER_UNIT
            + int(sizes["vocab_size"]) * LOGIT_BYTES_PER_ENTRY
        )
        activations = batch_size * length * per_token
    return {
        "parameters": weights,
        "optimizer": optimizer,
        "activations": activations,
        "total": weights + optimizer + activations,
    }


def lora_shapes(sizes: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(in, out) of each LoRA-targetable matrix of one layer, by module name."""
    embed, hidden = int(sizes["embed_dim"]), int(sizes["hidden_dim"])
    q = int(sizes["num_heads"]) * int(sizes["head_dim"])
    kv = int(sizes["num_kv_heads"]) * int(sizes["head_dim"])
    return {
        "q_proj": (embed, q),
        "k_proj": (embed, kv),
        "v_proj": (embed, kv),
        "o_proj": (q, embed),
        "gate_proj": (embed, hidden),
        "up_proj": (embed, hidden),
        "down_proj": (hidden, embed),
        # Gemma's attention einsums.
        "q_einsum": (embed, q),
        "kv_einsum": (embed, 2 * kv),
        "qkv_einsum": (embed, q + 2 * kv),
        "attn_vec_einsum": (q, embed),
    }


def lora_parameters(
    sizes: dict[str, Any] | None, matrices: dict[str, tuple[int, int]], rank: int
) -> int:
    """rank x (in + out) per targeted matrix per layer (0 when the sizes are unknown)."""
    if sizes is None:
        return 0
    per_layer = sum(rank * (n_in + n_out) for n_in, n_out in matrices.values())
    return int(sizes["num_layers"]) * per_layer


# --- the model's configuration and tokenizer -----------------------------------------------------


def _model_of(
    spec: ModelSpec, manifest: Any, *, hub_offline: bool | None
) -> tuple[str, dict[str, Any] | None, TextTokenizer, Path | None]:
    """(family, sizes or None, tokenizer, directory) of the resolved model; no weights read."""
    if spec.kind in ("tiny", "random"):
        preset = (TINY_SIZES if spec.kind == "tiny" else RANDOM_PRESETS)[spec.model_id]
        return str(preset["family"]), preset, ByteTokenizer(), None
    if spec.kind == "local":
        assert spec.path is not None
        directory = spec.path
        family, config = read_checkpoint_config(directory)
    else:
        directory = _hub_directory(spec.model_id, manifest, hub_offline=hub_offline)
        config = _read_config(directory / "config.json")
        model_type = str(config.get("model_type"))
        family = _HUB_FAMILIES.get(model_type, model_type)
    sizes, tokenizer = _config_and_tokenizer(directory, family, config)
    return family, sizes, tokenizer, directory


def _config_and_tokenizer(
    directory: Path, family: str, config: dict[str, Any]
) -> tuple[dict[str, Any] | None, TextTokenizer]:
    tokenizer = load_tokenizer(directory, config)
    vocab = config.get("vocab_size")
    if isinstance(vocab, int) and tokenizer.vocab_size > vocab:
        raise ModelError(
            f"tokenizer has {tokenizer.vocab_size} tokens but config.json vocab_size is {vocab}"
        )
    try:
        sizes: dict[str, Any] | None = sizes_from_hf_config(family, config)
    except ModelError:
        sizes = None
    return sizes, tokenizer


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path} is not a JSON object")
    return config


_HUB_SMALL_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def _hub_directory(model_id: str, manifest: Any, *, hub_offline: bool | None) -> Path:
    """The directory holding a hub model's config.json: the run's download or the HF cache."""
    downloaded = Path(manifest.output_dir) / HUB_DOWNLOAD_SUBDIR
    if (downloaded / "config.json").is_file():
        return downloaded
    cached = _hf_cached_config(model_id)
    if cached is not None:
        return cached.parent
    if hub_offline is None:
        hub_offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE
    if hub_offline:
        raise ModelError(
            f"hub model {model_id!r} is not in this machine's cache (HF_HUB_OFFLINE): "
            "download it and set model_id to the checkpoint directory"
        )
    if not os.environ.get("HF_TOKEN"):
        raise ModelError(
            f"hub model {model_id!r} needs HF_TOKEN and network access; "
            "or download it and set model_id to the checkpoint directory"
        )
    # Only the small files: the weights are Tunix's to download when the model is loaded.
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - part of the tunix extra
        raise ModelError(f"cannot look up hub model {model_id!r}: {exc}") from None
    directory: Path | None = None
    for name in _HUB_SMALL_FILES:
        try:
            path = Path(hf_hub_download(repo_id=model_id, filename=name))
        except Exception as exc:
            if name == "config.json":
                reason = " ".join(str(exc).split())[:300]
                raise ModelError(f"cannot load hub model {model_id!r}: {reason}") from None
            continue
        directory = directory or path.parent
    assert directory is not None
    return directory


def _hf_cached_config(model_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - part of the tunix extra
        return None
    try:
        found = try_to_load_from_cache(repo_id=model_id, filename="config.json")
    except Exception:
        return None
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _safetensors_parameters(directory: Path | None) -> int:
    """Sum of the tensor sizes in the *.safetensors headers of a model's directory."""
    if directory is None:
        return 0
    total = 0
    for path in sorted(directory.glob("*.safetensors")):
        total += safetensors_parameters(path)
    return total


def safetensors_parameters(path: Path) -> int:
    """The number of values in a safetensors file, read from its header only."""
    try:
        with path.open("rb") as handle:
            (header_length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_length))
    except (OSError, ValueError, struct.error) as exc:
        raise ModelError(f"cannot read the safetensors header of {path}: {exc}") from None
    total = 0
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        count = 1
        for dim in entry.get("shape", []):
            count *= int(dim)
        total += count
    return total


def _estimate_for(report: PreflightReport, platform: str) -> dict[str, int]:
    return estimate_memory(
        parameters=report.parameters,
        trainable_parameters=report.trainable_parameters,
        sizes=report.sizes,
        batch_size=report.batch_size,
        length=report.length,
        platform=platform,
    )


def _gib(value: int | None) -> str:
    """A byte count for people: GiB, or MiB below one GiB."""
    if value is None:
        return "?"
    if value < GIB:
        return f"{value / 1024**2:.1f} MiB"
    return f"{value / GIB:.1f} GiB"
