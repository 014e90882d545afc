"""Model resolution and loading.

`model_id` is resolved without importing JAX (so an unknown id fails in milliseconds):

- `tiny-qwen3`, `tiny-gemma3`, `tiny-llama3`: built-in two-layer configurations with random
  weights and our byte tokenizer;
- `random-qwen3-0.6b` ... `random-qwen3-32b` (RANDOM_PRESETS): the architecture of Tunix's Qwen3
  presets (`ModelConfig.qwen3_0p6b()` and so on) with random weights and our byte tokenizer, to
  measure what training a real-sized model costs without downloading one;
- a checkpoint directory (absolute, or relative to the manifest's directory) holding a Hugging
  Face style `config.json`, `*.safetensors` weights and a tokenizer, for the families below; its
  weights are read with Tunix's own safetensors loaders (`tunix.models.<family>.params`);
- a hub id `owner/name` goes through Tunix's `AutoModel.from_pretrained` (Hugging Face source).

After training, Qwen3 and Llama3 models are exported in the same directory layout, so a trained
run's `output_dir/model/` can be the `model_id` of the next run.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runs.trainer.errors import ModelError
from runs.trainer.tokenizer import ByteTokenizer, TextTokenizer, load_tokenizer

TINY_MODELS = ("tiny-qwen3", "tiny-gemma3", "tiny-llama3")
# config.json `model_type` -> Tunix model family (package under tunix.models).
LOCAL_FAMILIES = {"qwen3": "qwen3", "qwen2": "qwen2", "llama": "llama3"}
EXPORTABLE_FAMILIES = ("qwen3", "llama3")
# Tunix model families that AutoModel does not load from the Hugging Face hub.
HUB_UNSUPPORTED_FAMILIES = ("gemma", "gemma1p1", "gemma2", "gemma3")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Where a model comes from: kind is 'tiny', 'random', 'local' or 'hub'."""

    kind: str
    model_id: str
    path: Path | None = None


@dataclass(slots=True)
class LoadedModel:
    model: Any
    tokenizer: TextTokenizer
    family: str
    parameters: int
    # The config.json written on export (Hugging Face field names), when the family is exportable.
    hf_config: dict[str, Any] | None


def resolve_model_id(model_id: str, run_dir: Path, *, roots: list[Path] | None = None) -> ModelSpec:
    """Decide what `model_id` names, without loading anything.

    With `roots` (TUNIX_MODEL_ROOTS), a directory is a checkpoint only strictly inside one
    of them, symlinks followed, and nothing outside is looked at: a path outside is refused,
    a name is read as a hub id (docs/decisions.md#model-roots).
    """
    if model_id in TINY_MODELS:
        return ModelSpec(kind="tiny", model_id=model_id)
    if model_id in RANDOM_PRESETS:
        return ModelSpec(kind="random", model_id=model_id)
    looks_like_path = model_id.startswith(("/", "./", "../", "~")) or model_id in {".", ".."}
    candidate = Path(model_id).expanduser()
    if not candidate.is_absolute():
        candidate = run_dir / candidate
    allowed = True
    if roots is not None:
        # The real path is what gets loaded, so a link swapped after the check changes nothing.
        candidate = Path(os.path.realpath(candidate))
        allowed = any(candidate != root and candidate.is_relative_to(root) for root in roots)
        if not allowed and looks_like_path:
            raise ModelError(f"checkpoint directory {model_id} is outside the model roots")
    if allowed and candidate.is_dir():
        return ModelSpec(kind="local", model_id=model_id, path=Path(os.path.normpath(candidate)))
    if looks_like_path:
        raise ModelError(f"checkpoint directory not found: {candidate}")
    if _HUB_ID.match(model_id):
        return ModelSpec(kind="hub", model_id=model_id)
    raise ModelError(
        f"unknown model {model_id!r}: use one of {', '.join((*TINY_MODELS, *RANDOM_PRESETS))}, "
        "a checkpoint directory, or a hub id such as google/gemma-2b-it"
    )


def read_checkpoint_config(directory: Path) -> tuple[str, dict[str, Any]]:
    """Check a checkpoint directory's layout; return its Tunix family and its config.json."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelError(f"checkpoint directory {directory} has no config.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {config_path}: {exc}") from None
    if not isinstance(config, dict):
        raise ModelError(f"{config_path} is not a JSON object")
    model_type = config.get("model_type")
    family = LOCAL_FAMILIES.get(str(model_type))
    if family is None:
        supported = ", ".join(sorted(LOCAL_FAMILIES))
        raise ModelError(
            f"unsupported model_type {model_type!r} in {config_path} (supported: {supported})"
        )
    if not any(directory.glob("*.safetensors")):
        raise ModelError(f"checkpoint directory {directory} has no *.safetensors weights")
    return family, config


def load_model(spec: ModelSpec, *, download_dir: Path) -> LoadedModel:
    """Build or load the model and its tokenizer (imports JAX and Tunix)."""
    if spec.kind == "tiny":
        return _tiny_model(spec.model_id)
    if spec.kind == "random":
        return _random_model(spec.model_id)
    if spec.kind == "local":
        assert spec.path is not None
        return _local_model(spec.path)
    return _hub_model(spec.model_id, download_dir)


# --- built-in tiny models ------------------------------------------------------------------------

TINY_DIMS = {
    "num_layers": 2,
    "embed_dim": 64,
    "hidden_dim": 128,
    "num_heads": 4,
    "head_dim": 16,
    "num_kv_heads": 2,
    "rope_theta": 10_000,
    "norm_eps": 1e-6,
}


def tiny_config(name: str) -> Any:
    """The Tunix ModelConfig of a built-in tiny model."""
    import jax.numpy as jnp

    vocab = ByteTokenizer.VOCAB_SIZE
    if name == "tiny-qwen3":
        from tunix.models.qwen3 import model as qwen3

        return qwen3.ModelConfig(vocab_size=vocab, use_tied_embedding=True, **TINY_DIMS)
    if name == "tiny-llama3":
        from tunix.models.llama3 import model as llama3

        return llama3.ModelConfig(vocab_size=vocab, weight_tying=True, **TINY_DIMS)
    if name == "tiny-gemma3":
        from tunix.models.gemma3 import model as gemma3

        return gemma3.ModelConfig(
            num_layers=2,
            num_embed=vocab,
            embed_dim=64,
            hidden_dim=128,
            num_heads=4,
            head_dim=16,
            num_kv_heads=2,
            sliding_window_size=64,
            param_dtype=jnp.float32,
        )
    raise ModelError(f"unknown tiny model {name!r}")


def _tiny_model(name: str) -> LoadedModel:
    from flax import nnx

    config = tiny_config(name)
    rngs = nnx.Rngs(params=0)
    family = name.removeprefix("tiny-")
    if family == "qwen3":
        from tunix.models.qwen3 import model as qwen3

        model: Any = qwen3.Qwen3(config, rngs=rngs)
    elif family == "llama3":
        from tunix.models.llama3 import model as llama3

        model = llama3.Llama3(config, rngs=rngs)
    else:
        from tunix.models.gemma3 import model as gemma3

        model = gemma3.Gemma3(config, rngs=rngs)
    hf_config = _hf_config_of(family, config) if family in EXPORTABLE_FAMILIES else None
    return LoadedModel(model, ByteTokenizer(), family, count_parameters(model), hf_config)


# --- sizes, for counting parameters without building a model ----------------------------------

# The sizes of a model: enough to count its parameters and estimate its training memory (the
# preflight) without JAX. Field names are Tunix's ModelConfig ones; `tied`: one matrix for the
# input embedding and the output layer.
TINY_SIZES: dict[str, dict[str, Any]] = {
    name: {
        "family": name.removeprefix("tiny-"),
        "num_layers": 2,
        "vocab_size": ByteTokenizer.VOCAB_SIZE,
        "embed_dim": 64,
        "hidden_dim": 128,
        "num_heads": 4,
        "head_dim": 16,
        "num_kv_heads": 2,
        "tied": True,
    }
    for name in TINY_MODELS
}


def _qwen3_sizes(layers: int, embed: int, hidden: int, heads: int, tied: bool) -> dict[str, Any]:
    return {
        "family": "qwen3",
        "num_layers": layers,
        "vocab_size": 151_936,
        "embed_dim": embed,
        "hidden_dim": hidden,
        "num_heads": heads,
        "head_dim": 128,
        "num_kv_heads": 8,
        "tied": tied,
    }


# Random presets: model id -> sizes, equal to Tunix's qwen3.ModelConfig.<RANDOM_PRESET_CONFIGS>()
# (a test compares them).
RANDOM_PRESETS: dict[str, dict[str, Any]] = {
    "random-qwen3-0.6b": _qwen3_sizes(28, 1024, 3072, 16, True),
    "random-qwen3-1.7b": _qwen3_sizes(28, 2048, 6144, 16, True),
    "random-qwen3-4b": _qwen3_sizes(36, 2560, 9728, 32, True),
    "random-qwen3-8b": _qwen3_sizes(36, 4096, 12288, 32, False),
    "random-qwen3-14b": _qwen3_sizes(40, 5120, 17408, 40, False),
    "random-qwen3-32b": _qwen3_sizes(64, 5120, 25600, 64, False),
}
RANDOM_PRESET_CONFIGS = {
    "random-qwen3-0.6b": "qwen3_0p6b",
    "random-qwen3-1.7b": "qwen3_1p7b",
    "random-qwen3-4b": "qwen3_4b",
    "random-qwen3-8b": "qwen3_8b",
    "random-qwen3-14b": "qwen3_14b",
    "random-qwen3-32b": "qwen3_32b",
}


def estimate_parameters(sizes: dict[str, Any]) -> int:
    """The number of parameters of the Tunix model with these sizes (exact for dense models).

    Per layer: the q, k, v, o projections, the three MLP matrices and the RMS norms (two per
    layer, four for Gemma3; Qwen3 and Gemma3 also normalise queries and keys per head, Qwen2 has
    q/k/v biases); plus the embedding, the output layer unless tied, and the final norm.
    """
    family = str(sizes["family"])
    layers, vocab = int(sizes["num_layers"]), int(sizes["vocab_size"])
    embed, hidden = int(sizes["embed_dim"]), int(sizes["hidden_dim"])
    head_dim = int(sizes["head_dim"])
    q = int(sizes["num_heads"]) * head_dim
    kv = int(sizes["num_kv_heads"]) * head_dim
    per_layer = embed * q * 2 + embed * kv * 2 + 3 * embed * hidden
    per_layer += (4 if family == "gemma3" else 2) * embed
    if family in ("qwen3", "gemma3"):
        per_layer += 2 * head_dim
    if family == "qwen2":
        per_layer += q + 2 * kv
    tied = bool(sizes["tied"]) or family.startswith("gemma")
    return layers * per_layer + vocab * embed * (1 if tied else 2) + embed


def sizes_from_hf_config(family: str, config: dict[str, Any]) -> dict[str, Any]:
    """The sizes of a model from its Hugging Face config.json (ModelError when a field lacks)."""
    try:
        heads = int(config["num_attention_heads"])
        embed = int(config["hidden_size"])
        return {
            "family": family,
            "num_layers": int(config["num_hidden_layers"]),
            "vocab_size": int(config["vocab_size"]),
            "embed_dim": embed,
            "hidden_dim": int(config["intermediate_size"]),
            "num_heads": heads,
            "head_dim": int(config.get("head_dim") or embed // heads),
            "num_kv_heads": int(config.get("num_key_value_heads") or heads),
            "tied": bool(config.get("tie_word_embeddings", False)),
        }
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ModelError(f"config.json lacks a usable field: {exc}") from None


# --- random presets ------------------------------------------------------------------------------


def random_config(name: str) -> Any:
    """The Tunix ModelConfig of a random preset (weights in weight_dtype())."""
    import dataclasses

    from tunix.models.qwen3 import model as qwen3

    if name not in RANDOM_PRESET_CONFIGS:
        raise ModelError(f"unknown random preset {name!r}")
    config = getattr(qwen3.ModelConfig, RANDOM_PRESET_CONFIGS[name])()
    dtype = weight_dtype()
    return dataclasses.replace(config, param_dtype=dtype, dtype=dtype)


def _random_model(name: str) -> LoadedModel:
    from flax import nnx
    from tunix.models.qwen3 import model as qwen3

    config = random_config(name)
    model = qwen3.Qwen3(config, rngs=nnx.Rngs(params=0))
    return LoadedModel(
        model, ByteTokenizer(), "qwen3", count_parameters(model), _hf_config_of("qwen3", config)
    )


# --- checkpoint directories ----------------------------------------------------------------------


def _rope_theta(config: dict[str, Any]) -> int:
    theta = config.get("rope_theta")
    if theta is None and isinstance(config.get("rope_parameters"), dict):
        theta = config["rope_parameters"].get("rope_theta")
    return int(theta if theta is not None else 10_000)


def tunix_config_from_hf(family: str, config: dict[str, Any]) -> Any:
    """Map Hugging Face config.json fields onto the Tunix ModelConfig of `family`."""
    sizes = sizes_from_hf_config(family, config)
    try:
        norm_eps = float(config.get("rms_norm_eps", 1e-6))
        rope_theta = _rope_theta(config)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"config.json lacks a usable field: {exc}") from None
    fields: dict[str, Any] = {
        key: sizes[key]
        for key in (
            "num_layers",
            "vocab_size",
            "embed_dim",
            "hidden_dim",
            "num_heads",
            "head_dim",
            "num_kv_heads",
        )
    }
    fields.update(rope_theta=rope_theta, norm_eps=norm_eps)
    tied = sizes["tied"]
    if family == "qwen3":
        from tunix.models.qwen3 import model as qwen3

        return qwen3.ModelConfig(use_tied_embedding=tied, **fields)
    if family == "qwen2":
        from tunix.models.qwen2 import model as qwen2

        return qwen2.ModelConfig(use_tied_embedding=tied, **fields)
    from tunix.models.llama3 import model as llama3

    return llama3.ModelConfig(weight_tying=tied, **fields)


def _local_model(directory: Path) -> LoadedModel:
    family, config = read_checkpoint_config(directory)
    tokenizer = load_tokenizer(directory, config)
    tunix_config = tunix_config_from_hf(family, config)
    if tokenizer.vocab_size > int(config["vocab_size"]):
        raise ModelError(
            f"tokenizer has {tokenizer.vocab_size} tokens "
            f"but config.json vocab_size is {config['vocab_size']}"
        )
    import importlib

    params = importlib.import_module(f"tunix.models.{family}.params")
    try:
        model = params.create_model_from_safe_tensors(
            file_dir=str(directory), config=tunix_config, mesh=None, dtype=weight_dtype()
        )
    except Exception as exc:
        raise ModelError(f"cannot load weights from {directory}: {_one_line(exc)}") from None
    hf_config = dict(config) if family in EXPORTABLE_FAMILIES else None
    return LoadedModel(model, tokenizer, family, count_parameters(model), hf_config)


def weight_dtype() -> Any:
    """float32 on CPU; bfloat16 on an accelerator, where memory is the limit."""
    import jax
    import jax.numpy as jnp

    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16


# --- hub ids -------------------------------------------------------------------------------------


def _hub_model(model_id: str, download_dir: Path) -> LoadedModel:
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE
    if not offline and not os.environ.get("HF_TOKEN"):
        # Tunix would call the interactive huggingface_hub.login(); never prompt in a batch job.
        raise ModelError(
            f"hub model {model_id!r} needs HF_TOKEN and network access; "
            "or download it and set model_id to the checkpoint directory"
        )
    try:
        from tunix.models import automodel, naming
        from tunix.utils import mesh as mesh_lib
    except ImportError as exc:
        raise ModelError(f"cannot import Tunix's model loader: {exc}") from None
    try:
        naming_info = naming.ModelNaming(model_id=model_id)
    except Exception as exc:
        raise ModelError(
            f"hub model {model_id!r} is not a family Tunix supports: {_one_line(exc)}"
        ) from None
    if not offline and naming_info.model_family in HUB_UNSUPPORTED_FAMILIES:
        # Tunix 0.1.7 would download the whole checkpoint first and only then refuse it.
        raise ModelError(
            f"Tunix loads {naming_info.model_family} models from Kaggle or GCS, not from the "
            f"Hugging Face hub ({model_id!r})"
        )
    mesh = mesh_lib.create_mesh((1, 1), ("fsdp", "tp"))
    try:
        model, path = automodel.AutoModel.from_pretrained(
            model_id,
            mesh,
            model_source=automodel.ModelSource.HUGGINGFACE,
            model_download_path=str(download_dir),
        )
    except Exception as exc:
        reason = _one_line(exc)
        if offline or "offline" in reason.lower():
            reason = f"offline (HF_HUB_OFFLINE=1), cannot download: {reason}"
        raise ModelError(f"cannot load hub model {model_id!r}: {reason}") from None
    directory = Path(path or download_dir)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    tokenizer = load_tokenizer(directory, config)
    family = str(naming_info.model_config_category)
    hf_config = config if family in EXPORTABLE_FAMILIES and config else None
    return LoadedModel(model, tokenizer, family, count_parameters(model), hf_config)


# --- helpers -------------------------------------------------------------------------------------


def count_parameters(model: Any) -> int:
    import jax
    from flax import nnx

    state = nnx.state(model, nnx.Param)
    return int(sum(int(leaf.size) for leaf in jax.tree.leaves(state)))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    text = f"{name}: {text}" if text else name
    return text[:500]


def _hf_config_of(family: str, config: Any) -> dict[str, Any]:
    """The Hugging Face config.json of a Qwen3 or Llama3 Tunix config."""
    common: dict[str, Any] = {
        "num_hidden_layers": config.num_layers,
        "vocab_size": config.vocab_size,
        "hidden_size": config.embed_dim,
        "intermediate_size": config.hidden_dim,
        "num_attention_heads": config.num_heads,
        "head_dim": config.head_dim,
        "num_key_value_heads": config.num_kv_heads,
        "rope_theta": config.rope_theta,
        "rms_norm_eps": config.norm_eps,
        "torch_dtype": "float32",
    }
    if family == "qwen3":
        return {
            "model_type": "qwen3",
            "architectures": ["Qwen3ForCausalLM"],
            "tie_word_embeddings": bool(config.use_tied_embedding),
            **common,
        }
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "tie_word_embeddings": bool(config.weight_tying),
        **common,
    }
