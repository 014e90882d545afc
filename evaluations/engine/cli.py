"""Command line: parse arguments, evaluate, turn expected failures into exit codes."""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from evaluations.engine.config import EvalConfig, load_config
from evaluations.engine.generate import Generator, Item, read_items
from evaluations.metrics import Metric, aggregate, metric

# The trainer's JAX settings: the same persistent compilation cache, the same quiet libraries.
from runs.trainer.cli import _enable_compilation_cache, _quiet_libraries
from runs.trainer.errors import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    ModelError,
    TrainerError,
    TrainingError,
)
from runs.trainer.models import load_model, resolve_model_id

ITEMS_FILE = "items.jsonl"
SUMMARY_FILE = "summary.json"
TRACEBACK_FILE = "evaluation_traceback.txt"
# At most about this many progress lines per evaluation.
PROGRESS_LINES = 100


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(
            f"error: {message} (usage: python -m evaluations.engine --config EVAL.yaml)",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_CONFIG)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m evaluations.engine",
        description="Score a model's generated answers on a tunix_sft dataset.",
        epilog=(
            "Exit codes: 0 evaluated, 1 evaluation failed, 2 bad config, 3 bad dataset, "
            "4 unknown or unloadable model."
        ),
    )
    parser.add_argument("--config", required=True, help="path to the evaluation's config YAML")
    return parser


def main(
    argv: Sequence[str] | None = None, *, out: IO[str] | None = None, err: IO[str] | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    output_dir: Path | None = None
    try:
        config = load_config(args.config)
        output_dir = config.output_dir
        return evaluate(config, out=out)
    except TrainerError as exc:
        print(f"error: {exc.reason}", file=err, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=err, flush=True)
        return EXIT_INTERRUPTED
    except Exception as exc:
        where = _save_traceback(output_dir)
        detail = " ".join(str(exc).split())[:300]
        hint = f" (traceback in {where})" if where else ""
        print(
            f"error: evaluation failed: {type(exc).__name__}: {detail}{hint}", file=err, flush=True
        )
        return TrainingError.exit_code


def _save_traceback(output_dir: Path | None) -> str | None:
    if output_dir is None or not output_dir.is_dir():
        return None
    path = output_dir / TRACEBACK_FILE
    try:
        with path.open("w", encoding="utf-8") as handle:
            traceback.print_exc(file=handle)
    except OSError:
        return None
    return str(path)


def evaluate(config: EvalConfig, *, out: IO[str]) -> int:
    """Generate an answer for every item, score it with every metric, write the outputs."""
    started = time.perf_counter()
    items = read_items(config.dataset_path)
    spec = resolve_model_id(config.model_id, config.config_dir, roots=config.model_roots)
    if spec.path is not None and _adapter_only(spec.path):
        raise ModelError(f"{spec.path} holds a LoRA adapter only; evaluate a merged or full export")
    try:
        config.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create output.dir {config.output_dir}: {exc.strerror or exc}"
        ) from None
    scorers = {name: metric(name) for name in config.metrics}
    print(f"config {config.path}", file=out, flush=True)
    print(f"dataset {config.dataset_path}: {len(items)} items", file=out, flush=True)

    _quiet_libraries()
    _enable_compilation_cache()
    loaded = load_model(spec, download_dir=config.output_dir / "hub_download")
    generator = Generator(
        loaded.model, loaded.tokenizer, config.generation, prompts=[i.prompt for i in items]
    )
    load_seconds = time.perf_counter() - started
    settings = config.generation
    print(
        f"model {config.model_id} ({spec.kind}, family {loaded.family}, "
        f"{loaded.parameters:,} parameters); prompt length {generator.prompt_length}; "
        f"batch {generator.batch_size}; max_new_tokens {settings.max_new_tokens}; "
        + ("greedy" if settings.temperature == 0 else f"temperature {settings.temperature}")
        + f"; metrics {', '.join(config.metrics)}",
        file=out,
        flush=True,
    )

    scores: dict[str, list[float]] = {name: [] for name in config.metrics}
    batches = [
        items[start : start + generator.batch_size]
        for start in range(0, len(items), generator.batch_size)
    ]
    every = -(-len(batches) // PROGRESS_LINES)
    generate_started = time.perf_counter()
    done = 0
    with (config.output_dir / ITEMS_FILE).open("w", encoding="utf-8") as handle:
        for number, batch in enumerate(batches, start=1):
            predictions = generator.generate([item.prompt for item in batch])
            for item, prediction in zip(batch, predictions, strict=True):
                row = _score(item, prediction, scorers)
                for name, value in row["scores"].items():
                    scores[name].append(value)
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            done += len(batch)
            elapsed = time.perf_counter() - generate_started
            if number % every == 0 or number == len(batches):
                print(
                    f"items {done}/{len(items)} {done / elapsed:.1f} items/s "
                    f"elapsed {elapsed:.1f}s",
                    file=out,
                    flush=True,
                )
    generate_seconds = time.perf_counter() - generate_started

    summary: dict[str, Any] = {
        "model_id": config.model_id,
        "model_source": spec.kind,
        "family": loaded.family,
        "dataset": str(config.dataset_path),
        "n": len(items),
        "metrics": {name: aggregate(values) for name, values in scores.items()},
        "items_per_second": round(len(items) / generate_seconds, 3),
        "generation": {
            **settings.as_dict(),
            "greedy": settings.temperature == 0,
            "prompt_length": generator.prompt_length,
            "effective_batch_size": generator.batch_size,
            "stop_tokens": generator.stops,
        },
        "seconds": {
            "load": round(load_seconds, 3),
            "generate": round(generate_seconds, 3),
            "total": round(time.perf_counter() - started, 3),
        },
        "items_file": str(config.output_dir / ITEMS_FILE),
    }
    (config.output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    means = ", ".join(f"{name} {summary['metrics'][name]['mean']:.4f}" for name in config.metrics)
    print(
        f"done: {len(items)} items, {means}; {summary['items_per_second']} items/s; "
        f"{time.perf_counter() - started:.1f}s; summary in {config.output_dir / SUMMARY_FILE}",
        file=out,
        flush=True,
    )
    return EXIT_OK


def _score(item: Item, prediction: str, scorers: dict[str, Metric]) -> dict[str, Any]:
    return {
        "index": item.index,
        "prompt": item.prompt,
        "expected": item.expected,
        "prediction": prediction,
        "scores": {
            name: float(score(prediction, item.expected)) for name, score in scorers.items()
        },
    }


def _adapter_only(directory: Path) -> bool:
    """A LoRA adapter export (adapter_config.json and no full weights) cannot be evaluated alone."""
    return (directory / "adapter_config.json").is_file() and not (
        directory / "model.safetensors"
    ).is_file()
