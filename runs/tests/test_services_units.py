"""The pure helpers of runs: truncation, output directories, metrics files, processes, manifest."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from runs.manifest import manifest_yaml
from runs.metrics import metrics_parse, metrics_summary
from runs.outcomes import OUTPUT_LIMIT_BYTES, TRUNCATION_MARKER, log_excerpt, truncate_output
from runs.outputs import OutputDirRefused, output_dir_resolve
from runs.processes import process_alive, process_fingerprint


def test_truncation_keeps_short_output_unchanged() -> None:
    assert truncate_output(b"") == ""
    assert truncate_output(b"x" * OUTPUT_LIMIT_BYTES) == "x" * OUTPUT_LIMIT_BYTES
    text = "é" * (OUTPUT_LIMIT_BYTES // 2)
    assert truncate_output(text.encode()) == text


def test_truncation_is_head_only_with_the_marker() -> None:
    data = b"h" * OUTPUT_LIMIT_BYTES + b"TAIL"
    assert truncate_output(data) == "h" * OUTPUT_LIMIT_BYTES + TRUNCATION_MARKER
    assert TRUNCATION_MARKER.encode() == b"\n\n[... output truncated to 10240 bytes ...]"
    assert len(TRUNCATION_MARKER.encode()) == 43


@pytest.mark.parametrize("prefix", [10239, 10238])
def test_truncation_drops_a_character_cut_at_the_boundary(prefix: int) -> None:
    # A 3-byte character straddling byte 10,240 is dropped whole.
    data = b"a" * prefix + "€".encode() + b"z" * 10
    assert truncate_output(data) == "a" * prefix + TRUNCATION_MARKER


def test_truncation_keeps_a_character_ending_on_the_boundary() -> None:
    data = b"a" * (OUTPUT_LIMIT_BYTES - 2) + "é".encode() + b"z"
    assert truncate_output(data) == "a" * (OUTPUT_LIMIT_BYTES - 2) + "é" + TRUNCATION_MARKER


def test_log_excerpt_reads_only_what_truncation_needs(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    log.write_bytes(b"x" * (OUTPUT_LIMIT_BYTES + 5000))
    assert log_excerpt(log) == "x" * OUTPUT_LIMIT_BYTES + TRUNCATION_MARKER
    log.write_bytes(b"short\n")
    assert log_excerpt(log) == "short\n"
    assert log_excerpt(tmp_path / "missing.log") == ""


RUN = uuid.UUID("12345678-1234-4234-8234-123456789abc")


def test_default_output_dir_is_under_outputs(data_dir: Path) -> None:
    stored, absolute = output_dir_resolve(run_id=RUN, output_dir=None)
    assert stored == "outputs/tunix_run_12345678"
    assert absolute == data_dir.resolve() / "outputs/tunix_run_12345678"


@pytest.mark.parametrize(
    ("given", "stored"),
    [("a", "outputs/a"), ("./output/b", "outputs/output/b"), ("x/../y", "outputs/y")],
)
def test_relative_output_dirs_resolve_under_outputs(given: str, stored: str) -> None:
    assert output_dir_resolve(run_id=RUN, output_dir=given)[0] == stored


def test_symlink_out_of_outputs_is_refused(data_dir: Path, tmp_path: Path) -> None:
    (data_dir / "outputs").mkdir()
    (data_dir / "outputs/link").symlink_to(tmp_path)
    with pytest.raises(OutputDirRefused, match="must stay inside the outputs directory"):
        output_dir_resolve(run_id=RUN, output_dir="link/x")


def test_output_roots_setting_allows_absolute_dirs(settings: Any, tmp_path: Path) -> None:
    root = (tmp_path / "ckpt").resolve()
    with pytest.raises(OutputDirRefused, match="allowed output roots"):
        output_dir_resolve(run_id=RUN, output_dir=str(root / "a"))
    settings.TUNIX_OUTPUT_ROOTS = [root]
    assert output_dir_resolve(run_id=RUN, output_dir=str(root / "a")) == (
        str(root / "a"),
        root / "a",
    )
    with pytest.raises(OutputDirRefused):
        output_dir_resolve(run_id=RUN, output_dir=str(root / ".." / "elsewhere"))


def test_metrics_file_parsing_skips_bad_lines(tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [
        {"step": 1, "loss": 3.0, "eval_loss": None, "tokens_per_second": 10, "elapsed_seconds": 1},
        "garbage",
        {"step": True, "loss": 1.0},
        {"step": -1, "loss": 1.0},
        {"step": 2, "loss": "low"},
        {"step": 3, "loss": float("nan")},
        [1, 2],
        {"step": 2, "loss": 2.0, "eval_loss": 2.5, "tokens_per_second": 30},
        {"step": 1, "loss": 2.9, "eval_loss": 2.2},
    ]
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n\n")
    rows = metrics_parse(path, run_id=RUN)
    assert [(r["step"], r["loss"], r["eval_loss"]) for r in rows] == [(1, 2.9, 2.2), (2, 2.0, 2.5)]
    assert sum("malformed" in r.message for r in caplog.records) == 6
    assert metrics_summary(rows) == {
        "metrics_steps": 2,
        "metrics_count": 2,
        "final_loss": 2.0,
        "best_eval_loss": 2.2,
        "tokens_per_second": 30.0,
    }


def test_missing_metrics_file_is_no_metrics(tmp_path: Path) -> None:
    assert metrics_parse(tmp_path / "none.jsonl", run_id=RUN) == []
    assert metrics_summary([]) == {}


def test_process_identity() -> None:
    import os
    import subprocess
    import sys

    me = os.getpid()
    assert process_alive(me)
    assert process_alive(me, process_fingerprint(me))
    assert not process_alive(me, "another-boot:1")
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert not process_alive(done.pid)
    assert not process_alive(0)


@pytest.mark.parametrize(
    "model_id",
    ["google/gemma-2b-it", "yes", "1.0", "a: b", "é ü ✅", "- x", "'q'", "#x", "x\ny", " sp",
     "null", "~", "@x", "1e5", "0x10", "k" * 256],
)  # fmt: skip
def test_manifest_yaml_is_byte_identical_to_pyyaml_dump(model_id: str) -> None:
    import yaml

    args: dict[str, Any] = {
        "learning_rate": 2e-5,
        "num_epochs": 3,
        "batch_size": 8,
        "max_seq_length": 2048,
    }
    expected = yaml.dump(
        {
            "version": "1.0",
            "runner": "tunix",
            "mode": "sft",
            "model": {"model_id": model_id},
            "dataset": {"format": "tunix_sft", "path": "./datasets/k-v1.jsonl"},
            "training": args,
            "output": {"output_dir": "/data/outputs/x y"},
        },
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
    )
    text = manifest_yaml(
        dataset_key="k-v1", model_id=model_id, output_dir="/data/outputs/x y", **args
    )
    assert text == expected
