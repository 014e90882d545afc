"""Steps/s and wall time of the built-in tiny models on this machine's CPU.

Runs `python -m runs.trainer` as the registry does (a subprocess in a run directory, a scrubbed
environment) on a generated tunix_sft dataset, once per tiny model, and prints one line each:

    .venv/bin/python -m bench.trainer_bench [--examples 100] [--epochs 5] [--repeat 2]

"steady steps/s" leaves out the first step, which carries JAX's compilation. Each model gets a fresh
JAX compilation cache: its first run is "cold" (compiles), the repeats are "warm" (cache hits).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from runs.tests.trainer_fixtures import make_run, read_metrics, run_trainer
from runs.trainer.models import TINY_MODELS


def bench_one(
    model_id: str, *, examples: int, epochs: int, batch_size: int, cache: Path
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="trainer-bench-") as tmp:
        run_dir, manifest = make_run(
            Path(tmp),
            model_id=model_id,
            examples=examples,
            num_epochs=epochs,
            batch_size=batch_size,
            learning_rate=3e-3,
        )
        started = time.perf_counter()
        result = run_trainer(
            manifest, timeout=900, extra_env={"TUNIX_TRAINER_JAX_CACHE": str(cache)}
        )
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"{model_id} failed ({result.returncode}): {result.stderr.strip()}")
        rows = read_metrics(run_dir)
        summary_path = Path(tmp) / "data" / "outputs" / "tunix_run_test" / "run_summary.json"
        summary = json.loads(summary_path.read_text())
    steps = len(rows)
    steady = rows[-1]["elapsed_seconds"] - rows[0]["elapsed_seconds"]
    return {
        "steps": steps,
        "wall_seconds": wall,
        "train_seconds": summary["train_seconds"],
        "first_step_seconds": rows[0]["elapsed_seconds"],
        "steady_steps_per_second": (steps - 1) / steady if steady > 0 else float("nan"),
        "tokens_per_second": summary["tokens_per_second"],
        "first_loss": rows[0]["loss"],
        "final_loss": rows[-1]["loss"],
        "parameters": summary["parameters"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--models", nargs="*", default=list(TINY_MODELS))
    args = parser.parse_args()
    print(
        f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
        f"{args.examples} examples, batch {args.batch_size}, {args.epochs} epochs",
        flush=True,
    )
    print(
        "model        cache  params  steps  wall s  train s  1st step s  steady steps/s  tok/s  "
        "loss first->last"
    )
    for model_id in args.models:
        with tempfile.TemporaryDirectory(prefix="trainer-bench-cache-") as cache:
            for attempt in range(args.repeat):
                r = bench_one(
                    model_id,
                    examples=args.examples,
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    cache=Path(cache),
                )
                label = "cold" if attempt == 0 else "warm"
                print(
                    f"{model_id:<12} {label:<5}  {r['parameters']:>6.0f}  {r['steps']:>5.0f}  "
                    f"{r['wall_seconds']:>6.1f}  {r['train_seconds']:>7.1f}  "
                    f"{r['first_step_seconds']:>10.1f}  {r['steady_steps_per_second']:>14.1f}  "
                    f"{r['tokens_per_second']:>5.0f}  {r['first_loss']:.2f}->{r['final_loss']:.2f}",
                    flush=True,
                )
    print(f"# load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
