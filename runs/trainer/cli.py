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

from runs.trainer import data, train
from runs.trainer.errors import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    TrainerError,
    TrainingError,
)
from runs.trainer.manifest import load_manifest
from runs.trainer.models import ModelSpec, load_model

TRACEBACK_FILE = "trainer_traceback.txt"
# The registry's id of the run, for run_summary.json and the model card.
RUN_ID_ENV = "TUNIX_RUN_ID"
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
    from runs.trainer.preflight import preflight

    report = preflight(manifest, records)
    spec: ModelSpec = report.spec
    try:
        manifest.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create output_dir {manifest.output_dir}: {exc.strerror or exc}"
        ) from None
    print(f"manifest {manifest.path}", file=out, flush=True)
    print(f"dataset {manifest.dataset_path}: {len(records)} examples", file=out, flush=True)
    for line in report.lines():
        print(line, file=out, flush=True)

    linked: int | None = None
    if manifest.resume_checkpoint_dir is not None:
        train.check_resume_source(manifest)
        linked = train.link_latest_checkpoint(
            manifest.resume_checkpoint_dir, manifest.output_dir / train.CHECKPOINT_SUBDIR
        )
        if linked is not None:
            print(
                f"resume: linked step {linked} of {manifest.resume_checkpoint_dir}",
                file=out,
                flush=True,
            )
    summary: dict[str, Any] = {
        "final": False,
        "run_id": os.environ.get(RUN_ID_ENV) or None,
        "model_id": manifest.model_id,
        "model_source": spec.kind,
        "family": report.family,
        "parameters": report.parameters,
        "trainable_parameters": report.trainable_parameters,
        "lora": manifest.lora.as_dict() if manifest.lora else None,
        "train_examples": len(report.train_examples),
        "eval_examples": len(report.eval_examples),
        "truncated_examples": report.truncated,
        "sequence_length": report.length,
        "batch_size": manifest.batch_size,
        "num_epochs": manifest.num_epochs,
        "learning_rate": manifest.learning_rate,
        "preflight": report.as_dict(),
    }
    _write_summary(manifest, summary)

    load_started = time.perf_counter()
    _quiet_libraries()
    _enable_compilation_cache()
    loaded = load_model(spec, download_dir=manifest.output_dir / "hub_download")
    _device_memory_check(report)
    print(
        f"model {manifest.model_id} ({spec.kind}, family {loaded.family}, "
        f"{loaded.parameters:,} parameters, vocabulary {loaded.tokenizer.vocab_size})",
        file=out,
        flush=True,
    )
    from runs.trainer import lora as lora_module
    from runs.trainer.models import count_parameters

    if manifest.lora is not None:
        lora_module.lora_check(manifest.lora, loaded.family)
        loaded.model = lora_module.apply_lora(loaded.model, manifest.lora)
        loaded.parameters = count_parameters(loaded.model)
        shape = f"LoRA rank {manifest.lora.rank} on {', '.join(manifest.lora.target_modules)}"
    else:
        shape = "full-weight"
    trainable = lora_module.trainable_parameters(loaded.model)
    load_seconds = time.perf_counter() - load_started
    print(
        f"parameters: {loaded.parameters:,} total, {trainable:,} trainable ({shape})",
        file=out,
        flush=True,
    )
    summary.update(parameters=loaded.parameters, trainable_parameters=trainable)
    _write_summary(manifest, summary)

    train_examples, eval_examples, length = (
        report.train_examples,
        report.eval_examples,
        report.length,
    )
    per_epoch = data.steps_per_epoch(len(train_examples), manifest.batch_size)
    print(
        f"split {len(train_examples)} train / {len(eval_examples)} eval; sequence length {length}"
        f" ({report.truncated} truncated); batch {manifest.batch_size}; {per_epoch} steps/epoch x"
        f" {manifest.num_epochs} epochs = {per_epoch * manifest.num_epochs} steps;"
        f" learning rate {manifest.learning_rate}",
        file=out,
        flush=True,
    )

    result = train.train(manifest, loaded, train_examples, eval_examples, length=length, out=out)

    rows = result.rows
    eval_values = [row["eval_loss"] for row in rows if row["eval_loss"] is not None]
    train_seconds = result.train_seconds
    first_loss = rows[0]["loss"] if rows else None
    final_loss = rows[-1]["loss"] if rows else None
    best_eval = min(eval_values) if eval_values else None
    tokens_per_second = round(result.tokens / train_seconds, 2) if train_seconds else None

    exported: str | None = None
    export_format: str | None = None
    export_seconds = 0.0
    if loaded.hf_config is not None:
        from runs.trainer.export import export_model

        export_started = time.perf_counter()
        directory = manifest.output_dir / train.EXPORT_SUBDIR
        configuration: dict[str, Any] = {
            "learning_rate": manifest.learning_rate,
            "num_epochs": manifest.num_epochs,
            "batch_size": manifest.batch_size,
            "max_seq_length": manifest.max_seq_length,
            "checkpoint_every_n_steps": result.checkpoint_every_n_steps,
            "lora": manifest.lora.as_dict() if manifest.lora else None,
        }
        export_format = export_model(
            loaded,
            lora=manifest.lora,
            directory=directory,
            card={
                "run_id": summary["run_id"],
                "dataset_key": manifest.dataset_path.stem,
                "model_id": manifest.model_id,
                "configuration": configuration,
                "metrics": {
                    "first_loss": first_loss,
                    "final_loss": final_loss,
                    "best_eval_loss": best_eval,
                    "steps": result.total_steps,
                    "tokens_per_second": tokens_per_second,
                },
            },
        )
        exported = str(directory)
        export_seconds = time.perf_counter() - export_started

    resumed_from = None
    if result.resumed_step:
        resumed_from = {
            "run_id": manifest.resume_run_id if linked is not None else None,
            "step": result.resumed_step,
            "restore_seconds": round(result.setup_seconds, 3),
        }
    summary.update(
        final=True,
        resumed_from=resumed_from,
        total_steps=result.total_steps,
        trained_steps=result.trained_steps,
        first_loss=first_loss,
        final_loss=final_loss,
        initial_eval_loss=result.initial_eval_loss,
        best_eval_loss=best_eval,
        train_seconds=round(train_seconds, 3),
        steps_per_second=round(result.trained_steps / train_seconds, 4)
        if train_seconds and result.trained_steps
        else None,
        tokens_per_second=tokens_per_second,
        phases={
            "load": round(load_seconds + result.setup_seconds, 3),
            "compile": round(result.compile_seconds, 3),
            "train": round(train_seconds, 3),
            "eval": round(result.eval_seconds, 3),
            "save": round(result.save_seconds + export_seconds, 3),
        },
        peak_host_memory_bytes=train.peak_host_memory_bytes(),
        peak_device_memory_bytes=train.peak_device_memory_bytes(),
        device=_backend(),
        checkpoint_every_n_steps=result.checkpoint_every_n_steps,
        last_checkpoint_step=result.last_checkpoint_step,
        checkpoint_dir=str(result.checkpoint_dir),
        exported_model_dir=exported,
        export_format=export_format,
        metrics_file=str(manifest.run_dir / train.METRICS_FILE),
    )
    _write_summary(manifest, summary)
    print(
        f"done: {result.trained_steps} steps, loss {first_loss} -> "
        f"{final_loss}, {time.perf_counter() - started:.1f}s; "
        f"checkpoint in {result.checkpoint_dir}",
        file=out,
        flush=True,
    )
    return EXIT_OK


def _write_summary(manifest: Any, summary: dict[str, Any]) -> None:
    """run_summary.json, replaced whole so a reader never sees half of it."""
    path = manifest.output_dir / train.SUMMARY_FILE
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)


def _backend() -> str | None:
    try:
        import jax

        return str(jax.default_backend())
    except Exception:  # pragma: no cover - JAX is imported by then
        return None


def _device_memory_check(report: Any) -> None:
    """On an accelerator, check the preflight's estimate against the device's memory."""
    import jax

    backend = jax.default_backend()
    if backend == "cpu":
        return
    try:
        limit = (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
    except Exception:
        limit = None
    if limit is None:
        return
    from runs.trainer.preflight import DeviceInfo, memory_check

    memory_check(
        report, DeviceInfo(platform=backend, memory_bytes=int(limit), label=f"the {backend} device")
    )


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
