"""The training loop: Tunix's PeftTrainer (full-weight or LoRA SFT), our hooks for progress,
metrics and phase timings, and the checkpoint cadence and resume that go with it.

Everything above `train()` is plain Python (no JAX), so the units tests exercise it directly.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from runs.trainer.data import Batch, Example, TrainBatches, eval_batches
from runs.trainer.errors import ConfigError, TrainingError
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
# Checkpoints: every ceil(total / 3) steps unless the manifest says, the three latest kept.
DEFAULT_CHECKPOINTS_PER_RUN = 3
CHECKPOINTS_KEPT = 3
_LINKING_SUFFIX = ".linking"


def log_interval(total_steps: int) -> int:
    """1 for short runs, otherwise an interval giving about 150 lines."""
    if total_steps <= LOG_EVERY_STEP_UP_TO:
        return 1
    return math.ceil(total_steps / TARGET_LOG_LINES)


def eval_interval(total_steps: int, log_every: int) -> int:
    """A multiple of the log interval giving about 20 evaluations."""
    wanted = max(1, math.ceil(total_steps / TARGET_EVAL_POINTS))
    return log_every * math.ceil(wanted / log_every)


def checkpoint_interval(total_steps: int, every_n_steps: int | None) -> int:
    """The manifest's checkpoint_every_n_steps, or a third of the run (the last step is always
    saved too)."""
    if every_n_steps is not None:
        return every_n_steps
    return max(1, math.ceil(total_steps / DEFAULT_CHECKPOINTS_PER_RUN))


# --- resume --------------------------------------------------------------------------------------


def step_directories(checkpoints: Path) -> list[int]:
    """The finalized orbax steps in a checkpoints directory (all-digit names), ascending."""
    try:
        entries = list(checkpoints.iterdir())
    except OSError:
        return []
    return sorted(int(entry.name) for entry in entries if entry.name.isdigit() and entry.is_dir())


def check_resume_source(manifest: Manifest) -> None:
    """Refuse to resume from a run of another model or another LoRA shape.

    The source run's run_summary.json sits beside its checkpoints directory; a run without one
    (written by an older trainer) is not checked."""
    source = manifest.resume_checkpoint_dir
    if source is None:
        return
    summary_path = source.parent / SUMMARY_FILE
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise ConfigError(f"resume: cannot read {summary_path}: {exc}") from None
    if not isinstance(summary, dict):
        raise ConfigError(f"resume: {summary_path} is not a JSON object")
    trained = summary.get("model_id")
    if trained is not None and trained != manifest.model_id:
        raise ConfigError(
            f"resume: the checkpoint's run trained model {trained!r}, "
            f"this manifest asks for {manifest.model_id!r}"
        )
    before = lora_shape(summary.get("lora"))
    now = (
        None
        if manifest.lora is None
        else (manifest.lora.rank, tuple(sorted(manifest.lora.target_modules)))
    )
    if before != now:
        raise ConfigError(
            f"resume: the checkpoint's run trained {describe_lora_shape(before)}, "
            f"this manifest asks for {describe_lora_shape(now)}"
        )


def lora_shape(lora: Any) -> tuple[int, tuple[str, ...]] | None:
    """What a resume must match of a run's LoRA settings (a mapping, or None for full-weight):
    its rank and its sorted target modules; None for full-weight."""
    if not isinstance(lora, dict):
        return None
    targets = lora.get("target_modules") or []
    return int(lora.get("rank", 0)), tuple(sorted(str(name) for name in targets))


def describe_lora_shape(shape: tuple[int, tuple[str, ...]] | None) -> str:
    if shape is None:
        return "full-weight"
    rank, targets = shape
    return f"LoRA rank {rank} on {', '.join(targets)}"


def link_latest_checkpoint(source: Path, checkpoints: Path) -> int | None:
    """Put the latest step of `source` into `checkpoints` for Tunix's auto-resume to restore.

    Nothing happens when `checkpoints` already holds a step (this run is restarting in its own
    output directory): return None. Otherwise the step's files are hard-linked (copied where a
    link is not possible) into a temporary directory renamed to `<step>` once complete, so a
    half-linked step is never taken for a finalized one; return the step."""
    if step_directories(checkpoints):
        return None
    steps = step_directories(source)
    if not steps:
        raise ConfigError(f"resume: no checkpoint in {source}")
    step = steps[-1]
    staging = checkpoints / f"{step}{_LINKING_SUFFIX}"
    try:
        if staging.exists():
            shutil.rmtree(staging)
        checkpoints.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source / str(step), staging, copy_function=_link_or_copy)
        staging.rename(checkpoints / str(step))
    except OSError as exc:
        raise ConfigError(
            f"resume: cannot link the checkpoint at step {step} of {source}: {exc.strerror or exc}"
        ) from None
    return step


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# --- phases --------------------------------------------------------------------------------------


def compile_seconds(step_seconds: list[float]) -> float:
    """JIT compilation: the first step's wall time beyond the median of the others (0 with a
    single step, where the two cannot be told apart)."""
    if len(step_seconds) < 2:
        return 0.0
    return max(0.0, step_seconds[0] - statistics.median(step_seconds[1:]))


@dataclass
class PhaseClock:
    """Wall time of each training step, and of the eval and checkpoint saves around them.

    A step runs from one `on_train_step_start` to the next (the last one to the end of the
    loop), minus the eval and save time inside that span: Tunix reports a step's loss only
    during the following step, so the span between starts is the step."""

    eval_seconds: float = 0.0
    save_seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list)
    _step_started: float | None = None
    _excluded: float = 0.0
    _eval_started: float | None = None

    def step_started(self, now: float) -> None:
        self._close_step(now)
        self._step_started = now
        self._excluded = 0.0

    def loop_ended(self, now: float) -> None:
        self._close_step(now)
        self._step_started = None

    def eval_started(self, now: float) -> None:
        if self._eval_started is None:
            self._eval_started = now

    def eval_ended(self, now: float) -> None:
        if self._eval_started is not None:
            self.add_eval(now - self._eval_started)
            self._eval_started = None

    def add_eval(self, seconds: float) -> None:
        self.eval_seconds += seconds
        self._excluded += seconds

    def add_save(self, seconds: float) -> None:
        self.save_seconds += seconds
        self._excluded += seconds

    def _close_step(self, now: float) -> None:
        if self._step_started is not None:
            self.step_seconds.append(max(0.0, now - self._step_started - self._excluded))

    def timed(self, function: Callable[..., Any], add: Callable[[float], None]) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                add(time.perf_counter() - started)

        return wrapper


def peak_host_memory_bytes() -> int:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def peak_device_memory_bytes() -> int | None:
    """The accelerator's peak bytes in use, when it reports one (CPU does not)."""
    try:
        import jax

        if jax.default_backend() == "cpu":
            return None
        stats = jax.devices()[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        return None if peak is None else int(peak)
    except Exception:  # a statistic must never fail a finished run
        return None


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


def _hooks(recorder: MetricsRecorder, evals: list[Batch], clock: PhaseClock) -> Any:
    from tunix.sft import hooks

    class _Hooks(hooks.TrainingHooks):
        def on_train_start(self, train_ctx: Any) -> None:
            recorder.start(int(train_ctx.train_steps))

        def on_train_end(self, train_ctx: Any) -> None:
            clock.loop_ended(time.perf_counter())

        def on_train_step_start(self, train_ctx: Any) -> None:
            clock.step_started(time.perf_counter())

        def on_train_step_end(self, train_ctx: Any, train_step: int, train_loss: float) -> None:
            step = int(train_step)
            if step == recorder.total_steps and evals and step not in recorder.eval_losses:
                # The last step is off the eval cadence: evaluate the final model anyway, so a
                # run always ends with an eval loss.
                started = time.perf_counter()
                recorder.eval_losses[step] = _final_eval(train_ctx, evals)
                clock.add_eval(time.perf_counter() - started)
            recorder.record_step(step, float(train_loss))

        def on_eval_step_start(self, train_ctx: Any) -> None:
            clock.eval_started(time.perf_counter())

        def on_eval_step_end(self, train_ctx: Any, eval_loss: float) -> None:
            clock.eval_ended(time.perf_counter())
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
    # The whole training loop's wall time (initial eval and final save included).
    elapsed_seconds: float
    tokens: int
    resumed_step: int
    checkpoint_every_n_steps: int
    last_checkpoint_step: int | None
    # Building the trainer (restoring a checkpoint included).
    setup_seconds: float
    compile_seconds: float
    eval_seconds: float
    save_seconds: float

    @property
    def train_seconds(self) -> float:
        """The loop's wall time without compilation, eval and checkpoint saves."""
        rest = self.compile_seconds + self.eval_seconds + self.save_seconds
        return max(0.0, self.elapsed_seconds - rest)


def train(
    manifest: Manifest,
    loaded: LoadedModel,
    train_examples: list[Example],
    eval_examples: list[Example],
    *,
    length: int,
    out: IO[str],
) -> TrainResult:
    """Run SFT for the manifest's epochs; write metrics.jsonl and orbax checkpoints.

    A model with LoRA applied trains (and checkpoints) only its adapter: PeftTrainer sees the
    nnx.LoRAParam leaves."""
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
    checkpoint_every = checkpoint_interval(total, manifest.checkpoint_every_n_steps)

    setup_started = time.perf_counter()
    config = peft_trainer.TrainingConfig(
        eval_every_n_steps=eval_every,
        max_steps=total,
        checkpoint_root_directory=str(checkpoint_dir),
        # The last step is also saved when training closes, whatever the interval.
        checkpointing_options=ocp.CheckpointManagerOptions(
            save_interval_steps=checkpoint_every, max_to_keep=CHECKPOINTS_KEPT
        ),
        pbar_description=None,
    )
    optimizer = optax.adamw(learning_rate=manifest.learning_rate, weight_decay=WEIGHT_DECAY)
    trainer = peft_trainer.PeftTrainer(loaded.model, optimizer, config)
    trainer = trainer.with_gen_model_input_fn(_model_inputs)
    setup_seconds = time.perf_counter() - setup_started
    clock = PhaseClock()
    # Orbax saves asynchronously: a save waits for the previous one, and close() for the last.
    manager = trainer.checkpoint_manager
    manager.save = clock.timed(manager.save, clock.add_save)
    manager.close = clock.timed(manager.close, clock.add_save)
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
        trainer.with_training_hooks(_hooks(recorder, evals, clock))
        started = time.perf_counter()
        trainer.train(batches, evals or None)
        elapsed = time.perf_counter() - started

    steps = step_directories(checkpoint_dir)
    return TrainResult(
        rows=recorder.rows,
        total_steps=total,
        trained_steps=int(trainer.train_steps) - resumed_from,
        initial_eval_loss=recorder.eval_losses.get(resumed_from),
        checkpoint_dir=checkpoint_dir,
        elapsed_seconds=elapsed,
        tokens=sum(batches.tokens_per_step[resumed_from:]),
        resumed_step=resumed_from,
        checkpoint_every_n_steps=checkpoint_every,
        last_checkpoint_step=steps[-1] if steps else None,
        setup_seconds=setup_seconds,
        compile_seconds=compile_seconds(clock.step_seconds),
        eval_seconds=clock.eval_seconds,
        save_seconds=clock.save_seconds,
    )
