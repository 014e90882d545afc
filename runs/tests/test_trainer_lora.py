"""LoRA in the trainer, in-process on tiny-llama3: only the adapter trains, and both exports (the
adapter merged into the weights, the PEFT adapter alone) give back the trained model's loss.

One short LoRA training (4 steps) is shared by the module; the rest reloads what it exported.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runs.tests.trainer_fixtures import make_run, read_metrics
from runs.trainer import export
from runs.trainer.errors import ConfigError
from runs.trainer.lora import LORA_TARGETS, LoraSettings, lora_check

HAS_TUNIX = importlib.util.find_spec("tunix") is not None
needs_tunix = [
    pytest.mark.tunix,
    pytest.mark.skipif(
        not HAS_TUNIX and os.environ.get("CI") != "true",
        reason="the tunix extra is not installed (pip install -e '.[tunix]')",
    ),
]
RANK, ALPHA = 4, 8.0
CARD = {
    "run_id": "7d1c0000-0000-0000-0000-000000000001",
    "dataset_key": "arith-v1",
    "model_id": "tiny-llama3",
    "configuration": {"learning_rate": 1e-2, "num_epochs": 1, "batch_size": 4},
}


def _flat(model: Any, kind: Any) -> dict[str, np.ndarray]:
    import jax
    from flax import nnx

    state = nnx.state(model, kind).to_pure_dict()
    return {
        jax.tree_util.keystr(path): np.array(value)
        for path, value in jax.tree_util.tree_flatten_with_path(state)[0]
    }


def _loss(model: Any, batch: dict[str, np.ndarray]) -> float:
    """The SFT loss of `model` on `batch`: mean negative log-likelihood of the masked targets."""
    import jax
    import jax.numpy as jnp
    from tunix.sft import utils

    valid = batch["valid_mask"]
    positions = utils.build_positions_from_mask(valid)
    logits, _ = model(batch["input_tokens"], positions, None, utils.make_causal_attn_mask(valid))
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32))
    targets = jnp.asarray(batch["input_tokens"][:, 1:])
    mask = jnp.asarray(batch["input_mask"][:, 1:], dtype=jnp.float32)
    picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return float(-(picked * mask).sum() / mask.sum())


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """tiny-llama3 with LoRA (rank 4, all seven targets), 16 examples, batch 4: 4 steps; then
    exported both ways."""
    from flax import nnx

    from runs.trainer import cli, data, lora, models, train
    from runs.trainer.manifest import load_manifest

    cli._enable_compilation_cache()  # as the trainer does: qwix compiles each op once
    tmp = tmp_path_factory.mktemp("lora")
    run_dir, manifest_path = make_run(
        tmp,
        model_id="tiny-llama3",
        examples=16,
        batch_size=4,
        learning_rate=1e-2,
        lora={
            "rank": RANK,
            "alpha": ALPHA,
            "dropout": 0.0,
            "target_modules": list(LORA_TARGETS["llama3"]),
            "export": "merged",
        },
    )
    manifest = load_manifest(manifest_path, environ={})
    assert manifest.lora is not None
    loaded = models.load_model(models.ModelSpec("tiny", "tiny-llama3"), download_dir=tmp)
    loaded.model = lora.apply_lora(loaded.model, manifest.lora)
    adapters_before = _flat(loaded.model, nnx.LoRAParam)
    base_before = {
        key: value
        for key, value in _flat(loaded.model, nnx.Param).items()
        if key not in adapters_before
    }
    records = data.read_records(manifest.dataset_path)
    examples = [
        data.encode_example(r.text, loaded.tokenizer, manifest.max_seq_length) for r in records
    ]
    length = data.padded_length(examples, manifest.max_seq_length)
    train.train(manifest, loaded, examples, [], length=length, out=io.StringIO())
    batch, _ = data.make_batch(examples[:4], 4, length, loaded.tokenizer.pad_id)
    final_loss = read_metrics(run_dir)[-1]["loss"]
    card = {**CARD, "metrics": {"final_loss": final_loss, "best_eval_loss": None}}
    merged, adapter = tmp / "merged", tmp / "adapter"
    formats = (
        export.export_model(loaded, lora=manifest.lora, directory=merged, card=card),
        export.export_model(
            loaded,
            lora=dataclasses.replace(manifest.lora, export="adapter"),
            directory=adapter,
            card=card,
        ),
    )
    return {
        "tmp": tmp,
        "run_dir": run_dir,
        "settings": manifest.lora,
        "loaded": loaded,
        "adapters_before": adapters_before,
        "base_before": base_before,
        "batch": batch,
        "loss": _loss(loaded.model, batch),
        "final_loss": final_loss,
        "formats": formats,
        "merged": merged,
        "adapter": adapter,
    }


class TestLoraTraining:
    pytestmark = needs_tunix

    def test_trains_only_the_adapter(self, lora_run: dict[str, Any]) -> None:
        from flax import nnx

        from runs.trainer import lora, models

        model = lora_run["loaded"].model
        adapters = _flat(model, nnx.LoRAParam)
        # r * (in + out) per adapted matrix: q, o 64x64; k, v 64x32; gate, up, down 64x128.
        per_layer = RANK * (2 * 128 + 2 * 96 + 3 * 192)
        assert lora.trainable_parameters(model) == sum(a.size for a in adapters.values())
        assert lora.trainable_parameters(model) == 2 * per_layer
        assert lora.trainable_parameters(model) < models.count_parameters(model)
        base_after = {k: v for k, v in _flat(model, nnx.Param).items() if k not in adapters}
        assert base_after.keys() == lora_run["base_before"].keys()
        for key, value in lora_run["base_before"].items():
            np.testing.assert_array_equal(value, base_after[key], err_msg=key)
        lora_b = [key for key in adapters if key.endswith("_lora_b']")]
        assert len(lora_b) == 14
        # Tunix initialises the MLP's gate and up kernels to zero, so down_proj sees a zero
        # input and its adapter gets no gradient in a few steps; every attention adapter moves.
        attention_b = [key for key in lora_b if "['attn']" in key]
        assert len(attention_b) == 8
        for key in attention_b:
            assert not np.array_equal(adapters[key], lora_run["adapters_before"][key]), key
        rows = read_metrics(lora_run["run_dir"])
        assert [row["step"] for row in rows] == [1, 2, 3, 4]
        assert rows[-1]["loss"] < rows[0]["loss"]

    def test_merged_export_reloads_with_tunix_loader_to_the_same_loss(
        self, lora_run: dict[str, Any]
    ) -> None:
        from runs.trainer import lora, models

        assert lora_run["formats"] == ("merged", "adapter")
        merged: Path = lora_run["merged"]
        assert {p.name for p in merged.iterdir()} == {
            "config.json",
            "model.safetensors",
            "byte_tokenizer.json",
            "README.md",
        }
        spec = models.resolve_model_id(str(merged), lora_run["tmp"])
        reloaded = models.load_model(spec, download_dir=lora_run["tmp"])
        assert reloaded.family == "llama3"
        assert lora.trainable_parameters(reloaded.model) == reloaded.parameters
        loss = _loss(reloaded.model, lora_run["batch"])
        np.testing.assert_allclose(loss, lora_run["loss"], rtol=1e-4)

        # A merged model exports again as a full one (no LoRA left).
        again = lora_run["tmp"] / "full"
        assert export.export_model(reloaded, lora=None, directory=again, card=CARD) == "full"
        assert "- lora" not in (again / "README.md").read_text()

    def test_adapter_export_applied_to_the_base_gives_the_same_loss(
        self, lora_run: dict[str, Any]
    ) -> None:
        from safetensors.numpy import load_file

        from runs.trainer import lora, models

        adapter: Path = lora_run["adapter"]
        assert {p.name for p in adapter.iterdir()} == {
            "adapter_model.safetensors",
            "adapter_config.json",
            "config.json",
            "byte_tokenizer.json",
            "README.md",
        }
        config = json.loads((adapter / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
        assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (RANK, ALPHA, 0.0)
        assert config["target_modules"] == list(LORA_TARGETS["llama3"])
        assert config["base_model_name_or_path"] == "tiny-llama3"

        # PEFT layouts: W + (B @ A) * alpha / r is the merged export's weight.
        tensors = load_file(str(adapter / "adapter_model.safetensors"))
        assert len(tensors) == 28
        merged = load_file(str(lora_run["merged"] / "model.safetensors"))
        base = export.hf_state_dict(
            models.load_model(
                models.ModelSpec("tiny", "tiny-llama3"), download_dir=lora_run["tmp"]
            ).model
        )
        for name in ("model.layers.0.self_attn.k_proj", "model.layers.1.mlp.down_proj"):
            a = tensors[f"base_model.model.{name}.lora_A.weight"]
            b = tensors[f"base_model.model.{name}.lora_B.weight"]
            weight = base[f"{name}.weight"]
            assert a.shape == (RANK, weight.shape[1]) and b.shape == (weight.shape[0], RANK)
            np.testing.assert_allclose(
                weight + b @ a * (ALPHA / RANK), merged[f"{name}.weight"], rtol=1e-5, atol=1e-6
            )

        fresh = models.load_model(
            models.ModelSpec("tiny", "tiny-llama3"), download_dir=lora_run["tmp"]
        )
        model = export.load_adapter(lora.apply_lora(fresh.model, lora_run["settings"]), adapter)
        np.testing.assert_allclose(_loss(model, lora_run["batch"]), lora_run["loss"], rtol=1e-5)

    def test_model_card_names_the_run_dataset_and_final_loss(
        self, lora_run: dict[str, Any]
    ) -> None:
        card = (lora_run["merged"] / "README.md").read_text()
        assert card.startswith("---\nlibrary_name: transformers\nbase_model: tiny-llama3\n")
        assert "- lora" in card
        assert CARD["run_id"] in card and "arith-v1" in card
        assert f"| final_loss | {lora_run['final_loss']:.6g} |" in card
        assert "| best_eval_loss | n/a |" in card
        assert "| lora.rank | 4 |" in card
        adapter_card = (lora_run["adapter"] / "README.md").read_text()
        assert adapter_card.startswith("---\nlibrary_name: peft\n")


def test_lora_check_refuses_an_unknown_target_naming_it() -> None:
    settings = LoraSettings(
        rank=8, alpha=16.0, dropout=0.0, target_modules=("q_proj", "q_einsum"), export="merged"
    )
    with pytest.raises(ConfigError, match=r"unknown for llama3: q_einsum \(allowed: q_proj, "):
        lora_check(settings, "llama3")
    with pytest.raises(ConfigError, match=r"unknown for gemma3: q_proj \(allowed: q_einsum, "):
        lora_check(settings, "gemma3")
    lora_check(dataclasses.replace(settings, target_modules=("q_proj", "down_proj")), "qwen3")
    with pytest.raises(ConfigError, match="not supported for the gemma2 family"):
        lora_check(settings, "gemma2")


def test_lora_settings_as_dict_is_json_ready() -> None:
    settings = LoraSettings(
        rank=8, alpha=16.0, dropout=0.1, target_modules=("q_proj", "v_proj"), export="adapter"
    )
    assert json.loads(json.dumps(settings.as_dict())) == {
        "rank": 8,
        "alpha": 16.0,
        "dropout": 0.1,
        "target_modules": ["q_proj", "v_proj"],
        "export": "adapter",
    }


def test_model_card_survives_missing_values() -> None:
    card = export.model_card(
        {
            "run_id": None,
            "dataset_key": None,
            "model_id": None,
            "configuration": None,
            "metrics": {"final_loss": None, "note": "a | b\nc"},
        },
        "full",
        None,
    )
    assert "base_model: null" in card and "- Run: `n/a`" in card
    assert "| note | a \\| b c |" in card
    assert "## Configuration\n\nNone recorded." in card
