"""Command line: parse arguments, run the steps in order, turn expected failures into exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from runs.trainer import data
from runs.trainer.errors import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    TrainerError,
    TrainingError,
)
from runs.trainer.manifest import load_manifest
from runs.trainer.models import ModelSpec, load_model, resolve_model_id

TRACEBACK_FILE = "trainer_traceback.txt"
# JAX's persistent compilation cache: compiling the train and eval steps is most of a tiny run's
# CPU time, and runs of the same model and shapes compile the same programs.
CACHE_ENV = "TUNIX_TRAINER_JAX_CACHE"
DEFAULT_CACHE = Path("~/.cache/tunix-registry/jax")
CACHE_MAX_BYTES = 2 * 1024**3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(
            f"error: {message} (usage: python -m runs.trainer --config MANIFEST.yaml)",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_CONFIG)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m runs.trainer",
        description="Fine-tune a model with Tunix (SFT) as described by a run manifest.",
        epilog=(
            "Exit codes: 0 trained, 1 training failed, 2 bad config, 3 bad dataset, "
            "4 unknown or unloadable model."
        ),
    )
    parser.add_argument("--config", required=True, help="path to the run's manifest.yaml")
    return parser


def main(
    argv: Sequence[str] | None = None, *, out: IO[str] | None = None, err: IO[str] | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    run_dir: str | None = None
    try:
        manifest = load_manifest(args.config)
        run_dir = str(manifest.run_dir)
        return _run(manifest, out=out)
    except TrainerError as exc:
        print(f"error: {exc.reason}", file=err, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=err, flush=True)
        return EXIT_INTERRUPTED
    except Exception as exc:
        where = _save_traceback(run_dir)
        detail = " ".join(str(exc).split())[:300]
        hint = f" (traceback in {where})" if where else ""
        print(f"error: training failed: {type(exc).__name__}: {detail}{hint}", file=err, flush=True)
        return TrainingError.exit_code


def _save_traceback(run_dir: str | None) -> str | None:
    if run_dir is None:
        return None
    path = Path(run_dir) / TRACEBACK_FILE
    try:
        with path.open("w", encoding="utf-8") as handle:
            traceback.print_exc(file=handle)
    except OSError:
        return None
    return str(path)


def _run(manifest: Any, *, out: IO[str]) -> int:
    started = time.perf_counter()
    records = data.read_records(manifest.dataset_path)
    spec: ModelSpec = resolve_model_id(
        manifest.model_id, manifest.run_dir, roots=manifest.model_roots
    )
    try:
        manifest.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create output_dir {manifest.output_dir}: {exc.strerror or exc}"
        ) from None
    print(f"manifest {manifest.path}", file=out, flush=True)
    print(f"dataset {manifest.dataset_path}: {len(records)} examples", file=out, flush=True)

    _quiet_libraries()
    _enable_compilation_cache()
    loaded = load_model(spec, download_dir=manifest.output_dir / "hub_download")
    print(
        f"model {manifest.model_id} ({spec.kind}, family {loaded.family}, "
        f"{loaded.parameters:,} parameters, vocabulary {loaded.tokenizer.vocab_size})",
        file=out,
        flush=True,
    )

    examples = [
        data.encode_example(r.text, loaded.tokenizer, manifest.max_seq_length) for r in records
    ]
    truncated = sum(example.truncated for example in examples)
    train_examples, eval_examples = data.split_train_eval(examples)
    length = data.padded_length(examples, manifest.max_seq_length)
    if not any(int(example.loss_mask.sum()) for example in train_examples):
        raise data.DatasetError(
            f"no model-turn tokens left to train on within max_seq_length {manifest.max_seq_length}"
        )
    per_epoch = data.steps_per_epoch(len(train_examples), manifest.batch_size)
    print(
        f"split {len(train_examples)} train / {len(eval_examples)} eval; sequence length {length}"
        f" ({truncated} truncated); batch {manifest.batch_size}; {per_epoch} steps/epoch x"
        f" {manifest.num_epochs} epochs = {per_epoch * manifest.num_epochs} steps;"
        f" learning rate {manifest.learning_rate}",
        file=out,
        flush=True,
    )

    from runs.trainer import train

    result = train.train(manifest, loaded, train_examples, eval_examples, length=length, out=out)

    exported: str | None = None
    if loaded.hf_config is not None:
        from runs.trainer.export import export_checkpoint

        exported = str(
            export_checkpoint(
                loaded.model,
                loaded.tokenizer,
                loaded.hf_config,
                manifest.output_dir / train.EXPORT_SUBDIR,
            )
        )

    rows = result.rows
    eval_values = [row["eval_loss"] for row in rows if row["eval_loss"] is not None]
    summary = {
        "model_id": manifest.model_id,
        "model_source": spec.kind,
        "family": loaded.family,
        "parameters": loaded.parameters,
        "train_examples": len(train_examples),
        "eval_examples": len(eval_examples),
        "truncated_examples": truncated,
        "sequence_length": length,
        "batch_size": manifest.batch_size,
        "num_epochs": manifest.num_epochs,
        "learning_rate": manifest.learning_rate,
        "total_steps": result.total_steps,
        "trained_steps": result.trained_steps,
        "first_loss": rows[0]["loss"] if rows else None,
        "final_loss": rows[-1]["loss"] if rows else None,
        "initial_eval_loss": result.initial_eval_loss,
        "best_eval_loss": min(eval_values) if eval_values else None,
        "train_seconds": round(result.elapsed_seconds, 3),
        "tokens_per_second": round(result.tokens / result.elapsed_seconds, 2)
        if result.elapsed_seconds
        else None,
        "checkpoint_dir": str(result.checkpoint_dir),
        "exported_model_dir": exported,
        "metrics_file": str(manifest.run_dir / train.METRICS_FILE),
    }
    (manifest.output_dir / train.SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"done: {result.trained_steps} steps, loss {summary['first_loss']} -> "
        f"{summary['final_loss']}, {time.perf_counter() - started:.1f}s; "
        f"checkpoint in {result.checkpoint_dir}",
        file=out,
        flush=True,
    )
    return EXIT_OK


def _quiet_libraries() -> None:
    """Keep absl/JAX chatter (info and warnings) out of stderr, which carries our error line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with the tunix extra
        pass


def _enable_compilation_cache() -> None:
    """Point JAX's persistent compilation cache at TUNIX_TRAINER_JAX_CACHE (default
    ~/.cache/tunix-registry/jax; "off" disables it), unless JAX_COMPILATION_CACHE_DIR is set."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    setting = os.environ.get(CACHE_ENV, "").strip()
    if setting.lower() in {"off", "0", "false", "no"}:
        return
    directory = Path(setting).expanduser() if setting else DEFAULT_CACHE.expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # a cache is an optimisation; never fail a run for it
    import jax

    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # Least recently used entries are evicted beyond this size.
    jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
