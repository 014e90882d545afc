"""The trainer's preflight (runs.trainer.preflight): every failure it promises, its report, and
the trainer failing the same way. Only the tests marked `tunix` import JAX."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runs.tests.trainer_fixtures import (
    PROJECT_ROOT,
    make_run,
    manifest_dict,
    render,
    run_trainer,
    write_manifest,
)
from runs.trainer import data, models
from runs.trainer.errors import ConfigError, DatasetError, ModelError, TrainerError
from runs.trainer.manifest import load_manifest
from runs.trainer.preflight import (
    GIB,
    DeviceInfo,
    PreflightReport,
    host_device,
    memory_check,
    preflight,
    safetensors_parameters,
)
from runs.trainer.tokenizer import ByteTokenizer

HAS_TUNIX = importlib.util.find_spec("tunix") is not None
needs_tunix = pytest.mark.skipif(
    not HAS_TUNIX and os.environ.get("CI") != "true", reason="the tunix extra is not installed"
)


def write_lines(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": str(i), "prompts": text}) for i, text in enumerate(texts)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_with(tmp: Path, texts: list[str] | None = None, **manifest: Any) -> tuple[Any, list[Any]]:
    """A run directory (manifest + dataset) and its parsed manifest and records."""
    run_dir, path = make_run(tmp, dataset=texts is None, **manifest)
    if texts is not None:
        write_lines(run_dir / "datasets" / "arith-v1.jsonl", texts)
    parsed = load_manifest(path, environ={})
    return parsed, data.read_records(parsed.dataset_path)


def write_checkpoint(directory: Path, *, tokenizer: bool = True) -> Path:
    """A checkpoint directory with tiny-qwen3's config.json and a header-only safetensors file.

    The weights' bytes are never read by the preflight, only the header."""
    directory.mkdir(parents=True)
    config = {
        "model_type": "qwen3",
        "num_hidden_layers": 2,
        "vocab_size": ByteTokenizer.VOCAB_SIZE,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "head_dim": 16,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
    }
    (directory / "config.json").write_text(json.dumps(config))
    header = json.dumps(
        {
            "model.embed_tokens.weight": {
                "dtype": "F32",
                "shape": [ByteTokenizer.VOCAB_SIZE, 64],
                "data_offsets": [0, 0],
            },
            "model.norm.weight": {"dtype": "F32", "shape": [64], "data_offsets": [0, 0]},
            "__metadata__": {"format": "pt"},
        }
    ).encode()
    (directory / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    if tokenizer:
        ByteTokenizer().save(directory)
    return directory


def long_text(prompt_bytes: int, answer_bytes: int) -> str:
    return render("p" * prompt_bytes, ["s"], "a" * answer_bytes)


# --- presets and parameter counts ----------------------------------------------------------------


def test_random_presets_resolve_and_unknown_ids_list_them(tmp_path: Path) -> None:
    for name in models.RANDOM_PRESETS:
        assert models.resolve_model_id(name, tmp_path, roots=[]).kind == "random"
    with pytest.raises(ModelError, match="unknown model 'random-qwen3-2b'") as caught:
        models.resolve_model_id("random-qwen3-2b", tmp_path)
    assert "tiny-qwen3" in caught.value.reason
    assert "random-qwen3-0.6b" in caught.value.reason and "random-qwen3-32b" in caught.value.reason


def test_parameter_estimate_of_the_presets() -> None:
    # Qwen3-0.6B: 0.44B without its (tied) embedding.
    sizes = models.RANDOM_PRESETS["random-qwen3-0.6b"]
    assert models.estimate_parameters(sizes) == 596_049_920
    assert models.estimate_parameters(sizes) - 151_936 * 1024 == 440_467_456
    assert 32e9 < models.estimate_parameters(models.RANDOM_PRESETS["random-qwen3-32b"]) < 33e9


@pytest.mark.tunix
@needs_tunix
def test_random_presets_are_the_architecture_of_tunix_qwen3_presets() -> None:
    from tunix.models.qwen3 import model as qwen3

    for name, method in models.RANDOM_PRESET_CONFIGS.items():
        config = getattr(qwen3.ModelConfig, method)()
        sizes = models.RANDOM_PRESETS[name]
        tunix_sizes = {
            "family": "qwen3",
            "num_layers": config.num_layers,
            "vocab_size": config.vocab_size,
            "embed_dim": config.embed_dim,
            "hidden_dim": config.hidden_dim,
            "num_heads": config.num_heads,
            "head_dim": config.head_dim,
            "num_kv_heads": config.num_kv_heads,
            "tied": config.use_tied_embedding,
        }
        assert sizes == tunix_sizes, name
        built = models.random_config(name)
        assert (built.num_layers, built.embed_dim, built.rope_theta) == (
            config.num_layers,
            config.embed_dim,
            config.rope_theta,
        )
    assert set(models.RANDOM_PRESET_CONFIGS) == set(models.RANDOM_PRESETS)


@pytest.mark.tunix
@needs_tunix
def test_parameter_estimate_equals_the_built_models(tmp_path: Path) -> None:
    for name in models.TINY_MODELS:
        loaded = models.load_model(models.ModelSpec("tiny", name), download_dir=tmp_path)
        assert models.estimate_parameters(models.TINY_SIZES[name]) == loaded.parameters, name
    # A preset with its own output layer, built abstractly (shapes only, no 32 GB of weights).
    from flax import nnx
    from tunix.models.qwen3 import model as qwen3

    config = models.random_config("random-qwen3-8b")
    abstract = nnx.eval_shape(lambda: qwen3.Qwen3(config, rngs=nnx.Rngs(params=0)))
    expected = models.estimate_parameters(models.RANDOM_PRESETS["random-qwen3-8b"])
    assert models.count_parameters(abstract) == expected == 8_190_735_360


def test_safetensors_parameters_read_from_the_header(tmp_path: Path) -> None:
    directory = write_checkpoint(tmp_path / "ckpt")
    assert safetensors_parameters(directory / "model.safetensors") == 264 * 64 + 64


# --- the report ----------------------------------------------------------------------------------


def test_report_counts_examples_truncation_and_lengths(tmp_path: Path) -> None:
    texts = [long_text(10, 10)] * 18 + [long_text(20, 300), long_text(30, 400)]
    manifest, records = run_with(tmp_path, texts, max_seq_length=128, batch_size=4)
    report = preflight(manifest, records, device=DeviceInfo("cpu", GIB, "a test device"))
    assert isinstance(report, PreflightReport)
    assert (report.spec.kind, report.family, report.parameters) == ("tiny", "qwen3", 91_008)
    assert report.trainable_parameters == report.parameters
    assert (len(report.examples), len(report.train_examples), len(report.eval_examples)) == (
        20,
        18,
        2,
    )
    assert report.truncated == 2
    longest = len(ByteTokenizer().encode(long_text(30, 400))) + 2  # BOS and EOS
    assert report.longest == longest
    assert report.length == 128
    memory = report.memory
    assert memory["total"] == memory["parameters"] + memory["optimizer"] + memory["activations"]
    assert memory["parameters"] == 91_008 * 4
    assert memory["optimizer"] == 91_008 * (4 + 8)
    assert memory["activations"] == 4 * 128 * (2 * 64 * 34 + 264 * 8)
    as_dict = report.as_dict()
    json.dumps(as_dict)
    assert as_dict["truncated_examples"] == 2 and as_dict["longest_example_tokens"] == longest
    text = "\n".join(report.lines())
    assert "20 examples (18 train / 2 eval), 2 truncated, longest" in text
    assert "Parameters: 91,008" in text
    assert "available on a test device" in text


def test_host_device_reads_mem_available(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  4000 kB\nMemAvailable:   2048 kB\n")
    assert host_device(meminfo) == DeviceInfo(
        platform="cpu", memory_bytes=2048 * 1024, label="this machine (MemAvailable)"
    )
    assert host_device(tmp_path / "missing").memory_bytes is None
    assert host_device().memory_bytes is not None  # this Linux machine


# --- each promised failure -----------------------------------------------------------------------


def test_an_over_long_example_is_a_dataset_error_naming_its_line(tmp_path: Path) -> None:
    texts = [long_text(10, 10), long_text(10, 10), long_text(200, 10), long_text(10, 10)]
    manifest, records = run_with(tmp_path, texts, max_seq_length=128)
    with pytest.raises(DatasetError) as caught:
        preflight(manifest, records)
    tokens = len(ByteTokenizer().encode(long_text(200, 10))) + 2
    assert caught.value.reason.startswith(
        f"dataset line 3 is over-long: {tokens} tokens, and its model turn starts at token "
    )
    assert "at or beyond max_seq_length 128" in caught.value.reason


def test_an_example_whose_answer_is_cut_is_truncated_not_over_long(tmp_path: Path) -> None:
    # The model turn starts before 128 tokens: some of the answer is left to train on.
    manifest, records = run_with(tmp_path, [long_text(60, 500)], max_seq_length=128)
    assert preflight(manifest, records).truncated == 1


def test_a_checkpoint_without_its_tokenizer_is_a_model_error_naming_it(tmp_path: Path) -> None:
    directory = write_checkpoint(tmp_path / "ckpt", tokenizer=False)
    manifest, records = run_with(tmp_path, model_id=str(directory))
    with pytest.raises(ModelError) as caught:
        preflight(manifest, records)
    assert caught.value.reason == (
        f"checkpoint directory {directory} has no tokenizer "
        "(looked for byte_tokenizer.json, tokenizer.json, tokenizer.model)"
    )


def test_a_checkpoint_directory_is_counted_from_its_config(tmp_path: Path) -> None:
    directory = write_checkpoint(tmp_path / "ckpt")
    manifest, records = run_with(tmp_path, model_id=str(directory))
    report = preflight(manifest, records)
    assert (report.spec.kind, report.family) == ("local", "qwen3")
    assert report.parameters == models.estimate_parameters(models.TINY_SIZES["tiny-qwen3"])


def test_random_qwen3_32b_does_not_fit_this_machine(tmp_path: Path) -> None:
    manifest, records = run_with(tmp_path, model_id="random-qwen3-32b")
    with pytest.raises(ModelError) as caught:
        preflight(manifest, records)
    reason = caught.value.reason
    assert reason.startswith("model does not fit: estimated ")
    assert "(parameters 122.0 GiB, optimizer 366.1 GiB, activations " in reason
    assert reason.endswith(" available on this machine (MemAvailable)")


def test_a_small_device_refuses_a_preset_and_takes_a_tiny_model(tmp_path: Path) -> None:
    one_gib = DeviceInfo("gpu", GIB, "a 1 GiB device")
    manifest, records = run_with(tmp_path / "a", model_id="random-qwen3-0.6b")
    with pytest.raises(ModelError, match=r"> 1\.0 GiB available on a 1 GiB device$"):
        preflight(manifest, records, device=one_gib)
    manifest, records = run_with(tmp_path / "b", model_id="tiny-qwen3")
    report = preflight(manifest, records, device=one_gib)
    assert report.memory["parameters"] == report.parameters * 2  # bfloat16 on an accelerator
    memory_check(report, one_gib)
    with pytest.raises(ModelError, match="does not fit"):
        memory_check(report, DeviceInfo("cpu", 1000, "a tiny host"))
    memory_check({"total": 10**15}, DeviceInfo("cpu", None, "unknown"))


def test_a_hub_id_must_be_in_the_cache_when_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    manifest, records = run_with(tmp_path / "a", model_id="owner/model")
    with pytest.raises(ModelError) as caught:
        preflight(manifest, records, hub_offline=True)
    assert caught.value.reason.startswith(
        "hub model 'owner/model' is not in this machine's cache (HF_HUB_OFFLINE)"
    )
    # The same id once in the Hugging Face cache layout.
    snapshot = tmp_path / "hub" / "models--owner--model" / "snapshots" / "abc123"
    write_checkpoint(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    report = preflight(manifest, records, hub_offline=True)
    assert (report.spec.kind, report.family, report.parameters) == ("hub", "qwen3", 91_008)


def test_an_unknown_lora_target_for_the_family_is_a_config_error(tmp_path: Path) -> None:
    lora = {
        "rank": 8,
        "alpha": 16.0,
        "dropout": 0.0,
        "target_modules": ["q_einsum"],
        "export": "merged",
    }
    manifest, records = run_with(tmp_path, lora=lora)
    with pytest.raises(ConfigError, match="q_einsum"):
        preflight(manifest, records)


def test_lora_trains_rank_times_in_plus_out_per_targeted_matrix(tmp_path: Path) -> None:
    lora = {
        "rank": 8,
        "alpha": 16.0,
        "dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
        "export": "merged",
    }
    manifest, records = run_with(tmp_path, lora=lora)
    report = preflight(manifest, records)
    # 2 layers x (q_proj 64 -> 4 x 16, v_proj 64 -> 2 x 16).
    assert report.trainable_parameters == 2 * (8 * (64 + 64) + 8 * (64 + 32))
    assert report.memory["optimizer"] == report.trainable_parameters * 12


# --- the trainer fails the same way --------------------------------------------------------------


def _failing_runs(tmp: Path) -> dict[str, tuple[Path, TrainerError]]:
    """Three runs the preflight refuses: their manifests and the errors it raises."""
    cases: dict[str, tuple[Path, TrainerError]] = {}
    directory = write_checkpoint(tmp / "ckpt", tokenizer=False)
    overlong = [long_text(10, 10), long_text(300, 10)]
    runs: list[tuple[str, list[str] | None, dict[str, Any]]] = [
        ("over-long", overlong, {"max_seq_length": 128}),
        ("no tokenizer", None, {"model_id": str(directory)}),
        ("does not fit", None, {"model_id": "random-qwen3-32b"}),
    ]
    for name, texts, changes in runs:
        run_dir, path = make_run(tmp / name, dataset=texts is None, examples=8, **changes)
        if texts is not None:
            write_lines(run_dir / "datasets" / "arith-v1.jsonl", texts)
        manifest = load_manifest(path, environ={})
        try:
            preflight(manifest, data.read_records(manifest.dataset_path))
        except TrainerError as exc:
            cases[name] = (path, exc)
        else:  # pragma: no cover - the test below fails on it
            raise AssertionError(f"{name}: the preflight passed")
    return cases


def test_the_trainer_fails_with_the_preflight_reason_and_exit_code(tmp_path: Path) -> None:
    for name, (path, error) in _failing_runs(tmp_path).items():
        result = run_trainer(path, timeout=60)
        assert result.returncode == error.exit_code, (name, result.stderr)
        last = result.stderr.strip().splitlines()[-1]
        # Free memory moves between this process and the trainer's: compare up to "> N GiB".
        assert last.split(" > ")[0] == f"error: {error.reason}".split(" > ")[0], name


def test_the_preflight_imports_no_jax(tmp_path: Path) -> None:
    _, path = make_run(tmp_path, model_id="random-qwen3-0.6b", examples=30)
    code = (
        "import sys\n"
        "from runs.trainer import data, preflight, manifest\n"
        f"m = manifest.load_manifest({str(path)!r}, environ={{}})\n"
        "report = preflight.preflight(m, data.read_records(m.dataset_path))\n"
        "print(report.parameters, 'jax' in sys.modules, 'django' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["596049920", "False", "False"]


def test_a_hand_written_manifest_gets_the_same_rule(tmp_path: Path) -> None:
    """encode_records is the rule; read_records and preflight agree on line numbers."""
    path = write_lines(tmp_path / "d.jsonl", [long_text(5, 5), long_text(500, 5)])
    records = data.read_records(path)
    with pytest.raises(DatasetError, match=r"^dataset line 2 is over-long"):
        data.encode_records(records, ByteTokenizer(), 256)
    doc = manifest_dict(output_dir=str(tmp_path / "out"), dataset_path=str(path))
    manifest = load_manifest(write_manifest(tmp_path / "run", doc), environ={})
    with pytest.raises(DatasetError, match=r"^dataset line 2 is over-long"):
        preflight(manifest, records)
