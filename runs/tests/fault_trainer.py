"""A stand-in trainer for the fault tests, driven by the manifest's model_id.

The fault tests (runs/tests/test_faults_*.py) point a worker's
TUNIX_TRAINER_COMMAND at `<python> <this file>`. Every behaviour first appends a
line to `starts` in its working directory (the run directory), so the tests
count how many times a run's trainer was started, on any worker:

- `fault-quick`: prints two lines, writes one metrics step; exits 0.
- `fault-hold`: prints `step 1`..`step 3`, then waits until `go.flag` exists in
  the run directory or in its parent (`<data dir>/runs/go.flag`, which releases
  every held run of that data directory), 300 s at most (then exits 1); prints
  `released`, exits 0.
- `fault-stubborn`: ignores SIGTERM (and says so on stdout each time it gets
  one), starts a child (`--child`, in its process group and run directory) that
  ignores SIGTERM too, prints `stubborn`, sleeps 300 s; only SIGKILL stops it.

It imports only the standard library and PyYAML, and finds its own processes by
this file's path in their command line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import yaml

HOLD_SECONDS = 300.0


def _say(text: str) -> None:
    print(text, flush=True)


def _ignore_sigterm(signum: int, frame: FrameType | None) -> None:
    _say("SIGTERM ignored")


def main(argv: list[str]) -> int:
    if argv == ["--child"]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(HOLD_SECONDS)
        return 0
    if len(argv) != 2 or argv[0] != "--config":
        print("usage: fault_trainer.py --config MANIFEST", file=sys.stderr)
        return 2
    manifest = yaml.safe_load(Path(argv[1]).read_text(encoding="utf-8"))
    behaviour = manifest["model"]["model_id"]
    cwd = Path.cwd()
    with (cwd / "starts").open("a", encoding="utf-8") as starts:
        starts.write(f"{os.getpid()}\n")

    if behaviour == "fault-quick":
        _say(f"quick run in {cwd.name}")
        (cwd / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.5}) + "\n")
        _say("done")
        return 0
    if behaviour == "fault-hold":
        for step in (1, 2, 3):
            _say(f"step {step}")
        deadline = time.monotonic() + HOLD_SECONDS
        while not ((cwd / "go.flag").exists() or (cwd.parent / "go.flag").exists()):
            if time.monotonic() > deadline:
                print("never released", file=sys.stderr)
                return 1
            time.sleep(0.05)
        _say("released")
        return 0
    if behaviour == "fault-stubborn":
        signal.signal(signal.SIGTERM, _ignore_sigterm)
        subprocess.Popen([sys.executable, __file__, "--child"])
        _say("stubborn")
        deadline = time.monotonic() + HOLD_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.1)
        return 0
    print(f"unknown model: {behaviour}", file=sys.stderr)
    return 4


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
