"""The evaluation engine: config validation and the dataset rules in-process (no JAX), the exit
codes of real subprocesses, and real runs with tiny-qwen3 (`@pytest.mark.tunix`)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from evaluations.engine import cli
from evaluations.engine.config import Generation, load_config, parse_config
from evaluations.engine.generate import prompt_length, read_items, stop_tokens
from runs.tests.trainer_fixtures import render, write_dataset
from runs.trainer.errors import ConfigError, DatasetError
from runs.trainer.tokenizer import ByteTokenizer

PROJECT_ROOT = Path(__file__).absolute().parents[2]
PROGRESS = r"items (\d+)/10 \d+\.\d items/s elapsed \d+\.\ds"


def config_dict(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "version": "1.0",
        "model": {"model_id": "tiny-qwen3"},
        "dataset": {"format": "tunix_sft", "path": "data.jsonl"},
        "generation": {"max_new_tokens": 16, "temperature": 0, "seed": 0, "batch_size": 4},
        "metrics": ["answer_correctness@v1", "exact_match@v1"],
        "output": {"dir": "out"},
    }
    config.update(overrides)
    return config


def write_config(directory: Path, **overrides: Any) -> Path:
    path = directory / "eval.yaml"
    path.write_text(yaml.safe_dump(config_dict(**overrides), sort_keys=False))
    return path


def engine(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(config.parent)),
        "PYTHONPATH": str(PROJECT_ROOT),
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "evaluations.engine", "--config", str(config)],
        cwd=config.parent,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


# --- config --------------------------------------------------------------------------------------


def test_config_defaults_and_paths_resolve_against_its_directory(tmp_path: Path) -> None:
    data = config_dict()
    del data["generation"]
    config = parse_config(data, config_path=tmp_path / "eval.yaml", environ={})
    assert config.generation == Generation(max_new_tokens=64, temperature=0.0, seed=0, batch_size=8)
    assert config.dataset_path == tmp_path / "data.jsonl"
    assert config.output_dir == tmp_path / "out"
    assert config.metrics == ("answer_correctness@v1", "exact_match@v1")
    assert config.model_roots is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"version": "2.0"}, "version must be '1.0'"),
        ({"extra": 1}, "unknown key(s) in config: extra"),
        ({"model": {"model_id": "tiny-qwen3", "revision": "x"}}, "unknown key(s) in model"),
        ({"model": {"model_id": ""}}, "model.model_id must not be empty"),
        ({"model": {"model_id": 3}}, "model.model_id must be a string"),
        ({"dataset": {"format": "csv", "path": "x"}}, "dataset.format must be 'tunix_sft'"),
        ({"dataset": {"format": "tunix_sft"}}, "dataset.path is required"),
        ({"generation": {"max_new_tokens": 0}}, "generation.max_new_tokens must be between 1"),
        ({"generation": {"max_new_tokens": 4097}}, "between 1 and 4096, got 4097"),
        ({"generation": {"batch_size": 257}}, "generation.batch_size must be between 1 and 256"),
        ({"generation": {"batch_size": 2.0}}, "generation.batch_size must be an integer"),
        ({"generation": {"seed": -1}}, "generation.seed must be between 0"),
        ({"generation": {"seed": True}}, "generation.seed must be an integer"),
        ({"generation": {"temperature": -0.1}}, "generation.temperature must be finite and >= 0"),
        ({"generation": {"temperature": "hot"}}, "generation.temperature must be a number"),
        ({"generation": {"top_p": 0.9}}, "unknown key(s) in generation: top_p"),
        ({"generation": []}, "'generation' must be a mapping"),
        ({"metrics": []}, "metrics must be a non-empty list"),
        ({"metrics": None}, "metrics is required"),
        ({"metrics": ["accuracy"]}, "unknown metric(s) 'accuracy': known metrics are"),
        ({"metrics": ["exact_match@v1", "exact_match@v1"]}, "metrics must not repeat"),
        ({"output": {}}, "output.dir is required"),
        ({"output": "out"}, "'output' must be a mapping"),
    ],
)
def test_config_is_validated_strictly(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(config_dict(**overrides), config_path=tmp_path / "eval.yaml", environ={})
    assert message in raised.value.reason


def test_config_missing_section_and_bad_files(tmp_path: Path) -> None:
    data = config_dict()
    del data["model"]
    with pytest.raises(ConfigError, match="missing the 'model' section"):
        parse_config(data, config_path=tmp_path / "eval.yaml", environ={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("version: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(tmp_path / "list.yaml")


def test_output_dir_must_lie_under_the_output_roots(tmp_path: Path) -> None:
    roots = {"TUNIX_OUTPUT_ROOTS": str(tmp_path / "allowed")}
    with pytest.raises(ConfigError, match=r"output\.dir .* is outside the allowed roots"):
        parse_config(config_dict(), config_path=tmp_path / "eval.yaml", environ=roots)
    inside = config_dict(output={"dir": str(tmp_path / "allowed" / "eval-1")})
    config = parse_config(inside, config_path=tmp_path / "eval.yaml", environ=roots)
    assert config.output_dir == tmp_path / "allowed" / "eval-1"
    models = parse_config(
        config_dict(), config_path=tmp_path / "eval.yaml", environ={"TUNIX_MODEL_ROOTS": "/m"}
    )
    assert models.model_roots == [Path("/m")]


# --- dataset items and generation helpers --------------------------------------------------------


def test_items_take_the_prompt_up_to_the_model_turn_and_the_expected_answer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data.jsonl"
    with_answer = render("What is 2+2?", ["Add"], "4")
    two_turns = (
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nAnd 3+3?<end_of_turn>\n<start_of_turn>model\nAnswer: 6<end_of_turn>"
    )
    lines = [
        {"prompts": with_answer, "final_answer": "4"},
        "",
        {"prompts": two_turns},
        {"prompts": with_answer, "final_answer": 4},
    ]
    path.write_text("\n".join(json.dumps(x) if x else "" for x in lines) + "\n")
    items = read_items(path)
    assert [(i.index, i.line) for i in items] == [(0, 1), (1, 3), (2, 4)]
    assert (
        items[0].prompt == "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"
    )
    assert items[0].expected == "4"
    assert items[1].prompt.endswith("And 3+3?<end_of_turn>\n<start_of_turn>model\n")
    assert items[1].prompt.count("<start_of_turn>model\n") == 2
    assert items[1].expected == "Answer: 6"
    assert items[2].expected == "4"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "dataset is empty"),
        ("{not json\n", "dataset line 1 is not valid JSON"),
        ('\n["x"]\n', "dataset line 2 is not a JSON object"),
        ('{"final_answer": "4"}\n', "dataset line 1 has no 'prompts' string"),
        ('{"prompts": "no model turn"}\n', "dataset line 1: 'prompts' has no model turn"),
        (
            json.dumps({"prompts": render("q", [], "a"), "final_answer": ["a"]}) + "\n",
            "'final_answer' must be a string or a number",
        ),
    ],
)
def test_bad_datasets_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError) as raised:
        read_items(path)
    assert message in raised.value.reason
    with pytest.raises(DatasetError, match="dataset file not found"):
        read_items(tmp_path / "missing.jsonl")


def test_stop_tokens_and_prompt_length() -> None:
    assert stop_tokens(ByteTokenizer()) == [ByteTokenizer.EOS, ByteTokenizer.END_OF_TURN_ID]
    assert prompt_length([1, 16]) == 16
    assert prompt_length([17, 3]) == 32


# --- exit codes (subprocesses that stop before JAX) ----------------------------------------------


def test_exit_codes_for_config_dataset_and_model_errors(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data.jsonl", 3)
    bad_config = write_config(tmp_path, generation={"batch_size": 0})
    result = engine(bad_config)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: generation.batch_size must be between 1 and 256, got 0"
    ]
    assert result.stdout == ""

    no_dataset = write_config(tmp_path, dataset={"format": "tunix_sft", "path": "none.jsonl"})
    result = engine(no_dataset)
    assert result.returncode == 3
    assert result.stderr.strip() == f"error: dataset file not found: {tmp_path / 'none.jsonl'}"

    unknown_model = write_config(tmp_path, model={"model_id": "no-such-model"})
    result = engine(unknown_model)
    assert result.returncode == 4
    assert result.stderr.startswith("error: unknown model 'no-such-model'")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()

    outside = write_config(tmp_path, model={"model_id": str(tmp_path)})
    result = engine(outside, TUNIX_MODEL_ROOTS=str(tmp_path / "models"))
    assert result.returncode == 4
    assert "is outside the model roots" in result.stderr


def test_usage_error_and_an_unexpected_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([])
    assert exited.value.code == 2

    write_dataset(tmp_path / "data.jsonl", 3)
    config = write_config(tmp_path)
    (tmp_path / "out").mkdir()

    def explode(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("sampler\nbroke")

    monkeypatch.setattr(cli, "evaluate", explode)
    err = io.StringIO()
    assert cli.main(["--config", str(config)], out=io.StringIO(), err=err) == 1
    where = tmp_path / "out" / cli.TRACEBACK_FILE
    assert err.getvalue() == (
        f"error: evaluation failed: RuntimeError: sampler broke (traceback in {where})\n"
    )
    assert "RuntimeError" in where.read_text()


# --- real runs -----------------------------------------------------------------------------------


def predictions(output_dir: Path) -> list[str]:
    rows = [json.loads(line) for line in (output_dir / cli.ITEMS_FILE).read_text().splitlines()]
    return [row["prediction"] for row in rows]


@pytest.fixture(scope="module")
def first_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    directory = tmp_path_factory.mktemp("eval")
    write_dataset(directory / "data.jsonl", 10)
    config = write_config(directory)
    return directory, engine(config)


@pytest.mark.tunix
def test_engine_run_writes_items_and_summary(
    first_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    directory, result = first_run
    assert result.returncode == 0, result.stderr
    rows = [
        json.loads(line) for line in (directory / "out" / "items.jsonl").read_text().splitlines()
    ]
    assert [row["index"] for row in rows] == list(range(10))
    items = read_items(directory / "data.jsonl")
    for row, item in zip(rows, items, strict=True):
        assert set(row) == {"index", "prompt", "expected", "prediction", "scores"}
        assert (row["prompt"], row["expected"]) == (item.prompt, item.expected)
        assert set(row["scores"]) == {"answer_correctness@v1", "exact_match@v1"}
        assert all(0.0 <= score <= 1.0 for score in row["scores"].values())
    summary = json.loads((directory / "out" / "summary.json").read_text())
    assert summary["model_id"] == "tiny-qwen3"
    assert summary["n"] == 10
    assert summary["dataset"] == str(directory / "data.jsonl")
    for name in ("answer_correctness@v1", "exact_match@v1"):
        aggregate = summary["metrics"][name]
        assert aggregate["count"] == 10
        assert 0.0 <= aggregate["ci_low"] <= aggregate["mean"] <= aggregate["ci_high"] <= 1.0
    assert summary["items_per_second"] > 0
    assert summary["generation"]["batch_size"] == 4
    assert summary["generation"]["greedy"] is True
    lines = result.stdout.splitlines()
    progress = [re.fullmatch(PROGRESS, line) for line in lines if line.startswith("items ")]
    assert [int(match[1]) for match in progress if match] == [4, 8, 10]
    assert len(progress) == 3
    assert lines[-1].startswith("done: 10 items, answer_correctness@v1 ")


@pytest.mark.tunix
def test_greedy_is_deterministic_and_the_same_batched_or_one_at_a_time(
    first_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    directory, result = first_run
    assert result.returncode == 0, result.stderr
    # Two more runs in one process: the same config again, and one prompt per call.
    again = write_config(directory, output={"dir": "again"})
    (directory / "single").mkdir()
    single = directory / "single" / "eval.yaml"
    single.write_text(
        yaml.safe_dump(
            config_dict(
                dataset={"format": "tunix_sft", "path": str(directory / "data.jsonl")},
                generation={"max_new_tokens": 16, "batch_size": 1},
            )
        )
    )
    script = (
        "import sys; from evaluations.engine.cli import main; "
        "sys.exit(main(['--config', sys.argv[1]]) or main(['--config', sys.argv[2]]))"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(again), str(single)],
        cwd=directory,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    first = predictions(directory / "out")
    assert len(first) == 10
    assert predictions(directory / "again") == first
    assert predictions(directory / "single" / "out") == first
