"""Items/s of the evaluation engine's generation: batched beside one prompt at a time.

    .venv/bin/python -m bench.eval_bench [--items 500] [--batch-sizes 16 32 64 128] [--repeat 3]

In one process, loads tiny-qwen3 once and generates answers to every item of a generated
tunix_sft dataset with the engine's Generator (Tunix's sampler, greedy, 64 new tokens), once per
batch size, batch size 1 included. Each batch size is compiled first (one warm-up call, timed
apart as "compile s"); then, `--repeat` times, all items are generated at every batch size in
turn (so each repeat sees the same load on a shared machine). "items/s" is the median over the
repeats, "vs batch 1" the median of the per-repeat ratios.
Then, with `--engine` (the default), the engine itself runs as a subprocess at batch size 1 and
at the fastest batch size, and its summary's items/s (compilation included, warm JAX cache) and
the process's wall time are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from evaluations.engine.config import Generation
from evaluations.engine.generate import Generator, read_items
from runs.tests.trainer_fixtures import PROJECT_ROOT, write_dataset


def one_pass(generator: Generator, prompts: list[str]) -> float:
    """Items/s of generating an answer to every prompt."""
    started = time.perf_counter()
    for start in range(0, len(prompts), generator.batch_size):
        generator.generate(prompts[start : start + generator.batch_size])
    return len(prompts) / (time.perf_counter() - started)


def steady(
    model: Any, tokenizer: Any, prompts: list[str], *, sizes: list[int], tokens: int, repeat: int
) -> dict[int, dict[str, float]]:
    """Per batch size: compile seconds, median items/s, and the median of its per-repeat ratio to
    batch size 1. Each repeat times every batch size in turn, so all of them share the same
    moment's load on a shared machine."""
    generators: dict[int, Generator] = {}
    compile_seconds: dict[int, float] = {}
    for size in sizes:
        settings = Generation(max_new_tokens=tokens, batch_size=size)
        generators[size] = generator = Generator(model, tokenizer, settings, prompts=prompts)
        started = time.perf_counter()
        generator.generate(prompts[: generator.batch_size])
        compile_seconds[size] = time.perf_counter() - started
    rates: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(repeat):
        for size in sizes:
            rates[size].append(one_pass(generators[size], prompts))
    return {
        size: {
            "compile": compile_seconds[size],
            "rate": statistics.median(rates[size]),
            "low": min(rates[size]),
            "high": max(rates[size]),
            "ratio": statistics.median(
                r / one for r, one in zip(rates[size], rates[1], strict=True)
            ),
        }
        for size in sizes
    }


def engine_run(directory: Path, dataset: Path, *, batch_size: int, tokens: int) -> dict[str, float]:
    run_dir = directory / f"engine-b{batch_size}"
    run_dir.mkdir()
    config = {
        "version": "1.0",
        "model": {"model_id": "tiny-qwen3"},
        "dataset": {"format": "tunix_sft", "path": str(dataset)},
        "generation": {"max_new_tokens": tokens, "batch_size": batch_size},
        "metrics": ["answer_correctness@v1", "exact_match@v1"],
        "output": {"dir": "out"},
    }
    (run_dir / "eval.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(run_dir)),
        "PYTHONPATH": str(PROJECT_ROOT),
        "HF_HUB_OFFLINE": "1",
    }
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "evaluations.engine", "--config", "eval.yaml"],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"engine failed ({result.returncode}): {result.stderr.strip()}")
    summary = json.loads((run_dir / "out" / "summary.json").read_text())
    return {"rate": summary["items_per_second"], "wall": wall, **summary["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[16, 32, 64, 128])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engine", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()

    from runs.trainer.cli import _enable_compilation_cache, _quiet_libraries
    from runs.trainer.models import load_model, resolve_model_id

    _quiet_libraries()
    _enable_compilation_cache()
    with tempfile.TemporaryDirectory(prefix="eval-bench-") as tmp:
        directory = Path(tmp)
        dataset = write_dataset(directory / "data.jsonl", args.items)
        prompts = [item.prompt for item in read_items(dataset)]
        loaded = load_model(resolve_model_id("tiny-qwen3", directory), download_dir=directory)
        print(
            f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; tiny-qwen3, "
            f"{len(prompts)} items, greedy, {args.max_new_tokens} new tokens, "
            f"median of {args.repeat}",
            flush=True,
        )
        sizes = [1, *[b for b in args.batch_sizes if b != 1]]
        results = steady(
            loaded.model,
            loaded.tokenizer,
            prompts,
            sizes=sizes,
            tokens=args.max_new_tokens,
            repeat=args.repeat,
        )
        print("batch  compile s  items/s (min-max)      vs batch 1", flush=True)
        for size in sizes:
            row = results[size]
            print(
                f"{size:>5}  {row['compile']:>9.2f}  {row['rate']:>7.1f} "
                f"({row['low']:>6.1f}-{row['high']:>6.1f})  {row['ratio']:>8.2f}x",
                flush=True,
            )
        best = max(results, key=lambda b: results[b]["rate"])
        print(
            f"best: batch {best}, {results[best]['rate']:.1f} items/s = "
            f"{results[best]['ratio']:.2f}x batch 1 ({results[1]['rate']:.1f} items/s)",
            flush=True,
        )
        if args.engine:
            print("engine subprocess  items/s (summary)  wall s  load s  generate s", flush=True)
            engine: dict[int, dict[str, float]] = {}
            for batch_size in (1, best):
                engine[batch_size] = run = engine_run(
                    directory, dataset, batch_size=batch_size, tokens=args.max_new_tokens
                )
                print(
                    f"batch {batch_size:>3}          {run['rate']:>17.1f}  {run['wall']:>6.1f}  "
                    f"{run['load']:>6.1f}  {run['generate']:>10.1f}",
                    flush=True,
                )
            print(
                f"engine: batch {best} {engine[best]['rate'] / engine[1]['rate']:.2f}x batch 1 "
                "(items/s of the generation phase, compilation included)",
                flush=True,
            )
        print(f"# load average at the end {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
