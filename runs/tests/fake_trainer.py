"""A stand-in for `python -m runs.trainer`, driven by the manifest's model_id.

Tests point settings.TUNIX_TRAINER_COMMAND at `[sys.executable, <this file>]`
(see the `fake_trainer` fixture in runs/tests/conftest.py): a real subprocess
with the real manifest, run directory, environment and process group, whose
behaviour is chosen by the model id:

- `fake-ok`: prints progress, checks the materialised dataset the manifest
  names, writes metrics.jsonl (3 valid steps, one malformed line) and a
  checkpoint into the output dir; exits 0.
- `fake-big`: prints 10,239 ASCII bytes + "é" + 2,000 more bytes to stdout and
  11,000 bytes to stderr; exits 0.
- `fake-fail`: prints a reason to stderr; exits 3.
- `fake-sleep`: spawns a child (its pid in child.pid), prints, sleeps for ever.
- `fake-env`: writes its environment to env.json; exits 0.
- `fake-wait`: writes started.flag, waits for go.flag (60 s at most); exits 0.
- `fake-stream`: writes trainer.pid, then every 20 ms prints a line (with "é")
  and appends a metrics.jsonl step, until go.flag appears (60 s at most); exits 0.
- `fake-flood`: prints 3,000 lines of 100 bytes with multi-byte characters to
  stdout and 6 lines to stderr, interleaved; exits 0.
- `fake-stubborn`: writes trainer.pid, ignores SIGTERM, prints a line and one
  metrics step, then sleeps for ever.
- `fake-artifacts`: writes two files, a directory and a symbolic link into the
  output dir; exits 0.
- `fake-train`: leaves what the real trainer leaves in the output dir: a
  run_summary.json (its resume and lora sections echoing the manifest's),
  checkpoints/2/ and checkpoints/4/, and an exported model/ (config.json,
  README.md); writes the manifest it was given to manifest.seen; exits 0.

It imports only the standard library and PyYAML.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--config":
        print("usage: fake_trainer.py --config MANIFEST", file=sys.stderr)
        return 2
    manifest = yaml.safe_load(Path(argv[1]).read_text(encoding="utf-8"))
    behaviour = manifest["model"]["model_id"]
    cwd = Path.cwd()

    if behaviour == "fake-ok":
        data = cwd / manifest["dataset"]["path"]
        lines = data.read_text(encoding="utf-8").splitlines()
        print(f"dataset {data.name}: {len(lines)} examples")
        with (cwd / "metrics.jsonl").open("w") as metrics:
            for step, loss in ((10, 2.5), (20, 1.75), (30, 1.25)):
                eval_loss = {10: None, 20: 1.9, 30: 1.6}[step]
                record = {
                    "step": step,
                    "loss": loss,
                    "eval_loss": eval_loss,
                    "tokens_per_second": float(step * 100),
                    "elapsed_seconds": step / 10,
                }
                metrics.write(json.dumps(record) + "\n")
                print(f"step {step} loss {loss}", flush=True)
                if step == 20:
                    metrics.write("{not json\n")
                    metrics.write(json.dumps({"step": "x", "loss": 1.0}) + "\n")
        output = Path(manifest["output"]["output_dir"])
        output.mkdir(parents=True, exist_ok=True)
        (output / "checkpoint.txt").write_text("weights\n")
        print("done")
        return 0
    if behaviour == "fake-big":
        sys.stdout.buffer.write(b"a" * 10239 + "é".encode() + b"b" * 2000)
        sys.stderr.buffer.write(b"e" * 11000)
        return 0
    if behaviour == "fake-fail":
        print("partial output")
        print("error: unknown model", file=sys.stderr)
        return 3
    if behaviour == "fake-sleep":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        (cwd / "child.pid").write_text(str(child.pid))
        print("started, sleeping", flush=True)
        print("a warning before the timeout", file=sys.stderr, flush=True)
        time.sleep(300)
        return 0
    if behaviour == "fake-env":
        (cwd / "env.json").write_text(json.dumps(dict(os.environ)))
        return 0
    if behaviour == "fake-wait":
        (cwd / "started.flag").write_text("1")
        deadline = time.monotonic() + 60
        while not (cwd / "go.flag").exists():
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.02)
        print("released")
        return 0
    if behaviour == "fake-stream":
        (cwd / "trainer.pid").write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        with (cwd / "metrics.jsonl").open("w") as metrics:
            step = 0
            while not (cwd / "go.flag").exists():
                if time.monotonic() > deadline:
                    return 1
                step += 1
                print(f"step {step} é", flush=True)
                metrics.write(json.dumps({"step": step, "loss": 10.0 / step}) + "\n")
                metrics.flush()
                time.sleep(0.02)
        print("released", flush=True)
        return 0
    if behaviour == "fake-flood":
        for number in range(3000):
            line = f"{number:06d} " + "é€" * 18 + "x" * (100 - 7 - 18 * 5 - 1)
            sys.stdout.write(line + "\n")
            if number % 500 == 0:
                sys.stderr.write(f"warn {number:06d}\n")
        return 0
    if behaviour == "fake-stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        (cwd / "trainer.pid").write_text(str(os.getpid()))
        (cwd / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 3.0}) + "\n")
        print("stubborn: ignoring SIGTERM", flush=True)
        time.sleep(300)
        return 0
    if behaviour == "fake-artifacts":
        output = Path(manifest["output"]["output_dir"])
        output.mkdir(parents=True, exist_ok=True)
        (output / "model.bin").write_bytes(bytes(range(256)) * 4096)
        (output / "notes.txt").write_text("trained\n")
        (output / "checkpoints").mkdir(exist_ok=True)
        (output / "checkpoints" / "inner.bin").write_bytes(b"x")
        (output / "link.txt").symlink_to(output / "notes.txt")
        return 0
    if behaviour == "fake-train":
        return _fake_train(manifest, cwd)
    print(f"unknown model: {behaviour}", file=sys.stderr)
    return 4


def _fake_train(manifest: dict[str, Any], cwd: Path) -> int:
    output = Path(manifest["output"]["output_dir"])
    (cwd / "manifest.seen").write_text(json.dumps(manifest))
    for step in (2, 4):
        (output / "checkpoints" / str(step)).mkdir(parents=True, exist_ok=True)
        (output / "checkpoints" / str(step) / "state").write_bytes(b"s" * step)
    (output / "checkpoints" / "6.orbax-checkpoint-tmp-1").mkdir()
    (output / "model").mkdir()
    (output / "model" / "config.json").write_text('{"model_type": "qwen3"}')
    (output / "model" / "README.md").write_text(f"# run {os.environ.get('TUNIX_RUN_ID')}\n")
    resume = manifest.get("resume")
    summary = {
        "final": True,
        "model_id": manifest["model"]["model_id"],
        "parameters": 91456,
        "trainable_parameters": 12288 if manifest.get("lora") else 91456,
        "total_steps": 4,
        "trained_steps": 4,
        "steps_per_second": 110.5,
        "tokens_per_second": 9000.25,
        "train_seconds": 0.5,
        "phases": {"load": 1.5, "compile": 2.0, "train": 0.5, "eval": 0.25, "save": 0.125},
        "peak_host_memory_bytes": 512 << 20,
        "peak_device_memory_bytes": None,
        "device": "cpu",
        "export_format": (manifest.get("lora") or {}).get("export", "full"),
        "lora": manifest.get("lora"),
        "resumed_from": {"run_id": resume["run_id"], "step": 4, "restore_seconds": 0.75}
        if resume
        else None,
    }
    (output / "run_summary.json").write_text(json.dumps(summary))
    print("trained 4 steps")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
