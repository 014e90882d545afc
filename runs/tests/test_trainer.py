"""The trainer run as the registry runs it: `python -m runs.trainer --config manifest.yaml` in a
subprocess, on generated tunix_sft data, with tiny models on CPU.

One tiny-qwen3 training is shared by several assertions (module-scoped fixture); the rest train a
handful of steps. No test needs the database.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from runs.tests.trainer_fixtures import make_run, read_metrics, run_trainer

HAS_TUNIX = importlib.util.find_spec("tunix") is not None
needs_tunix = [
    pytest.mark.tunix,
    pytest.mark.skipif(
        not HAS_TUNIX and os.environ.get("CI") != "true",
        reason="the tunix extra is not installed (pip install -e '.[tunix]')",
    ),
]
METRIC_KEYS = {"step", "loss", "eval_loss", "tokens_per_second", "elapsed_seconds"}


@pytest.fixture(scope="module")
def qwen_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """tiny-qwen3, 50 examples (45 train / 5 eval), batch 5, 3 epochs: 27 steps.

    27 is off the eval cadence (every 2 steps), so the final eval is the trainer's own."""
    tmp = tmp_path_factory.mktemp("qwen")
    roots = tmp / "data" / "outputs"
    run_dir, manifest = make_run(
        tmp,
        num_epochs=3,
        batch_size=5,
        output_dir=str(roots / "tunix_run_qwen"),
        learning_rate=3e-3,
    )
    result = run_trainer(manifest, extra_env={"TUNIX_OUTPUT_ROOTS": str(roots)})
    return {
        "result": result,
        "run_dir": run_dir,
        "output_dir": roots / "tunix_run_qwen",
        "tmp": tmp,
    }


class TestTinyQwen3Run:
    pytestmark = needs_tunix

    def test_exits_0_with_a_quiet_stderr(self, qwen_run: dict[str, Any]) -> None:
        result = qwen_run["result"]
        assert result.returncode == 0, result.stderr
        assert "error:" not in result.stderr
        assert "Traceback" not in result.stderr

    def test_loss_goes_down(self, qwen_run: dict[str, Any]) -> None:
        rows = read_metrics(qwen_run["run_dir"])
        assert rows[-1]["loss"] < rows[0]["loss"] - 1.0
        evals = [row["eval_loss"] for row in rows if row["eval_loss"] is not None]
        assert len(evals) >= 5
        assert evals[-1] < evals[0]
        assert rows[-1]["eval_loss"] is not None

    def test_metrics_jsonl_has_one_object_per_step_with_exact_keys(
        self, qwen_run: dict[str, Any]
    ) -> None:
        rows = read_metrics(qwen_run["run_dir"])
        assert [row["step"] for row in rows] == list(range(1, 28))
        for row in rows:
            assert set(row) == METRIC_KEYS
            assert isinstance(row["step"], int)
            assert isinstance(row["loss"], float)
            assert row["eval_loss"] is None or isinstance(row["eval_loss"], float)
            assert row["tokens_per_second"] > 0
            assert row["elapsed_seconds"] >= 0
        elapsed = [row["elapsed_seconds"] for row in rows]
        assert elapsed == sorted(elapsed)

    def test_prints_a_progress_line_per_step(self, qwen_run: dict[str, Any]) -> None:
        lines = [
            line
            for line in qwen_run["result"].stdout.splitlines()
            if re.fullmatch(
                r"step \d+/27 loss \d+\.\d{4}( eval_loss \d+\.\d{4})? tok/s \d+ elapsed [\d.]+s",
                line,
            )
        ]
        assert len(lines) == 27
        assert "45 train / 5 eval" in qwen_run["result"].stdout

    def test_writes_checkpoint_model_and_summary(self, qwen_run: dict[str, Any]) -> None:
        output_dir: Path = qwen_run["output_dir"]
        assert (output_dir / "checkpoints" / "27" / "model_params").is_dir()
        assert {p.name for p in (output_dir / "model").iterdir()} == {
            "config.json",
            "model.safetensors",
            "byte_tokenizer.json",
            "README.md",
        }
        summary = json.loads((output_dir / "run_summary.json").read_text())
        assert summary["trained_steps"] == 27
        assert summary["final_loss"] < summary["first_loss"]
        assert summary["best_eval_loss"] < summary["initial_eval_loss"]
        assert summary["parameters"] < 200_000

    def test_a_saved_checkpoint_directory_trains(self, qwen_run: dict[str, Any]) -> None:
        """Model resolution (b): the exported directory, relative to the manifest's directory."""
        tmp: Path = qwen_run["tmp"] / "from_checkpoint"
        run_dir, manifest = make_run(tmp, model_id="./base-model", num_epochs=1)
        shutil.copytree(qwen_run["output_dir"] / "model", run_dir / "base-model")
        result = run_trainer(manifest)
        assert result.returncode == 0, result.stderr
        assert "(local, family qwen3" in result.stdout
        rows = read_metrics(run_dir)
        first_of_base = read_metrics(qwen_run["run_dir"])[0]["loss"]
        # Trained weights were loaded: it starts far below a random model's ln(264) = 5.58.
        assert rows[0]["loss"] < first_of_base - 1.5
        assert (Path(tmp / "data" / "outputs" / "tunix_run_test") / "model").is_dir()


@pytest.mark.tunix
@pytest.mark.skipif(not HAS_TUNIX and os.environ.get("CI") != "true", reason="no tunix")
def test_tiny_gemma3_trains_a_few_steps(tmp_path: Path) -> None:
    """tiny-llama3 trains in test_in_process_main_trains_and_reports (same entry point)."""
    run_dir, manifest = make_run(tmp_path, model_id="tiny-gemma3", examples=24, num_epochs=1)
    result = run_trainer(manifest)
    assert result.returncode == 0, result.stderr
    rows = read_metrics(run_dir)
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert (tmp_path / "data" / "outputs" / "tunix_run_test" / "checkpoints" / "3").is_dir()


@pytest.mark.tunix
@pytest.mark.skipif(not HAS_TUNIX and os.environ.get("CI") != "true", reason="no tunix")
def test_export_round_trips_through_tunix_safetensors_loader(tmp_path: Path) -> None:
    """In-process: save tiny-llama3 as a checkpoint directory, load it back with Tunix's loader."""
    import numpy as np

    from runs.trainer import export, models

    original = models.load_model(models.ModelSpec("tiny", "tiny-llama3"), download_dir=tmp_path)
    assert original.hf_config is not None
    export.export_checkpoint(original.model, original.tokenizer, original.hf_config, tmp_path / "m")
    spec = models.resolve_model_id("m", tmp_path)
    loaded = models.load_model(spec, download_dir=tmp_path)
    assert loaded.family == "llama3" and loaded.parameters == original.parameters
    before, after = export.hf_state_dict(original.model), export.hf_state_dict(loaded.model)
    assert before.keys() == after.keys()
    for name, value in before.items():
        np.testing.assert_array_equal(value, after[name], err_msg=name)


@pytest.mark.tunix
@pytest.mark.skipif(not HAS_TUNIX and os.environ.get("CI") != "true", reason="no tunix")
def test_hub_id_fails_fast_offline_with_one_line(tmp_path: Path) -> None:
    """Model resolution (c): a hub id offline and not cached is refused by the preflight."""
    run_dir, manifest = make_run(tmp_path, model_id="google/gemma-2b-it")
    result = run_trainer(manifest, timeout=120)
    assert result.returncode == 4
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(
        "error: hub model 'google/gemma-2b-it' is not in this machine's cache (HF_HUB_OFFLINE)"
    )
    assert not (run_dir / "metrics.jsonl").exists()


def test_hub_id_without_token_or_offline_mode_is_refused_not_prompted(tmp_path: Path) -> None:
    _, manifest = make_run(tmp_path, model_id="google/gemma-2b-it")
    result = run_trainer(manifest, extra_env={"HF_HUB_OFFLINE": "0"}, timeout=120)
    assert result.returncode == 4
    assert result.stderr == (
        "error: hub model 'google/gemma-2b-it' needs HF_TOKEN and network access; "
        "or download it and set model_id to the checkpoint directory\n"
    )


@pytest.mark.parametrize(
    ("changes", "code", "start"),
    [
        ({"model_id": "tiny-gpt"}, 4, "error: unknown model 'tiny-gpt'"),
        ({"model_id": "/no/such/checkpoint"}, 4, "error: checkpoint directory not found"),
        ({"dataset": False}, 3, "error: dataset file not found: "),
        ({"num_epochs": 0}, 2, "error: training.num_epochs must be between 1 and 100, got 0"),
        ({"output_dir": "/srv/elsewhere"}, 2, "error: output.output_dir /srv/elsewhere is outside"),
    ],
)
def test_expected_failures_exit_non_zero_with_one_line(
    tmp_path: Path, changes: dict[str, Any], code: int, start: str
) -> None:
    run_dir, manifest = make_run(tmp_path, **changes)
    roots = str(tmp_path / "data" / "outputs")
    result = run_trainer(manifest, extra_env={"TUNIX_OUTPUT_ROOTS": roots})
    assert result.returncode == code
    assert result.stderr.startswith(start), result.stderr
    assert result.stderr.count("\n") == 1
    assert not (run_dir / "metrics.jsonl").exists()


def test_unreadable_config_exits_2(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("runner: tunix\n  bad: indent\n")
    result = run_trainer(manifest)
    assert result.returncode == 2
    assert result.stderr.startswith("error: config is not valid YAML")


@pytest.mark.tunix
@pytest.mark.skipif(not HAS_TUNIX and os.environ.get("CI") != "true", reason="no tunix")
def test_in_process_main_trains_and_reports(tmp_path: Path) -> None:
    """tiny-llama3 through the same entry point, in-process (so coverage sees the training code)."""
    from runs.trainer import cli

    run_dir, manifest = make_run(tmp_path, model_id="tiny-llama3", examples=16, batch_size=4)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["--config", str(manifest)], out=out, err=err) == 0, err.getvalue()
    rows = read_metrics(run_dir)
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert all(row["eval_loss"] is None for row in rows)  # fewer than 20 examples: no eval split
    assert "step 4/4 loss" in out.getvalue()


# --- in-process checks of the loading code (coverage sees these) ---------------------------------

tunix_only = pytest.mark.skipif(not HAS_TUNIX and os.environ.get("CI") != "true", reason="no tunix")


@pytest.mark.tunix
@tunix_only
@pytest.mark.parametrize("model_id", ["tiny-qwen3", "tiny-gemma3", "tiny-llama3"])
def test_tiny_models_are_about_100k_parameters_with_the_byte_vocabulary(model_id: str) -> None:
    from runs.trainer import models
    from runs.trainer.tokenizer import ByteTokenizer

    loaded = models.load_model(models.ModelSpec("tiny", model_id), download_dir=Path("/unused"))
    assert 80_000 < loaded.parameters < 120_000
    assert isinstance(loaded.tokenizer, ByteTokenizer)
    assert (loaded.hf_config is None) == (model_id == "tiny-gemma3")


@pytest.mark.tunix
@tunix_only
@pytest.mark.parametrize(
    ("model_type", "extra", "family", "tied_field"),
    [
        ("qwen3", {"rope_theta": 1e6, "tie_word_embeddings": True}, "qwen3", "use_tied_embedding"),
        ("qwen2", {"rope_parameters": {"rope_theta": 1e6}}, "qwen2", "use_tied_embedding"),
        ("llama", {"rope_theta": 5e5, "tie_word_embeddings": True}, "llama3", "weight_tying"),
    ],
)
def test_hugging_face_config_maps_onto_tunix_config(
    model_type: str, extra: dict[str, Any], family: str, tied_field: str
) -> None:
    from runs.trainer import models

    hf = {
        "model_type": model_type,
        "num_hidden_layers": 2,
        "vocab_size": 300,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        **extra,
    }
    config = models.tunix_config_from_hf(family, hf)
    assert (config.num_layers, config.vocab_size, config.embed_dim) == (2, 300, 64)
    assert (config.head_dim, config.num_kv_heads) == (16, 2)
    assert config.rope_theta == int(extra.get("rope_theta", 1e6))
    assert getattr(config, tied_field) is bool(extra.get("tie_word_embeddings", False))
    with pytest.raises(models.ModelError, match="lacks a usable field"):
        models.tunix_config_from_hf(family, {"model_type": model_type})


def _bpe_tokenizer(directory: Path) -> None:
    """A small byte-level BPE saved as tokenizer.json, as a Hugging Face checkpoint has."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers import models as tok_models

    from runs.tests.trainer_fixtures import render

    tokenizer = Tokenizer(tok_models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    texts = [render(f"What is {a}+{a}?", [f"Add {a} and {a}"], str(2 * a)) for a in range(60)]
    tokenizer.train_from_iterator(texts, trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))


@pytest.mark.tunix
@tunix_only
def test_checkpoint_with_a_hugging_face_tokenizer_trains(tmp_path: Path) -> None:
    """A Llama-layout checkpoint with tokenizer.json (not our byte tokenizer) trains end to end."""
    from flax import nnx
    from tunix.models.llama3 import model as llama3

    from runs.trainer import cli, export, models
    from runs.trainer.tokenizer import HuggingFaceTokenizer, load_tokenizer

    checkpoint = tmp_path / "run" / "hf-llama"
    _bpe_tokenizer(checkpoint)
    hf_config = {
        "model_type": "llama",
        "num_hidden_layers": 2,
        "vocab_size": 320,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "rope_theta": 10000,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
    }
    tokenizer = load_tokenizer(checkpoint, hf_config)
    assert isinstance(tokenizer, HuggingFaceTokenizer)
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2)
    text = "<start_of_turn>user\nWhat is 3+3?<end_of_turn>"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    model = llama3.Llama3(models.tunix_config_from_hf("llama3", hf_config), rngs=nnx.Rngs(0))
    export.export_checkpoint(model, tokenizer, hf_config, checkpoint)

    run_dir, manifest = make_run(tmp_path, model_id="hf-llama", examples=16, batch_size=8)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["--config", str(manifest)], out=out, err=err) == 0, err.getvalue()
    assert "(local, family llama3" in out.getvalue()
    assert "vocabulary 320" in out.getvalue()
    rows = read_metrics(run_dir)
    assert len(rows) == 2 and rows[-1]["loss"] < rows[0]["loss"]
    exported = tmp_path / "data" / "outputs" / "tunix_run_test" / "model"
    assert (exported / "tokenizer.json").is_file()


@pytest.mark.tunix
@tunix_only
def test_sentencepiece_tokenizer_loads(tmp_path: Path) -> None:
    import sentencepiece

    from runs.trainer.tokenizer import SentencePieceTokenizer, load_tokenizer

    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([f"what is {a} plus {a}" for a in range(200)]),
        model_prefix=str(tmp_path / "tokenizer"),
        vocab_size=60,
        model_type="bpe",
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        minloglevel=2,
    )
    tokenizer = load_tokenizer(tmp_path, {"model_type": "llama"})
    assert isinstance(tokenizer, SentencePieceTokenizer)
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2)
    assert tokenizer.vocab_size == 60
    assert tokenizer.decode(tokenizer.encode("what is 7 plus 7")) == "what is 7 plus 7"
    (tmp_path / "copy").mkdir()
    tokenizer.save(tmp_path / "copy")
    assert (tmp_path / "copy" / "tokenizer.model").is_file()


@pytest.mark.tunix
@tunix_only
def test_unloadable_checkpoints_are_model_errors(tmp_path: Path) -> None:
    from runs.trainer import models
    from runs.trainer.tokenizer import ByteTokenizer

    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "qwen3",
                "num_hidden_layers": 2,
                "vocab_size": 100,
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_attention_heads": 4,
            }
        )
    )
    ByteTokenizer().save(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    spec = models.ModelSpec("local", str(tmp_path), tmp_path)
    with pytest.raises(models.ModelError, match="tokenizer has 264 tokens"):
        models.load_model(spec, download_dir=tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "vocab_size": 264}))
    with pytest.raises(models.ModelError, match="cannot load weights from"):
        models.load_model(spec, download_dir=tmp_path)


@pytest.mark.tunix
@tunix_only
def test_hub_resolution_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runs.trainer import models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelError, match="offline"):
        models.load_model(models.ModelSpec("hub", "Qwen/Qwen3-0.6B"), download_dir=tmp_path)
    with pytest.raises(models.ModelError, match="not a family Tunix supports"):
        models.load_model(models.ModelSpec("hub", "mistralai/Mistral-7B"), download_dir=tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(models.ModelError, match="needs HF_TOKEN"):
        models.load_model(models.ModelSpec("hub", "Qwen/Qwen3-0.6B"), download_dir=tmp_path)
    # Online with a token, Gemma is refused before any download (Tunix would download first).
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    with pytest.raises(models.ModelError, match="from Kaggle or GCS, not from the Hugging Face"):
        models.load_model(
            models.ModelSpec("hub", "google/gemma-2b-it"), download_dir=tmp_path / "g"
        )
    assert not (tmp_path / "g").exists()


def test_unexpected_failure_exits_1_with_one_line_and_a_saved_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runs.trainer import cli

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("device\nlost")

    monkeypatch.setattr(cli, "load_model", boom)
    run_dir, manifest = make_run(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["--config", str(manifest)], out=out, err=err) == 1
    assert err.getvalue().startswith("error: training failed: RuntimeError: device lost")
    assert err.getvalue().count("\n") == 1
    assert "RuntimeError" in (run_dir / cli.TRACEBACK_FILE).read_text()

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load_model", interrupted)
    err = io.StringIO()
    assert cli.main(["--config", str(manifest)], out=out, err=err) == 130
    assert err.getvalue() == "error: interrupted\n"


def test_module_entry_point_runs_main(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runpy
    import signal
    import sys

    _, manifest = make_run(tmp_path, model_id="no-such-model")
    monkeypatch.setattr(sys, "argv", ["runs.trainer", "--config", str(manifest)])
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as info:
            runpy.run_module("runs.trainer", run_name="__main__", alter_sys=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert info.value.code == 4


# --- LoRA, checkpoint cadence and resume ---------------------------------------------------------

LORA = {
    "rank": 4,
    "alpha": 8.0,
    "dropout": 0.0,
    "target_modules": ["q_proj", "v_proj"],
    "export": "merged",
}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """tiny-qwen3 with LoRA, 45 train / 5 eval, batch 5, 1 epoch: 9 steps, checkpoints every 3."""
    tmp = tmp_path_factory.mktemp("lora")
    run_dir, manifest = make_run(
        tmp, batch_size=5, learning_rate=1e-2, lora=LORA, checkpoint_every_n_steps=3
    )
    result = run_trainer(manifest)
    return {"result": result, "run_dir": run_dir, "output_dir": Path(manifest_output(manifest))}


def manifest_output(manifest: Path) -> str:
    import yaml

    return str(yaml.safe_load(manifest.read_text())["output"]["output_dir"])


@pytest.mark.tunix
@tunix_only
def test_a_lora_run_trains_the_adapter_and_exports_a_merged_model(
    lora_run: dict[str, Any],
) -> None:
    result = lora_run["result"]
    assert result.returncode == 0, result.stderr
    assert "trainable (LoRA rank 4 on q_proj, v_proj)" in result.stdout
    output_dir: Path = lora_run["output_dir"]
    summary = json.loads((output_dir / "run_summary.json").read_text())
    assert summary["final"] is True
    assert 0 < summary["trainable_parameters"] < summary["parameters"]
    assert summary["lora"]["rank"] == 4
    assert set(summary["phases"]) == {"load", "compile", "train", "eval", "save"}
    assert summary["steps_per_second"] > 0
    assert summary["export_format"] == "merged"
    assert summary["checkpoint_every_n_steps"] == 3 and summary["last_checkpoint_step"] == 9
    assert summary["preflight"] and summary["resumed_from"] is None
    assert (output_dir / "model" / "README.md").is_file()
    assert sorted(p.name for p in (output_dir / "checkpoints").iterdir()) == ["3", "6", "9"]


@pytest.mark.tunix
@tunix_only
def test_a_run_resumes_from_another_runs_checkpoint(
    lora_run: dict[str, Any], tmp_path: Path
) -> None:
    source = lora_run["output_dir"] / "checkpoints"
    run_dir, manifest = make_run(
        tmp_path,
        batch_size=5,
        num_epochs=2,
        learning_rate=1e-2,
        lora=LORA,
        resume={"run_id": "run-a", "checkpoint_dir": str(source)},
    )
    result = run_trainer(manifest)
    assert result.returncode == 0, result.stderr
    assert "resuming from the checkpoint at step 9" in result.stdout
    rows = read_metrics(run_dir)
    assert rows[0]["step"] == 10 and rows[-1]["step"] == 18
    first = read_metrics(lora_run["run_dir"])
    # It continues where run A ended, not from the base model's loss.
    assert abs(rows[0]["loss"] - first[-1]["loss"]) < abs(rows[0]["loss"] - first[0]["loss"])
    summary = json.loads(
        (tmp_path / "data" / "outputs" / "tunix_run_test" / "run_summary.json").read_text()
    )
    assert summary["resumed_from"]["run_id"] == "run-a"
    assert summary["resumed_from"]["step"] == 9
    assert summary["trained_steps"] == 9


@pytest.mark.tunix
@tunix_only
def test_resuming_another_models_run_exits_2(lora_run: dict[str, Any], tmp_path: Path) -> None:
    source = lora_run["output_dir"] / "checkpoints"
    _, manifest = make_run(
        tmp_path,
        model_id="tiny-llama3",
        lora=LORA,
        resume={"checkpoint_dir": str(source)},
    )
    result = run_trainer(manifest)
    assert result.returncode == 2
    assert result.stderr.startswith("error: resume: the checkpoint's run trained model"), (
        result.stderr
    )
    assert result.stderr.count("\n") == 1
