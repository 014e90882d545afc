"""In-process tests of the trainer's pure parts: manifest, tokenizer, data, model ids, CLI errors.

None of these imports JAX or needs the database.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runs.tests.trainer_fixtures import make_run, manifest_dict, render, write_manifest
from runs.trainer import cli, data, models, train
from runs.trainer.errors import ConfigError, DatasetError, ModelError
from runs.trainer.manifest import load_manifest, parse_manifest
from runs.trainer.tokenizer import ByteTokenizer, load_tokenizer

# --- manifest ------------------------------------------------------------------------------------


def _parse(tmp_path: Path, environ: dict[str, str] | None = None, **changes: Any) -> Any:
    doc = manifest_dict(output_dir=str(tmp_path / "out"))
    for dotted, value in changes.items():
        section, _, key = dotted.partition("__")
        if key:
            doc[section][key] = value
        else:
            doc[section] = value
    return parse_manifest(doc, manifest_path=tmp_path / "manifest.yaml", environ=environ or {})


def test_manifest_resolves_relative_paths_against_its_directory(tmp_path: Path) -> None:
    manifest = _parse(tmp_path, output__output_dir="outputs/x")
    assert manifest.dataset_path == tmp_path / "datasets" / "arith-v1.jsonl"
    assert manifest.output_dir == tmp_path / "outputs" / "x"
    assert manifest.run_dir == tmp_path
    assert (manifest.learning_rate, manifest.num_epochs, manifest.batch_size) == (3e-3, 1, 8)


def test_manifest_written_like_the_registry_parses(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, manifest_dict(output_dir=str(tmp_path / "o")))
    assert "version: '1.0'" in path.read_text()
    assert load_manifest(path, environ={}).max_seq_length == 256


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"runner": "other"}, "runner must be 'tunix'"),
        ({"mode": "dpo"}, "mode must be 'sft'"),
        ({"version": 1.0}, "version must be '1.0'"),
        ({"dataset__format": "trace"}, "dataset.format must be 'tunix_sft'"),
        ({"training__learning_rate": 0}, "learning_rate must be > 0"),
        ({"training__learning_rate": 1.5}, "learning_rate must be > 0"),
        ({"training__learning_rate": "fast"}, "learning_rate must be a number"),
        ({"training__learning_rate": True}, "learning_rate must be a number"),
        ({"training__num_epochs": 0}, "num_epochs must be between 1 and 100"),
        ({"training__num_epochs": 101}, "num_epochs must be between 1 and 100"),
        ({"training__num_epochs": 2.5}, "num_epochs must be an integer"),
        ({"training__batch_size": 513}, "batch_size must be between 1 and 512"),
        ({"training__max_seq_length": 127}, "max_seq_length must be between 128 and 32768"),
        ({"training__max_seq_length": 32769}, "max_seq_length must be between 128 and 32768"),
        ({"model__model_id": ""}, "model.model_id must not be empty"),
        ({"model__model_id": 7}, "model.model_id must be a string"),
        ({"model": "tiny-qwen3"}, "'model' must be a mapping"),
        ({"training__seed": 1}, "unknown key(s) in training: seed"),
        ({"extra": {}}, "unknown key(s) in config: extra"),
    ],
)
def test_manifest_rejects_invalid_fields(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(tmp_path, **changes)
    assert message in info.value.reason


def test_manifest_requires_every_section(tmp_path: Path) -> None:
    doc = manifest_dict(output_dir=str(tmp_path))
    del doc["training"]
    with pytest.raises(ConfigError, match="missing the 'training' section"):
        parse_manifest(doc, manifest_path=tmp_path / "m.yaml", environ={})


def test_manifest_file_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_manifest(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_manifest(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_manifest(bad)
    with pytest.raises(ConfigError, match="is a directory"):
        load_manifest(tmp_path)


def test_output_dir_must_be_under_an_allowed_root(tmp_path: Path) -> None:
    root = tmp_path / "data" / "outputs"
    environ = {"TUNIX_OUTPUT_ROOTS": os.pathsep.join(["/nowhere", str(root)])}
    ok = _parse(tmp_path, environ, output__output_dir=str(root / "tunix_run_1"))
    assert ok.output_dir == root / "tunix_run_1"
    with pytest.raises(ConfigError, match="outside the allowed roots"):
        _parse(tmp_path, environ, output__output_dir=str(tmp_path / "elsewhere"))
    with pytest.raises(ConfigError, match="outside the allowed roots"):
        _parse(tmp_path, environ, output__output_dir=str(root / ".." / "escape"))


def test_output_dir_symlink_escaping_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    environ = {"TUNIX_OUTPUT_ROOTS": str(root)}
    with pytest.raises(ConfigError, match="outside the allowed roots"):
        _parse(tmp_path, environ, output__output_dir=str(root / "link" / "out"))


def test_output_roots_must_be_absolute(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be absolute"):
        _parse(tmp_path, {"TUNIX_OUTPUT_ROOTS": "relative/dir"})
    # An empty setting allows any directory.
    assert _parse(tmp_path, {"TUNIX_OUTPUT_ROOTS": ""}).output_dir == tmp_path / "out"


# --- byte tokenizer ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain ascii",
        render("Qu'est-ce que 2+2 ? ünïcødé ✓ 🙂", ["Add", "Check"], "4"),
        "<start_of_turn<end_of_turn> half markers <start_of_turn>",
    ],
)
def test_byte_tokenizer_round_trips(text: str) -> None:
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(text)
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == text


def test_byte_tokenizer_turn_markers_are_single_tokens() -> None:
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode("<start_of_turn>user\nhi<end_of_turn>")
    assert ids == [ByteTokenizer.START_OF_TURN_ID, *b"user\nhi", ByteTokenizer.END_OF_TURN_ID]
    assert tokenizer.decode([tokenizer.BOS, *ids, tokenizer.EOS, tokenizer.PAD]) == (
        "<start_of_turn>user\nhi<end_of_turn>"
    )


def test_byte_tokenizer_saves_and_loads(tmp_path: Path) -> None:
    ByteTokenizer().save(tmp_path)
    assert isinstance(load_tokenizer(tmp_path, {}), ByteTokenizer)


def test_checkpoint_without_tokenizer_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no tokenizer"):
        load_tokenizer(tmp_path, {})


# --- data ----------------------------------------------------------------------------------------


def test_loss_mask_covers_exactly_the_model_turn() -> None:
    tokenizer = ByteTokenizer()
    text = render("What is 2+2?", ["Add 2 and 2"], "4")
    example = data.encode_example(text, tokenizer, 512)
    tokens, mask = example.tokens.tolist(), example.loss_mask.tolist()
    assert tokens[0] == tokenizer.BOS and tokens[-1] == tokenizer.EOS
    first = mask.index(1)
    assert all(mask[first:]) and not any(mask[:first])
    prompt_part = tokenizer.decode(tokens[:first])
    assert prompt_part.endswith("<start_of_turn>model\n")
    assert tokenizer.decode(tokens[first:]) == "Reasoning:\n1. Add 2 and 2\nAnswer: 4<end_of_turn>"
    assert not example.truncated


def test_loss_mask_of_a_multi_turn_conversation_is_the_last_model_turn() -> None:
    tokenizer = ByteTokenizer()
    first = render("Hi", ["Greet"], "Hello")
    text = first + "\n" + render("And 1+1?", ["Add"], "2")
    example = data.encode_example(text, tokenizer, 1024)
    start = example.loss_mask.tolist().index(1)
    assert (
        tokenizer.decode(example.tokens[start:].tolist())
        == "Reasoning:\n1. Add\nAnswer: 2<end_of_turn>"
    )


def test_long_examples_are_truncated_to_max_seq_length() -> None:
    text = render("x" * 300, ["y" * 100], "z")
    example = data.encode_example(text, ByteTokenizer(), 128)
    assert len(example.tokens) == len(example.loss_mask) == 128
    assert example.truncated
    assert example.loss_mask.sum() == 0  # the prompt alone fills 128 tokens


def test_batches_are_padded_to_one_shape_and_fillers_carry_no_loss() -> None:
    tokenizer = ByteTokenizer()
    examples = [data.encode_example(render(f"q{i}", ["s"], "a"), tokenizer, 256) for i in range(3)]
    length = data.padded_length(examples, 256)
    assert length % 8 == 0 and length >= max(len(e.tokens) for e in examples)
    batch, count = data.make_batch(examples, 4, length, tokenizer.pad_id)
    assert batch["input_tokens"].shape == batch["input_mask"].shape == (4, length)
    assert count == sum(len(e.tokens) for e in examples)
    assert batch["input_mask"][3].sum() == 0  # filler row
    assert batch["valid_mask"][3].sum() == len(examples[0].tokens)
    n = len(examples[0].tokens)
    assert (batch["input_tokens"][0, n:] == tokenizer.pad_id).all()


def test_train_batches_cover_every_example_each_epoch() -> None:
    tokenizer = ByteTokenizer()
    examples = [data.encode_example(render(f"q{i}", ["s"], "a"), tokenizer, 128) for i in range(10)]
    batches = data.TrainBatches(examples, batch_size=4, length=64, pad_id=0, num_epochs=2)
    produced = list(batches)
    assert len(batches) == len(produced) == 6
    assert len(batches.tokens_per_step) == 6
    assert sum(batches.tokens_per_step) == 2 * sum(len(e.tokens) for e in examples)


def test_eval_split_only_for_datasets_of_twenty_or_more() -> None:
    tokenizer = ByteTokenizer()
    examples = [data.encode_example(render(f"q{i}", ["s"], "a"), tokenizer, 128) for i in range(50)]
    train_set, eval_set = data.split_train_eval(examples)
    assert (len(train_set), len(eval_set)) == (45, 5)
    assert data.split_train_eval(examples[:19]) == (examples[:19], [])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "dataset is empty"),
        ("\n\n", "dataset is empty"),
        ("{not json\n", "line 1 is not valid JSON"),
        ('["a"]\n', "line 1 is not a JSON object"),
        ('{"id": "1"}\n', "line 1 has no 'prompts' string"),
        ('{"prompts": "no turns here"}\n', "line 1: 'prompts' has no model turn"),
    ],
)
def test_invalid_datasets_are_dataset_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError) as info:
        data.read_records(path)
    assert message in info.value.reason


def test_missing_dataset_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset file not found"):
        data.read_records(tmp_path / "missing.jsonl")
    with pytest.raises(DatasetError, match="not a file"):
        data.read_records(tmp_path)


# --- model ids and logging cadence ---------------------------------------------------------------


def test_model_ids_resolve_to_tiny_local_or_hub(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    assert models.resolve_model_id("tiny-qwen3", tmp_path).kind == "tiny"
    local = models.resolve_model_id("ckpt", tmp_path)
    assert (local.kind, local.path) == ("local", tmp_path / "ckpt")
    assert models.resolve_model_id(str(tmp_path / "ckpt"), tmp_path).kind == "local"
    assert models.resolve_model_id("google/gemma-2b-it", tmp_path).kind == "hub"
    with pytest.raises(ModelError, match="unknown model 'gpt-5'"):
        models.resolve_model_id("gpt-5", tmp_path)
    with pytest.raises(ModelError, match="checkpoint directory not found"):
        models.resolve_model_id("./missing", tmp_path)


def test_checkpoint_directory_layout_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"has no config\.json"):
        models.read_checkpoint_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="unsupported model_type 'bert'"):
        models.read_checkpoint_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    with pytest.raises(ModelError, match=r"no \*\.safetensors"):
        models.read_checkpoint_config(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert models.read_checkpoint_config(tmp_path)[0] == "qwen3"


def test_short_runs_log_every_step_and_long_runs_about_150_lines() -> None:
    assert train.log_interval(60) == 1
    assert train.log_interval(200) == 1
    every = train.log_interval(3000)
    assert 100 <= 3000 // every <= 200
    assert train.eval_interval(3000, every) % every == 0


# --- CLI errors (in-process; no JAX needed) ------------------------------------------------------


def _main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    _, manifest = make_run(tmp_path, batch_size=0)
    code, _, err = _main("--config", str(manifest))
    assert code == 2
    assert err == "error: training.batch_size must be between 1 and 512, got 0\n"


def test_cli_missing_dataset_exits_3(tmp_path: Path) -> None:
    _, manifest = make_run(tmp_path, dataset=False)
    code, _, err = _main("--config", str(manifest))
    assert code == 3
    assert err.startswith("error: dataset file not found: ") and err.count("\n") == 1


def test_cli_unknown_model_exits_4(tmp_path: Path) -> None:
    _, manifest = make_run(tmp_path, model_id="tiny-gpt")
    code, _, err = _main("--config", str(manifest))
    assert code == 4
    assert err.startswith("error: unknown model 'tiny-gpt'") and err.count("\n") == 1


def test_cli_output_outside_roots_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNIX_OUTPUT_ROOTS", str(tmp_path / "data" / "outputs"))
    _, manifest = make_run(tmp_path, output_dir="/tmp/elsewhere")
    code, _, err = _main("--config", str(manifest))
    assert code == 2
    assert "outside the allowed roots" in err and err.count("\n") == 1


def test_cli_argument_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the following arguments are required: --config")
    assert err.count("\n") == 1


def test_help_and_config_errors_do_not_import_jax(tmp_path: Path) -> None:
    _, manifest = make_run(tmp_path, model_id="nope")
    code = (
        "import sys, runs.trainer.cli as c; rc = c.main(['--config', sys.argv[1]]); "
        "assert 'jax' not in sys.modules and 'django' not in sys.modules, sorted(sys.modules); "
        "sys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(manifest)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert result.returncode == 4, result.stderr
    assert result.stderr.startswith("error: unknown model 'nope'")


# --- metrics recorder -----------------------------------------------------------------------------


def _recorder(total: int, log_every: int) -> tuple[train.MetricsRecorder, io.StringIO, io.StringIO]:
    batches = data.TrainBatches([], batch_size=1, length=8, pad_id=0, num_epochs=1)
    batches.tokens_per_step = [100] * total
    metrics, out = io.StringIO(), io.StringIO()
    recorder = train.MetricsRecorder(
        total_steps=total,
        log_every=log_every,
        eval_batch_count=2,
        batches=batches,
        metrics=metrics,
        out=out,
    )
    recorder.start(0)
    return recorder, metrics, out


def test_recorder_writes_logged_steps_and_the_last_one() -> None:
    recorder, metrics, out = _recorder(total=7, log_every=3)
    recorder.record_eval(3, 5.0)  # the trainer reports the sum over eval batches
    for step in range(1, 8):
        recorder.record_step(step, 4.0 - step * 0.1)
    rows = [json.loads(line) for line in metrics.getvalue().splitlines()]
    assert [row["step"] for row in rows] == [3, 6, 7]
    assert set(rows[0]) == {"step", "loss", "eval_loss", "tokens_per_second", "elapsed_seconds"}
    assert rows[0]["eval_loss"] == 2.5 and rows[1]["eval_loss"] is None
    assert rows[0]["loss"] == pytest.approx(3.7)
    assert rows[0]["tokens_per_second"] > 0
    assert out.getvalue().splitlines()[0].startswith("step 3/7 loss 3.7000 eval_loss 2.5000 tok/s ")


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_recorder_stops_a_diverged_run(loss: float) -> None:
    recorder, metrics, _ = _recorder(total=5, log_every=1)
    recorder.record_step(1, 3.0)
    with pytest.raises(train.TrainingError, match="training diverged"):
        recorder.record_step(2, loss)
    assert len(metrics.getvalue().splitlines()) == 1


def test_compilation_cache_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("TUNIX_TRAINER_JAX_CACHE", "off")
    # A stand-in without `config`: touching JAX would raise AttributeError.
    monkeypatch.setitem(sys.modules, "jax", object())
    cli._enable_compilation_cache()


# --- LoRA, checkpoint cadence and resume keys ----------------------------------------------------

LORA = {"rank": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": ["q_proj"], "export": "merged"}


def test_optional_keys_parse_into_the_manifest(tmp_path: Path) -> None:
    manifest = _parse(
        tmp_path,
        training__checkpoint_every_n_steps=10,
        lora=LORA,
        resume={"run_id": "abc", "checkpoint_dir": "../a/checkpoints"},
    )
    assert manifest.checkpoint_every_n_steps == 10
    assert manifest.lora.rank == 8 and manifest.lora.target_modules == ("q_proj",)
    assert manifest.resume_checkpoint_dir == tmp_path.parent / "a" / "checkpoints"
    assert manifest.resume_run_id == "abc"
    plain = _parse(tmp_path)
    assert (plain.checkpoint_every_n_steps, plain.lora, plain.resume_checkpoint_dir) == (
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"training__checkpoint_every_n_steps": 0},
            "training.checkpoint_every_n_steps must be between 1 and 1000000, got 0",
        ),
        ({"lora": {**LORA, "rank": 0}}, "lora.rank must be between 1 and 256, got 0"),
        ({"lora": {**LORA, "alpha": 0}}, "lora.alpha must be > 0"),
        ({"lora": {**LORA, "dropout": 1.0}}, "lora.dropout must be >= 0 and < 1"),
        ({"lora": {**LORA, "export": "full"}}, "lora.export must be one of merged, adapter"),
        (
            {"lora": {**LORA, "target_modules": []}},
            "lora.target_modules must be a non-empty list of unique names",
        ),
        (
            {"lora": {**LORA, "target_modules": ["q_proj", "q_proj"]}},
            "lora.target_modules must be a non-empty list of unique names",
        ),
        ({"lora": {**LORA, "seed": 1}}, "unknown key(s) in lora: seed"),
        ({"lora": "yes"}, "'lora' must be a mapping"),
        ({"resume": {"run_id": "x"}}, "resume.checkpoint_dir is required"),
    ],
)
def test_optional_keys_are_validated(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(tmp_path, **changes)
    assert message in info.value.reason


def test_resume_checkpoint_dir_must_be_under_the_output_roots(tmp_path: Path) -> None:
    root = tmp_path / "data" / "outputs"
    environ = {"TUNIX_OUTPUT_ROOTS": str(root)}
    out = str(root / "b")
    ok = _parse(
        tmp_path, environ, output__output_dir=out, resume={"checkpoint_dir": str(root / "a")}
    )
    assert ok.resume_checkpoint_dir == root / "a"
    with pytest.raises(ConfigError, match=r"^resume\.checkpoint_dir .* outside the allowed roots"):
        _parse(tmp_path, environ, output__output_dir=out, resume={"checkpoint_dir": "/srv/x"})


def test_the_latest_checkpoint_is_linked_into_an_empty_checkpoints_dir(tmp_path: Path) -> None:
    source = tmp_path / "a" / "checkpoints"
    for step in (3, 12, 9):
        (source / str(step) / "model_params").mkdir(parents=True)
        (source / str(step) / "model_params" / "data").write_text(f"step {step}")
    (source / "15.orbax-checkpoint-tmp-1").mkdir()  # not finalized: ignored
    target = tmp_path / "b" / "checkpoints"
    assert train.link_latest_checkpoint(source, target) == 12
    linked = target / "12" / "model_params" / "data"
    assert linked.read_text() == "step 12"
    assert linked.stat().st_ino == (source / "12" / "model_params" / "data").stat().st_ino
    assert train.step_directories(target) == [12]
    # A run restarting in its own output directory keeps its own steps.
    assert train.link_latest_checkpoint(source, target) is None
    with pytest.raises(ConfigError, match="resume: no checkpoint in"):
        train.link_latest_checkpoint(tmp_path / "empty", tmp_path / "c")


def test_resume_compatibility_is_read_from_the_source_summary(tmp_path: Path) -> None:
    source = tmp_path / "a" / "checkpoints"
    source.mkdir(parents=True)
    manifest = _parse(tmp_path, lora=LORA, resume={"checkpoint_dir": str(source)})
    train.check_resume_source(manifest)  # no summary (an older run): not checked
    summary = source.parent / "run_summary.json"
    summary.write_text(json.dumps({"model_id": "tiny-qwen3", "lora": LORA}))
    train.check_resume_source(manifest)
    summary.write_text(json.dumps({"model_id": "tiny-llama3", "lora": LORA}))
    with pytest.raises(ConfigError, match="resume: the checkpoint's run trained model"):
        train.check_resume_source(manifest)
    summary.write_text(json.dumps({"model_id": "tiny-qwen3", "lora": None}))
    with pytest.raises(ConfigError, match="trained full-weight, this manifest asks for LoRA rank"):
        train.check_resume_source(manifest)


def test_checkpoint_cadence_and_compile_time_arithmetic() -> None:
    assert train.checkpoint_interval(27, None) == 9
    assert train.checkpoint_interval(28, None) == 10
    assert train.checkpoint_interval(1, None) == 1
    assert train.checkpoint_interval(27, 5) == 5
    assert train.compile_seconds([5.0, 0.2, 0.1, 0.3]) == pytest.approx(4.8)
    assert train.compile_seconds([0.1, 0.2, 0.3]) == 0.0
    assert train.compile_seconds([5.0]) == 0.0
    clock = train.PhaseClock()
    clock.step_started(0.0)
    clock.add_save(0.5)
    clock.step_started(2.0)
    clock.eval_started(2.5)
    clock.eval_started(2.7)  # later eval batches of the same evaluation
    clock.eval_ended(3.0)
    clock.loop_ended(3.5)
    assert clock.step_seconds == [1.5, 1.0]
    assert (clock.eval_seconds, clock.save_seconds) == (0.5, 0.5)
