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

It imports only the standard library and PyYAML.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

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
    print(f"unknown model: {behaviour}", file=sys.stderr)
    return 4


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
