"""Export a trained Qwen3/Llama3 model: a directory the trainer (and Hugging Face tools) can load.

Layout (Hugging Face names, so Tunix's own safetensors loaders read it back):

    <dir>/config.json          model_type qwen3 or llama, sizes, tie_word_embeddings
    <dir>/model.safetensors    model.embed_tokens.weight, model.layers.N.mlp.up_proj.weight, ...
    <dir>/byte_tokenizer.json  (or the source checkpoint's tokenizer.json / tokenizer.model)
    <dir>/README.md            the model card: run, dataset, base model, configuration, metrics

A LoRA run exports either the adapter merged into the base weights (the same layout), or the
adapter alone in PEFT's layout: adapter_model.safetensors and adapter_config.json beside the
base's config.json and tokenizer (docs/decisions.md#lora-export).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runs.trainer.lora import LoraSettings
from runs.trainer.models import LoadedModel
from runs.trainer.tokenizer import TextTokenizer

WEIGHTS = "model.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
CONFIG = "config.json"
MODEL_CARD = "README.md"

Transform = Callable[[np.ndarray], np.ndarray]


def _flatten_heads_in(w: np.ndarray) -> np.ndarray:
    # [embed, heads, head_dim] -> torch Linear weight [heads * head_dim, embed]
    return w.reshape(w.shape[0], -1).T


def _flatten_heads_out(w: np.ndarray) -> np.ndarray:
    # [heads, head_dim, embed] -> torch Linear weight [embed, heads * head_dim]
    return w.reshape(-1, w.shape[-1]).T


def _transpose(w: np.ndarray) -> np.ndarray:
    return w.T


def _same(w: np.ndarray) -> np.ndarray:
    return w


_RULES: list[tuple[re.Pattern[str], str, Transform]] = [
    (re.compile(r"embedder\.input_embedding"), "model.embed_tokens.weight", _same),
    (
        re.compile(r"layers\.(\d+)\.attn\.([qkv])_proj\.w"),
        r"model.layers.\1.self_attn.\2_proj.weight",
        _flatten_heads_in,
    ),
    (
        re.compile(r"layers\.(\d+)\.attn\.o_proj\.w"),
        r"model.layers.\1.self_attn.o_proj.weight",
        _flatten_heads_out,
    ),
    (
        re.compile(r"layers\.(\d+)\.attn\.([qk])_norm\.w"),
        r"model.layers.\1.self_attn.\2_norm.weight",
        _same,
    ),
    (
        re.compile(r"layers\.(\d+)\.mlp\.(gate|up|down)_proj\.kernel"),
        r"model.layers.\1.mlp.\2_proj.weight",
        _transpose,
    ),
    (
        re.compile(r"layers\.(\d+)\.(input_layernorm|post_attention_layernorm)\.w"),
        r"model.layers.\1.\2.weight",
        _same,
    ),
    (re.compile(r"final_norm\.w"), "model.norm.weight", _same),
    (re.compile(r"lm_head\.w"), "lm_head.weight", _transpose),
]


def hf_name(key: str) -> tuple[str, Transform]:
    """The Hugging Face name of a Tunix parameter path (`layers.0.attn.q_proj.w`) and the
    transform from the Tunix layout to the torch one."""
    for pattern, template, transform in _RULES:
        if pattern.fullmatch(key):
            return pattern.sub(template, key), transform
    raise ValueError(f"no Hugging Face name for parameter {key}")


def _arrays(model: Any, kind: Any) -> dict[str, np.ndarray]:
    """The model's `kind` parameters (nnx.Param, nnx.LoRAParam), float32, by dotted path."""
    import jax
    from flax import nnx

    state = nnx.state(model, kind).to_pure_dict()
    out: dict[str, np.ndarray] = {}
    for path, value in jax.tree_util.tree_flatten_with_path(state)[0]:
        key = ".".join(str(getattr(part, "key", getattr(part, "idx", part))) for part in path)
        out[key] = np.asarray(value, dtype=np.float32)
    return out


def _to_hf(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in params.items():
        name, transform = hf_name(key)
        out[name] = np.ascontiguousarray(transform(value))
    return out


def hf_state_dict(model: Any) -> dict[str, np.ndarray]:
    """The model's parameters under Hugging Face names and layouts (a model without LoRA)."""
    from flax import nnx

    return _to_hf(_arrays(model, nnx.Param))


# --- LoRA ----------------------------------------------------------------------------------------


# A weight's path -> its adapter (lora_a, lora_b).
Adapters = dict[str, tuple[np.ndarray, np.ndarray]]


def _split_lora(model: Any) -> tuple[dict[str, np.ndarray], Adapters]:
    """The base weights, and the (lora_a, lora_b) pair of each adapted weight by its path
    (qwix puts `<weight>_lora_a` and `<weight>_lora_b` beside the weight)."""
    from flax import nnx

    everything = _arrays(model, nnx.Param)
    adapters = _arrays(model, nnx.LoRAParam)
    base = {key: value for key, value in everything.items() if key not in adapters}
    pairs: Adapters = {}
    for key in adapters:
        if key.endswith("_lora_a"):
            weight = key.removesuffix("_lora_a")
            if weight not in base or weight + "_lora_b" not in adapters:
                raise ValueError(f"LoRA parameter {key} has no base weight or no lora_b")
            pairs[weight] = (adapters[key], adapters[weight + "_lora_b"])
    return base, pairs


def lora_delta(
    lora_a: np.ndarray, lora_b: np.ndarray, scale: float, shape: tuple[int, ...]
) -> np.ndarray:
    """What an adapter adds to its weight, in the weight's Tunix layout.

    qwix shapes lora_a as the weight's input axes then the rank, lora_b as the rank then the
    output axes (Einsum q/k/v `[D, r]` x `[r, N, H]`, o `[N, H, r]` x `[r, D]`, Linear `[in, r]`
    x `[r, out]`), so contracting the rank gives the weight's shape."""
    delta = np.tensordot(lora_a, lora_b, axes=1) * scale
    if delta.shape != shape:
        raise ValueError(
            f"LoRA delta of shape {delta.shape} does not fit a weight of shape {shape}"
        )
    return delta


def merged_state_dict(model: Any, lora: LoraSettings) -> dict[str, np.ndarray]:
    """The base weights with every adapter folded in, under Hugging Face names and layouts."""
    base, pairs = _split_lora(model)
    for weight, (lora_a, lora_b) in pairs.items():
        base[weight] = base[weight] + lora_delta(lora_a, lora_b, lora.scale, base[weight].shape)
    return _to_hf(base)


def _peft_prefix(weight: str) -> str:
    name, _ = hf_name(weight)
    return "base_model.model." + name.removesuffix(".weight")


def adapter_state_dict(model: Any) -> dict[str, np.ndarray]:
    """The adapters under PEFT names and torch layouts.

    `lora_A.weight` is `[r, in_features]` and `lora_B.weight` `[out_features, r]`, so that
    `W_hf + (B @ A) * alpha / r` is the merged Hugging Face weight: the input axes of lora_a and
    the output axes of lora_b flatten in the same order as the weight's own axes do."""
    _, pairs = _split_lora(model)
    out: dict[str, np.ndarray] = {}
    for weight, (lora_a, lora_b) in pairs.items():
        rank = lora_a.shape[-1]
        prefix = _peft_prefix(weight)
        out[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(lora_a.reshape(-1, rank).T)
        out[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(lora_b.reshape(rank, -1).T)
    return out


def load_adapter(model: Any, directory: Path) -> Any:
    """Set the LoRA parameters of `model` (LoRA applied, same rank and targets) from the
    adapter_model.safetensors in `directory`; return the model."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from safetensors.numpy import load_file

    tensors = load_file(str(directory / ADAPTER_WEIGHTS))
    state = nnx.state(model, nnx.LoRAParam)
    pure = state.to_pure_dict()

    def restore(path: Any, value: Any) -> Any:
        key = ".".join(str(getattr(part, "key", getattr(part, "idx", part))) for part in path)
        for suffix, peft in (("_lora_a", "lora_A"), ("_lora_b", "lora_B")):
            if key.endswith(suffix):
                name = f"{_peft_prefix(key.removesuffix(suffix))}.{peft}.weight"
                if name not in tensors:
                    raise ValueError(f"{directory / ADAPTER_WEIGHTS} has no {name}")
                tensor = tensors[name]
                if tensor.size != value.size:
                    raise ValueError(f"{name} is {tensor.shape}, the model's is {value.shape}")
                # The inverse of adapter_state_dict: transpose back, unflatten the axes.
                return jnp.asarray(tensor.T.reshape(value.shape), dtype=value.dtype)
        raise ValueError(f"unexpected LoRA parameter {key}")

    state.replace_by_pure_dict(jax.tree_util.tree_map_with_path(restore, pure))
    nnx.update(model, state)
    return model


def export_checkpoint(
    model: Any, tokenizer: TextTokenizer, hf_config: dict[str, Any], directory: Path
) -> Path:
    """Write config.json, model.safetensors and the tokenizer into `directory`."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = hf_state_dict(model)
    save_file(tensors, str(directory / WEIGHTS), metadata={"format": "pt"})
    _write_base_files(tokenizer, hf_config, directory)
    return directory


def _write_base_files(tokenizer: TextTokenizer, hf_config: dict[str, Any], directory: Path) -> None:
    config = {**hf_config, "torch_dtype": "float32"}
    (directory / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save(directory)


def export_model(
    loaded: LoadedModel, *, lora: LoraSettings | None, directory: Path, card: dict[str, Any]
) -> str:
    """Export a trained model into `directory`; return the format written.

    "full" (no LoRA) and "merged" write model.safetensors, "adapter" writes the PEFT adapter;
    each also writes config.json, the tokenizer and README.md (the model card, from `card`:
    run_id, dataset_key, model_id, configuration, metrics). Only exportable families (a
    Hugging Face config, `loaded.hf_config`) come here."""
    from safetensors.numpy import save_file

    if loaded.hf_config is None:
        raise ValueError(f"the {loaded.family} family is not exportable")
    directory.mkdir(parents=True, exist_ok=True)
    if lora is None:
        export_format = "full"
        tensors = hf_state_dict(loaded.model)
    elif lora.export == "merged":
        export_format = "merged"
        tensors = merged_state_dict(loaded.model, lora)
    else:
        export_format = "adapter"
        tensors = adapter_state_dict(loaded.model)
    if export_format == "adapter":
        assert lora is not None
        save_file(tensors, str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        config = adapter_config(lora, base_model=card.get("model_id"))
        (directory / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    else:
        save_file(tensors, str(directory / WEIGHTS), metadata={"format": "pt"})
    _write_base_files(loaded.tokenizer, loaded.hf_config, directory)
    (directory / MODEL_CARD).write_text(model_card(card, export_format, lora), encoding="utf-8")
    return export_format


def adapter_config(lora: LoraSettings, *, base_model: Any) -> dict[str, Any]:
    """PEFT's adapter_config.json for the adapter (scaling alpha / r, as qwix applies it)."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": None if base_model is None else str(base_model),
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": list(lora.target_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "inference_mode": True,
    }


# --- the model card ------------------------------------------------------------------------------

_HOW_TO_LOAD = {
    "full": "`model.safetensors` holds every weight under Hugging Face names "
    "(`config.json` says the architecture).",
    "merged": "The LoRA adapter is merged into the base weights: `model.safetensors` holds every "
    "weight under Hugging Face names (`config.json` says the architecture).",
    "adapter": "Only the LoRA adapter is here, in PEFT's layout (`adapter_model.safetensors`, "
    "`adapter_config.json`); apply it to the base model named above. `config.json` and the "
    "tokenizer are the base model's.",
}


def model_card(card: dict[str, Any], export_format: str, lora: LoraSettings | None) -> str:
    """README.md: YAML front matter for model hubs, then the run that produced the model."""
    import yaml

    model_id = card.get("model_id")
    tags = ["tunix", "sft"] + (["lora"] if lora is not None else [])
    front: dict[str, Any] = {
        "library_name": "peft" if export_format == "adapter" else "transformers",
        "base_model": None if model_id is None else str(model_id),
        "tags": tags,
    }
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip("\n"),
        "---",
        "",
        f"# {_text(model_id)} fine-tuned with Tunix SFT",
        "",
        f"- Run: `{_text(card.get('run_id'))}`",
        f"- Dataset: `{_text(card.get('dataset_key'))}`",
        f"- Base model: `{_text(model_id)}`",
        f"- Export: {export_format}",
        "",
        _HOW_TO_LOAD[export_format],
        "",
    ]
    configuration = dict(card.get("configuration") or {})
    if lora is not None:
        configuration.setdefault("lora", lora.as_dict())
    for title, values in (("Configuration", configuration), ("Final metrics", card.get("metrics"))):
        lines += [f"## {title}", ""]
        rows = _flatten(values or {})
        if rows:
            lines += ["| Key | Value |", "| --- | --- |"]
            lines += [f"| {_cell(key)} | {_cell(_text(value))} |" for key, value in rows]
        else:
            lines.append("None recorded.")
        lines.append("")
    return "\n".join(lines)


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows += _flatten(value, f"{name}.")
        else:
            rows.append((name, value))
    return rows


def _text(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, list | tuple):
        return ", ".join(_text(item) for item in value) or "none"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _cell(text: str) -> str:
    """A value in a Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")
