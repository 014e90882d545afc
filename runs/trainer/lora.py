"""LoRA for SFT runs: which modules of each family take an adapter, and applying it as Tunix does.

Nothing here imports JAX at module level, so the manifest parser and the preflight can use the
settings and the target lists cheaply; `apply_lora` and `trainable_parameters` import it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from runs.trainer.errors import ConfigError

_DECODER_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Tunix model family -> the names of its modules LoRA may adapt (the last component of the
# module's path in the Tunix model).
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "qwen3": _DECODER_TARGETS,
    "qwen2": _DECODER_TARGETS,
    "llama3": _DECODER_TARGETS,
    "gemma3": (
        "q_einsum",
        "kv_einsum",
        "qkv_einsum",
        "attn_vec_einsum",
        "gate_proj",
        "up_proj",
        "down_proj",
    ),
}
# How a LoRA run's model is exported: the adapter folded into the base weights, or the adapter
# alone (PEFT layout).
LORA_EXPORTS = ("merged", "adapter")


@dataclass(frozen=True, slots=True)
class LoraSettings:
    """The manifest's lora section, validated."""

    rank: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]
    export: str

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    @property
    def scale(self) -> float:
        """The factor of the adapter's product: alpha / rank."""
        return self.alpha / self.rank


def lora_check(settings: LoraSettings, family: str) -> None:
    """Refuse target modules the family does not have (ConfigError naming them)."""
    allowed = LORA_TARGETS.get(family)
    if allowed is None:
        raise ConfigError(f"lora: LoRA is not supported for the {family} family")
    unknown = [name for name in settings.target_modules if name not in allowed]
    if unknown:
        raise ConfigError(
            f"lora.target_modules: unknown for {family}: {', '.join(unknown)} "
            f"(allowed: {', '.join(allowed)})"
        )


def module_path_pattern(target_modules: tuple[str, ...]) -> str:
    """The regex qwix matches module paths against: a target as the path's last component."""
    names = "|".join(re.escape(name) for name in target_modules)
    return rf"(.*/)?({names})"


def apply_lora(model: Any, settings: LoraSettings) -> Any:
    """The model with LoRA adapters on the target modules (qwix, as Tunix's own scripts do)."""
    import qwix
    from flax import nnx

    provider = qwix.LoraProvider(
        module_path=module_path_pattern(settings.target_modules),
        rank=settings.rank,
        alpha=settings.alpha,
        dropout=settings.dropout,
    )
    return qwix.apply_lora_to_model(model, provider, rngs=nnx.Rngs(1), **model.get_model_input())


def trainable_parameters(model: Any) -> int:
    """What training updates: the LoRA parameters when the model has adapters, else every
    parameter."""
    import jax
    from flax import nnx
    from tunix.sft import utils

    kind = nnx.LoRAParam if utils.is_lora_enabled(model) else nnx.Param
    return int(sum(int(leaf.size) for leaf in jax.tree.leaves(nnx.state(model, kind))))
