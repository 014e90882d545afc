"""scripts/device-check.sh: its plan prints without training anything (no GPU needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "device-check.sh"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dry_run_prints_the_gpu_plan_without_training():
    result = _run("--dry-run")
    assert result.returncode == 0, result.stderr
    assert "tiny-qwen3, random-qwen3-0.6b x (full, lora) x (by hand, worker)" in result.stdout
    assert "batch 8, max_seq_length 1024" in result.stdout


def test_quick_cpu_dry_run_plans_the_tiny_model_only():
    result = _run("--cpu", "--quick", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "plan: tiny-qwen3 x (full, lora)" in result.stdout
    assert "device cpu (--cpu)" in result.stdout


def test_help_names_the_options():
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    for option in ("--cpu", "--quick", "--steps", "--dry-run"):
        assert option in result.stdout
