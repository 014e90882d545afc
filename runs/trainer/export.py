"""Export a trained Qwen3/Llama3 model as a checkpoint directory the trainer can load again.

Layout (Hugging Face names, so Tunix's own safetensors loaders read it back):

    <dir>/config.json          model_type qwen3 or llama, sizes, tie_word_embeddings
    <dir>/model.safetensors    model.embed_tokens.weight, model.layers.N.mlp.up_proj.weight, ...
    <dir>/byte_tokenizer.json  (or the source checkpoint's tokenizer.json / tokenizer.model)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runs.trainer.tokenizer import TextTokenizer

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


def hf_state_dict(model: Any) -> dict[str, np.ndarray]:
    """The model's parameters under Hugging Face names and layouts."""
    import jax
    from flax import nnx

    state = nnx.state(model, nnx.Param).to_pure_dict()
    out: dict[str, np.ndarray] = {}
    for path, value in jax.tree_util.tree_flatten_with_path(state)[0]:
        key = ".".join(str(getattr(part, "key", getattr(part, "idx", part))) for part in path)
        for pattern, template, transform in _RULES:
            if pattern.fullmatch(key):
                name = pattern.sub(template, key)
                out[name] = np.ascontiguousarray(transform(np.asarray(value, dtype=np.float32)))
                break
        else:
            raise ValueError(f"no Hugging Face name for parameter {key}")
    return out


def export_checkpoint(
    model: Any, tokenizer: TextTokenizer, hf_config: dict[str, Any], directory: Path
) -> Path:
    """Write config.json, model.safetensors and the tokenizer into `directory`."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = hf_state_dict(model)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config = {**hf_config, "torch_dtype": "float32"}
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save(directory)
    return directory
