"""Helpers for the trainer tests: generated tunix_sft datasets, manifests, and trainer runs."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def render(prompt: str, steps: list[str], answer: str) -> str:
    """The Gemma chat rendering of a trace (user turn, model turn with reasoning and answer)."""
    reasoning = "Reasoning:\n" + "".join(f"{k}. {step}\n" for k, step in enumerate(steps, start=1))
    return (
        f"<start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n"
        f"{reasoning}Answer: {answer}<end_of_turn>"
    )


def write_dataset(path: Path, count: int, *, seed: int = 1) -> Path:
    """`count` small arithmetic traces in tunix_sft format."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(count):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        record = {
            "id": f"00000000-0000-0000-0000-{index:012d}",
            "prompts": render(f"What is {a}+{b}?", [f"Add {a} and {b}", "Verify"], str(a + b)),
            "final_answer": str(a + b),
            "metadata": {"format": "tunix_sft", "trace_version": "1.0"},
        }
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def manifest_dict(
    *,
    model_id: str = "tiny-qwen3",
    dataset_path: str = "./datasets/arith-v1.jsonl",
    output_dir: str,
    learning_rate: float = 3e-3,
    num_epochs: int = 1,
    batch_size: int = 8,
    max_seq_length: int = 256,
    checkpoint_every_n_steps: int | None = None,
    lora: dict[str, Any] | None = None,
    resume: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The training manifest's shape, key order included (optional keys only when given)."""
    training: dict[str, Any] = {
        "learning_rate": learning_rate,
        "num_epochs": num_epochs,
        "batch_size": batch_size,
        "max_seq_length": max_seq_length,
    }
    if checkpoint_every_n_steps is not None:
        training["checkpoint_every_n_steps"] = checkpoint_every_n_steps
    doc: dict[str, Any] = {
        "version": "1.0",
        "runner": "tunix",
        "mode": "sft",
        "model": {"model_id": model_id},
        "dataset": {"format": "tunix_sft", "path": dataset_path},
        "training": training,
    }
    if lora is not None:
        doc["lora"] = lora
    if resume is not None:
        doc["resume"] = resume
    doc["output"] = {"output_dir": output_dir}
    return doc


def write_manifest(run_dir: Path, data: dict[str, Any]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "manifest.yaml"
    path.write_text(
        yaml.dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True),
        encoding="utf-8",
    )
    return path


def make_run(
    tmp: Path,
    *,
    examples: int = 50,
    dataset: bool = True,
    lora: dict[str, Any] | None = None,
    checkpoint_every_n_steps: int | None = None,
    resume: dict[str, Any] | None = None,
    **manifest: Any,
) -> tuple[Path, Path]:
    """A run directory like the registry's: manifest.yaml and datasets/arith-v1.jsonl.

    `lora`, `checkpoint_every_n_steps` and `resume` are written as the registry writes them."""
    run_dir = tmp / "run"
    if dataset:
        write_dataset(run_dir / "datasets" / "arith-v1.jsonl", examples)
    manifest.setdefault("output_dir", str(tmp / "data" / "outputs" / "tunix_run_test"))
    doc = manifest_dict(
        lora=lora, checkpoint_every_n_steps=checkpoint_every_n_steps, resume=resume, **manifest
    )
    return run_dir, write_manifest(run_dir, doc)


def run_trainer(
    manifest: Path, *, extra_env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """`python -m runs.trainer --config manifest` as the registry starts it."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(PROJECT_ROOT),
        "HF_HUB_OFFLINE": "1",
    }
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "runs.trainer", "--config", str(manifest)],
        cwd=manifest.parent,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]
