"""The training loop: Tunix's PeftTrainer (full-weight SFT), our hooks for progress and metrics."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from runs.trainer.data import Batch, Example, TrainBatches, eval_batches
from runs.trainer.errors import TrainingError
from runs.trainer.manifest import Manifest
from runs.trainer.models import LoadedModel

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "run_summary.json"
CHECKPOINT_SUBDIR = "checkpoints"
EXPORT_SUBDIR = "model"
# Log every step up to this many steps; beyond it, about this many lines.
LOG_EVERY_STEP_UP_TO = 200
TARGET_LOG_LINES = 150
TARGET_EVAL_POINTS = 20
WEIGHT_DECAY = 0.01


def log_interval(total_steps: int) -> int:
    """1 for short runs, otherwise an interval giving about 150 lines."""
    if total_steps <= LOG_EVERY_STEP_UP_TO:
        return 1
    return math.ceil(total_steps / TARGET_LOG_LINES)


def eval_interval(total_steps: int, log_every: int) -> int:
    """A multiple of the log interval giving about 20 evaluations."""
    wanted = max(1, math.ceil(total_steps / TARGET_EVAL_POINTS))
    return log_every * math.ceil(wanted / log_every)


@dataclass
class MetricsRecorder:
    """Receives Tunix's per-step callbacks; prints progress and appends metrics.jsonl lines."""

    total_steps: int
    log_every: int
    eval_batch_count: int
    batches: TrainBatches
    metrics: IO[str]
    out: IO[str]
    started: float = field(default_factory=time.perf_counter)
    eval_losses: dict[int, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    _last_step: int = 0
    _last_time: float = 0.0

    def __post_init__(self) -> None:
        self._last_time = self.started

    def start(self, first_step: int) -> None:
        self.started = self._last_time = time.perf_counter()
        self._last_step = first_step

    def record_eval(self, step: int, loss_sum: float) -> None:
        if self.eval_batch_count:
            self.eval_losses[step] = float(loss_sum) / self.eval_batch_count

    def record_step(self, step: int, loss: float) -> None:
        loss = float(loss)
        if not math.isfinite(loss):
            raise TrainingError(f"training diverged: loss is {loss} at step {step}")
        if step % self.log_every and step != self.total_steps:
            return
        now = time.perf_counter()
        tokens = sum(self.batches.tokens_per_step[self._last_step : step])
        seconds = max(now - self._last_time, 1e-9)
        eval_loss = self.eval_losses.get(step)
        row = {
            "step": int(step),
            "loss": round(loss, 6),
            "eval_loss": None if eval_loss is None else round(eval_loss, 6),
            "tokens_per_second": round(tokens / seconds, 2),
            "elapsed_seconds": round(now - self.started, 3),
        }
        self.rows.append(row)
        self.metrics.write(json.dumps(row) + "\n")
        self.metrics.flush()
        eval_text = "" if eval_loss is None else f" eval_loss {eval_loss:.4f}"
        print(
            f"step {step}/{self.total_steps} loss {loss:.4f}{eval_text} "
            f"tok/s {tokens / seconds:.0f} elapsed {now - self.started:.1f}s",
            file=self.out,
            flush=True,
        )
        self._last_step = step
        self._last_time = now


def _final_eval(train_ctx: Any, evals: list[Batch]) -> float:
    """The eval loss of the final model, with the trainer's own (already compiled) eval step."""
    _, eval_step = train_ctx.jit_train_and_eval_step(cache_nnx_graph=True)
    losses = [float(eval_step(batch)[0]) for batch in evals]
    return sum(losses) / len(losses)


def _hooks(recorder: MetricsRecorder, evals: list[Batch]) -> Any:
    from tunix.sft import hooks

    class _Hooks(hooks.TrainingHooks):
        def on_train_start(self, train_ctx: Any) -> None:
            recorder.start(int(train_ctx.train_steps))

        def on_train_end(self, train_ctx: Any) -> None:
            pass

        def on_train_step_start(self, train_ctx: Any) -> None:
            pass

        def on_train_step_end(self, train_ctx: Any, train_step: int, train_loss: float) -> None:
            step = int(train_step)
            if step == recorder.total_steps and evals and step not in recorder.eval_losses:
                # The last step is off the eval cadence: evaluate the final model anyway, so a
                # run always ends with an eval loss.
                recorder.eval_losses[step] = _final_eval(train_ctx, evals)
            recorder.record_step(step, float(train_loss))

        def on_eval_step_start(self, train_ctx: Any) -> None:
            pass

        def on_eval_step_end(self, train_ctx: Any, eval_loss: float) -> None:
            recorder.record_eval(int(train_ctx.train_steps), float(eval_loss))

    return _Hooks()


def _model_inputs(batch: Batch) -> dict[str, Any]:
    from tunix.sft import utils

    valid = batch["valid_mask"]
    return {
        "input_tokens": batch["input_tokens"],
        "input_mask": batch["input_mask"],
        "positions": utils.build_positions_from_mask(valid),
        "attention_mask": utils.make_causal_attn_mask(valid),
    }


@dataclass
class TrainResult:
    rows: list[dict[str, Any]]
    total_steps: int
    trained_steps: int
    initial_eval_loss: float | None
    checkpoint_dir: Path
    elapsed_seconds: float
    tokens: int


def train(
    manifest: Manifest,
    loaded: LoadedModel,
    train_examples: list[Example],
    eval_examples: list[Example],
    *,
    length: int,
    out: IO[str],
) -> TrainResult:
    """Run SFT for the manifest's epochs; write metrics.jsonl and orbax checkpoints."""
    import optax
    import orbax.checkpoint as ocp
    from tunix.sft import peft_trainer

    batches = TrainBatches(
        train_examples,
        batch_size=manifest.batch_size,
        length=length,
        pad_id=loaded.tokenizer.pad_id,
        num_epochs=manifest.num_epochs,
    )
    evals = eval_batches(
        eval_examples, batch_size=manifest.batch_size, length=length, pad_id=loaded.tokenizer.pad_id
    )
    total = len(batches)
    log_every = log_interval(total)
    eval_every = eval_interval(total, log_every)
    checkpoint_dir = manifest.output_dir / CHECKPOINT_SUBDIR

    config = peft_trainer.TrainingConfig(
        eval_every_n_steps=eval_every,
        max_steps=total,
        checkpoint_root_directory=str(checkpoint_dir),
        # Periodic saves for long runs; the last step is always saved when training closes.
        checkpointing_options=ocp.CheckpointManagerOptions(
            save_interval_steps=max(500, total // 5), max_to_keep=2
        ),
        pbar_description=None,
    )
    optimizer = optax.adamw(learning_rate=manifest.learning_rate, weight_decay=WEIGHT_DECAY)
    trainer = peft_trainer.PeftTrainer(loaded.model, optimizer, config)
    trainer = trainer.with_gen_model_input_fn(_model_inputs)
    resumed_from = int(trainer.train_steps)
    if resumed_from:
        print(
            f"resuming from the checkpoint at step {resumed_from} in {checkpoint_dir}",
            file=out,
            flush=True,
        )

    metrics_path = manifest.run_dir / METRICS_FILE
    try:
        metrics = metrics_path.open("w", encoding="utf-8")
    except OSError as exc:
        raise TrainingError(f"cannot write {metrics_path}: {exc.strerror or exc}") from None
    with metrics:
        recorder = MetricsRecorder(
            total_steps=total,
            log_every=log_every,
            eval_batch_count=len(evals),
            batches=batches,
            metrics=metrics,
            out=out,
        )
        trainer.with_training_hooks(_hooks(recorder, evals))
        started = time.perf_counter()
        trainer.train(batches, evals or None)
        elapsed = time.perf_counter() - started

    return TrainResult(
        rows=recorder.rows,
        total_steps=total,
        trained_steps=int(trainer.train_steps) - resumed_from,
        initial_eval_loss=recorder.eval_losses.get(resumed_from),
        checkpoint_dir=checkpoint_dir,
        elapsed_seconds=elapsed,
        tokens=sum(batches.tokens_per_step[resumed_from:]),
    )
