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
    """tiny-qwen3, 50 examples (45 train / 5 eval), batch 8, 4 epochs: 24 steps."""
    tmp = tmp_path_factory.mktemp("qwen")
    roots = tmp / "data" / "outputs"
    run_dir, manifest = make_run(
        tmp, num_epochs=4, output_dir=str(roots / "tunix_run_qwen"), learning_rate=3e-3
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

    def test_metrics_jsonl_has_one_object_per_step_with_exact_keys(
        self, qwen_run: dict[str, Any]
    ) -> None:
        rows = read_metrics(qwen_run["run_dir"])
        assert [row["step"] for row in rows] == list(range(1, 25))
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
                r"step \d+/24 loss \d+\.\d{4}( eval_loss \d+\.\d{4})? tok/s \d+ elapsed [\d.]+s",
                line,
            )
        ]
        assert len(lines) == 24
        assert "45 train / 5 eval" in qwen_run["result"].stdout

    def test_writes_checkpoint_model_and_summary(self, qwen_run: dict[str, Any]) -> None:
        output_dir: Path = qwen_run["output_dir"]
        assert (output_dir / "checkpoints" / "24" / "model_params").is_dir()
        assert {p.name for p in (output_dir / "model").iterdir()} == {
            "config.json",
            "model.safetensors",
            "byte_tokenizer.json",
        }
        summary = json.loads((output_dir / "run_summary.json").read_text())
        assert summary["trained_steps"] == 24
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
    """Model resolution (c): Tunix's hub path, no network, never an interactive login."""
    run_dir, manifest = make_run(tmp_path, model_id="google/gemma-2b-it")
    result = run_trainer(manifest, timeout=120)
    assert result.returncode == 4
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: cannot load hub model 'google/gemma-2b-it': offline")
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
