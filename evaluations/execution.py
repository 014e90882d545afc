"""Executing a claimed evaluation: the engine in its own process, supervised.

The evaluation's directory (`<data dir>/evaluations/<id>/`) gets the items as a
tunix_sft file (the run's held-out lines, or a whole dataset) and the engine's config;
the engine (TUNIX_EVALUATION_COMMAND, `python -m evaluations.engine` by default) writes
items.jsonl and summary.json there (docs/evaluation.md). Every TUNIX_HEARTBEAT_SECONDS
the supervisor records progress (the items written so far) and a heartbeat, stops the
engine when cancellation is asked or the timeout passes, and the engine dies with it
(runs.processes.die_with_parent). The outcome and the items are recorded in one step
(evaluations.services.evaluation_finish).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

from datasets.selectors import dataset_export_lines
from datasets.services import write_lines_atomically
from evaluations.models import Evaluation, EvaluationStatus
from evaluations.services import EvaluationOutcome, evaluation_finish, evaluation_progress
from runs.execution import trainer_environment
from runs.metrics import complete_lines
from runs.outcomes import log_excerpt
from runs.outputs import output_dir_absolute
from runs.processes import process_group_stop, process_start

logger = logging.getLogger(__name__)

ITEMS_FILE = "items.jsonl"
SUMMARY_FILE = "summary.json"
DATASET_FILE = "dataset.jsonl"
CONFIG_FILE = "eval.yaml"
STOPPED_NOTE = "The worker executing this evaluation was stopped; evaluate again"


def evaluation_directory(evaluation_id: Any) -> Path:
    return Path(settings.DATA_DIR) / "evaluations" / str(evaluation_id)


def evaluated_model(evaluation: Evaluation) -> str:
    """The engine's model_id: the run's base model, or the model its trainer exported."""
    run = evaluation.run
    if evaluation.baseline:
        return run.model_id
    return str(output_dir_absolute(run.output_dir) / "model")


def write_items(evaluation: Evaluation, path: Path) -> int:
    """Write the evaluation's items as tunix_sft lines into `path`; return how many.

    Held out: the lines of the run's dataset its trainer kept out of training
    (runs.trainer.data.held_out_indices, the same positions the trainer chose).
    """
    lines = dataset_export_lines(key=evaluation.dataset_key, fmt="tunix_sft")
    if not evaluation.held_out:
        return write_lines_atomically(path, lines)
    from runs.trainer.data import held_out_indices

    every = list(lines)
    return write_lines_atomically(path, (every[i] for i in held_out_indices(len(every))))


def engine_config(evaluation: Evaluation, directory: Path) -> str:
    return yaml.safe_dump(
        {
            "version": "1.0",
            "model": {"model_id": evaluated_model(evaluation)},
            "dataset": {"format": "tunix_sft", "path": str(directory / DATASET_FILE)},
            "generation": dict(evaluation.generation),
            "metrics": list(evaluation.metrics),
            "output": {"dir": str(directory)},
        },
        sort_keys=False,
    )


def engine_environment() -> dict[str, str]:
    """The trainer's scrubbed environment, with the evaluations directory an output root."""
    env = trainer_environment()
    root = str(Path(settings.DATA_DIR) / "evaluations")
    env["TUNIX_OUTPUT_ROOTS"] = os.pathsep.join([root, env["TUNIX_OUTPUT_ROOTS"]])
    return env


class _LineCounter:
    """The complete lines of a file that grows, counted from where the last call stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def count(self) -> int:
        try:
            data = complete_lines(self.path, self.offset)
        except FileNotFoundError:
            return self.lines
        self.lines += data.count(b"\n")
        self.offset += len(data)
        return self.lines


def _failed(message: str, stderr: str = "", exit_code: int | None = None) -> EvaluationOutcome:
    return EvaluationOutcome(
        status=EvaluationStatus.FAILED, message=message, stderr=stderr, exit_code=exit_code
    )


def evaluation_execute(evaluation: Evaluation) -> str:
    """Execute a claimed (running) evaluation here and record its end; its final status."""
    evaluation_id = evaluation.evaluation_id
    try:
        outcome = _execute(evaluation)
    except (SystemExit, KeyboardInterrupt):
        # The worker is stopping (its engine was stopped with it): recorded, then go on.
        evaluation_finish(
            evaluation_id=evaluation_id,
            outcome=_failed("Evaluation stopped: its worker was stopped", STOPPED_NOTE),
        )
        raise
    except Exception as exc:
        logger.exception("evaluation %s failed", evaluation_id)
        outcome = _failed(
            "Evaluation failed: internal error (details in the server log)",
            f"Internal error: {type(exc).__name__}",
        )
    if not evaluation_finish(evaluation_id=evaluation_id, outcome=outcome):
        logger.warning(
            "evaluation %s was finished elsewhere; this outcome is dropped", evaluation_id
        )
    status: str = (
        Evaluation.objects.filter(pk=evaluation_id).values_list("status", flat=True).first() or ""
    )
    return status


def _execute(evaluation: Evaluation) -> EvaluationOutcome:
    directory = evaluation_directory(evaluation.evaluation_id)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        total = write_items(evaluation, directory / DATASET_FILE)
    except LookupError:
        return _failed(
            "Evaluation failed: dataset not found", f"Dataset not found: {evaluation.dataset_key}"
        )
    if total == 0:
        return _failed("Evaluation failed: no items", "The evaluation dataset holds no items")
    config = directory / CONFIG_FILE
    config.write_text(engine_config(evaluation, directory), encoding="utf-8")
    evaluation_progress(evaluation_id=evaluation.evaluation_id, items_done=0, items_total=total)

    argv = [*settings.TUNIX_EVALUATION_COMMAND, "--config", str(config)]
    stdout_log, stderr_log = directory / "stdout.log", directory / "stderr.log"
    with stdout_log.open("wb") as out, stderr_log.open("wb") as err:
        try:
            process = process_start(
                argv, cwd=directory, env=engine_environment(), stdout=out, stderr=err
            )
        except OSError as exc:
            return _failed(
                "Evaluation failed: the engine could not be started",
                f"Failed to start the engine: {exc.strerror or type(exc).__name__}",
            )
        ending = _supervise(evaluation, process, directory, total)
    stderr = log_excerpt(stderr_log)
    if ending == "cancelled":
        return EvaluationOutcome(
            status=EvaluationStatus.CANCELLED,
            message="Evaluation cancelled",
            stderr=_with_note(stderr, "Evaluation cancelled on request (the engine was stopped)"),
            items_total=total,
        )
    if ending == "timeout":
        limit = settings.TUNIX_EVALUATION_TIMEOUT_SECONDS
        return _failed(
            f"Evaluation timed out after {limit} seconds",
            _with_note(stderr, f"Evaluation timeout (exceeded {limit} seconds)"),
        )
    if ending == "superseded":
        return _failed("Evaluation finished elsewhere", stderr)
    code = process.returncode
    if code != 0:
        return _failed(f"Evaluation failed with exit code {code}", stderr, code)
    return _completed(directory, stderr, total)


def _with_note(stderr: str, note: str) -> str:
    return f"{stderr}\n{note}" if stderr else note


def _supervise(
    evaluation: Evaluation, process: subprocess.Popen[bytes], directory: Path, total: int
) -> str:
    """Wait for the engine; "exited", "cancelled", "timeout" or "superseded"."""
    deadline = time.monotonic() + settings.TUNIX_EVALUATION_TIMEOUT_SECONDS
    interval = settings.TUNIX_HEARTBEAT_SECONDS
    grace = settings.TUNIX_CANCEL_GRACE_SECONDS
    items = _LineCounter(directory / ITEMS_FILE)
    try:
        while True:
            try:
                process.wait(timeout=interval)
                return "exited"
            except subprocess.TimeoutExpired:
                pass
            status = evaluation_progress(
                evaluation_id=evaluation.evaluation_id,
                items_done=min(items.count(), total),
                items_total=total,
            )
            if status == EvaluationStatus.CANCEL_REQUESTED:
                process_group_stop(process, grace=grace)
                return "cancelled"
            if status != EvaluationStatus.RUNNING:
                process_group_stop(process, grace=grace)
                return "superseded"
            if time.monotonic() > deadline:
                process_group_stop(process, grace=grace)
                return "timeout"
    except BaseException:
        # The worker is stopping or the database failed: the engine does not outlive us.
        process_group_stop(process, grace=0)
        raise


def _completed(directory: Path, stderr: str, total: int) -> EvaluationOutcome:
    try:
        summary = json.loads((directory / SUMMARY_FILE).read_text(encoding="utf-8"))
        items = [
            _item(json.loads(line))
            for line in (directory / ITEMS_FILE).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return _failed(
            "Evaluation failed: the engine's results could not be read",
            _with_note(stderr, f"Unreadable results: {exc}"),
            0,
        )
    scores = {
        name: _aggregate(value)
        for name, value in (summary.get("metrics") or {}).items()
        if isinstance(value, dict)
    }
    speed = summary.get("items_per_second")
    return EvaluationOutcome(
        status=EvaluationStatus.COMPLETED,
        message="Evaluation completed",
        exit_code=0,
        stderr=stderr,
        items=items,
        scores=scores,
        items_per_second=float(speed) if isinstance(speed, int | float) else None,
        items_total=total,
    )


def _item(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": int(raw["index"]),
        "prompt": str(raw["prompt"]),
        "expected": str(raw["expected"]),
        "prediction": str(raw["prediction"]),
        "scores": {str(name): float(score) for name, score in dict(raw["scores"]).items()},
    }


def _aggregate(value: dict[str, Any]) -> dict[str, Any]:
    def number(key: str) -> float | None:
        got = value.get(key)
        return float(got) if isinstance(got, int | float) and not isinstance(got, bool) else None

    count = value.get("count")
    return {
        "mean": number("mean"),
        "count": count if isinstance(count, int) else 0,
        "ci_low": number("ci_low"),
        "ci_high": number("ci_high"),
    }
