"""Executing a started run: the dry-run validation or the local trainer subprocess.

`run_execute(started=...)` takes what `runs.services.run_start` or `run_claim`
returned, does the run's work and records its outcome with
`runs.services.run_finish`. It needs only the row (configuration, output
directory) and the run's directory, not the request that launched it, so a
worker given the run executes it the same way as a synchronous request.

The trainer runs as an argument list in its own process group, with a scrubbed
environment, in the run's directory, and dies with the process that started it;
its output streams to files there. `runs.supervisor` watches it until it ends
(output, metrics, heartbeat, cancellation, timeout); when it ends, the files of
its output directory are recorded as the run's artifacts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection

from datasets.models import Dataset
from datasets.selectors import dataset_get, dataset_trace_count
from datasets.services import dataset_write_jsonl
from runs.artifacts import artifacts_scan
from runs.manifest import manifest_yaml
from runs.metrics import METRICS_FILE, metrics_parse
from runs.model_roots import trainer_model_roots
from runs.models import RunMode, RunStatus, TunixRun
from runs.outcomes import (
    RunOutcome,
    log_excerpt,
    outcome_fields,
    pending_outcome_discard,
    pending_outcome_exists,
)
from runs.outputs import output_dir_absolute, outputs_root
from runs.processes import host_name, process_start
from runs.runtime import RUNTIME_UNAVAILABLE_MESSAGE
from runs.schemas import TunixRunRequest
from runs.services import STOPPED_MESSAGE, StartedRun, run_finish, run_trainer_record
from runs.supervisor import Ending, trainer_supervise
from runs.trainer.train import CHECKPOINT_SUBDIR
from runs.training import training_report

logger = logging.getLogger(__name__)

INTERNAL_ERROR_MESSAGE = "Run failed: internal error (details in the server log)"


def run_execute(*, started: StartedRun) -> TunixRun:
    """Execute a started run, record its outcome, return the run carrying that outcome.

    Never raises for a failed run: an unexpected error ends it `failed` with an
    internal-error message (details in the log). KeyboardInterrupt and SystemExit
    (the worker or server is being stopped) stop the trainer and end the run
    `failed` as interrupted, with its output so far, and are let through. The
    returned run carries this execution's outcome, also when the database could
    not record it; when another process finished the run while it executed (the
    reaper, say), it carries the stored outcome instead, which is kept.
    """
    run = started.run
    try:
        outcome = _execute(started)
        if outcome is None:
            with contextlib.suppress(DatabaseError):
                run.refresh_from_db()
            return run
    except Exception as exc:
        logger.exception("run %s: internal error while executing", run.run_id)
        outcome = RunOutcome(
            status=RunStatus.FAILED,
            message=INTERNAL_ERROR_MESSAGE,
            stderr=f"Internal error: {type(exc).__name__}",
        )
        _record(started, outcome, reason="internal error during execution")
        return run
    except BaseException:
        logger.warning("run %s: interrupted while executing (process stopping)", run.run_id)
        _record(started, _stopped_outcome(started), reason="interrupted: its worker was stopped")
        raise
    _record(started, outcome, reason=_finish_reason(outcome))
    return run


def run_fail_unavailable(*, started: StartedRun) -> TunixRun:
    """End a claimed local run `failed`: this worker has no Tunix runtime to train with."""
    outcome = RunOutcome(
        status=RunStatus.FAILED,
        stderr=f"{RUNTIME_UNAVAILABLE_MESSAGE} (on worker host {host_name()})",
        message="Local execution failed: Tunix runtime not installed on the worker",
    )
    _record(started, outcome, reason=outcome.message)
    return started.run


def _stopped_outcome(started: StartedRun) -> RunOutcome:
    """A run whose executing process is being stopped: `failed`, with its output so far."""
    stdout = stderr = ""
    if started.run.mode == RunMode.LOCAL:
        stdout = log_excerpt(started.directory / "stdout.log")
        stderr = log_excerpt(started.directory / "stderr.log")
    return RunOutcome(
        status=RunStatus.FAILED,
        message=STOPPED_MESSAGE,
        stdout=stdout,
        stderr=f"{stderr}\n{STOPPED_MESSAGE}" if stderr else STOPPED_MESSAGE,
        metrics=metrics_parse(started.directory / METRICS_FILE, run_id=started.run.run_id),
        training=_training_of(started.run),
    )


def _training_of(run: TunixRun) -> dict[str, Any] | None:
    """The training report of a local run's output directory (None for a dry-run)."""
    if run.mode != RunMode.LOCAL:
        return None
    return training_report(output_dir_absolute(run.output_dir))


def _record(started: StartedRun, outcome: RunOutcome, *, reason: str) -> None:
    if started.recorded:
        _finish(started, outcome, reason)
    for name, value in outcome_fields(started_at=started.run.started_at, outcome=outcome).items():
        setattr(started.run, name, value)


# Pauses between tries of the final write while the database is unavailable; after
# the last one the outcome waits in the run directory for the reaper.
FINISH_RETRY_PAUSES = (0.5, 1.0, 2.0)


def _finish(started: StartedRun, outcome: RunOutcome, reason: str) -> None:
    """run_finish by the run's executor, tried again while the database is unavailable."""
    run, run_id = started.run, started.run.run_id
    for attempt, pause in enumerate((*FINISH_RETRY_PAUSES, None)):
        if run_finish(run=run, outcome=outcome, reason=reason, actor=started.actor):
            if attempt:
                pending_outcome_discard(run_id=run_id)
            return
        # run_finish keeps the outcome in the run directory only when the database failed.
        if pause is None or not pending_outcome_exists(run_id=run_id):
            return
        if not connection.in_atomic_block:
            connection.close()
        time.sleep(pause)


def _finish_reason(outcome: RunOutcome) -> str:
    if outcome.exit_code is not None:
        return f"{outcome.message} (exit code {outcome.exit_code})"
    return outcome.message


def _execute(started: StartedRun) -> RunOutcome | None:
    request = TunixRunRequest.model_validate(started.run.config)
    if started.run.mode == RunMode.LOCAL:
        return _execute_local(started, request)
    return _execute_dry_run(started.run, request)


def _manifest_for(run: TunixRun, request: TunixRunRequest, *, output_dir: str) -> str:
    return manifest_yaml(
        dataset_key=run.dataset_key,
        model_id=request.model_id,
        output_dir=output_dir,
        learning_rate=request.learning_rate,
        num_epochs=request.num_epochs,
        batch_size=request.batch_size,
        max_seq_length=request.max_seq_length,
        checkpoint_every_n_steps=request.checkpoint_every_n_steps,
        lora=request.lora.model_dump() if request.lora is not None else None,
        resume=_resume_section(run),
    )


def _resume_section(run: TunixRun) -> dict[str, str] | None:
    """The manifest's `resume` section: the checkpoints of the run this one continues."""
    if run.resumed_from_id is None:
        return None
    source_dir = (
        TunixRun.objects.filter(pk=run.resumed_from_id).values_list("output_dir", flat=True).first()
    )
    if source_dir is None:
        return None
    return {
        "run_id": str(run.resumed_from_id),
        "checkpoint_dir": str(output_dir_absolute(source_dir) / CHECKPOINT_SUBDIR),
    }


# --- Dry-run ----------------------------------------------------------------------------


def _execute_dry_run(run: TunixRun, request: TunixRunRequest) -> RunOutcome:
    from runs.trainer.errors import TrainerError

    key = run.dataset_key
    dataset = dataset_get(key=key)
    if dataset is None:
        return RunOutcome(
            status=RunStatus.FAILED,
            stderr=f"Dataset not found: {key}",
            message="Dry-run failed: dataset not found",
        )
    try:
        manifest = _manifest_for(run, request, output_dir=run.output_dir)
    except Exception as exc:
        logger.exception("run %s: manifest generation failed", run.run_id)
        return RunOutcome(
            status=RunStatus.FAILED,
            stderr=f"Manifest generation failed: {type(exc).__name__}",
            message="Dry-run failed: manifest generation error",
        )
    count = dataset_trace_count(dataset=dataset)
    if count == 0:
        return RunOutcome(
            status=RunStatus.FAILED,
            stderr="Dataset is empty (no traces found)",
            message="Dry-run failed: empty dataset",
        )
    stdout = (
        "Dry-run validation completed successfully.\n"
        "\n"
        f"Dataset: {key}\n"
        f"Model: {request.model_id}\n"
        f"Output Directory: {run.output_dir}\n"
        "\n"
        "Validation Steps:\n"
        "\u2705 Dataset manifest found\n"
        f"\u2705 Manifest YAML generated ({len(manifest)} bytes)\n"
        f"\u2705 Dataset export validated ({count} traces sampled)\n"
        "\n"
        "Training Configuration:\n"
        f"- Learning Rate: {request.learning_rate}\n"
        f"- Epochs: {request.num_epochs}\n"
        f"- Batch Size: {request.batch_size}\n"
        f"- Max Sequence Length: {request.max_seq_length}\n"
        "\n"
        "To execute this run, set dry_run=false in the request.\n"
    )
    try:
        preflight_lines = _dry_run_preflight(run, request, dataset=dataset, existing=count)
    except TrainerError as exc:
        return RunOutcome(
            status=RunStatus.FAILED,
            stderr=exc.reason,
            message=f"Dry-run failed: preflight: {_first_words(exc.reason)}",
        )
    stdout += "\nPreflight:\n" + "".join(f"- {line}\n" for line in preflight_lines)
    return RunOutcome(
        status=RunStatus.COMPLETED, stdout=stdout, message="Dry-run validation successful"
    )


DEVICE_MEMORY_LABEL = "the workers' devices (TUNIX_DEVICE_MEMORY_BYTES)"


def _dry_run_preflight(
    run: TunixRun, request: TunixRunRequest, *, dataset: Dataset, existing: int
) -> list[str]:
    """The trainer's own preflight on what the local run would be given; its report's lines.

    The same manifest (as the trainer would parse it, in the trainer's environment) and the
    records of the dataset's export (`existing` of its traces left; runs.dataset_records);
    device memory from TUNIX_DEVICE_MEMORY_BYTES, else this machine's
    (docs/decisions.md#preflight). Raises the TrainerError the trainer would end with.
    Imported here: the trainer's modules are needed by dry-runs only.
    """
    import tempfile
    from pathlib import Path

    import yaml

    from runs.dataset_records import dataset_records
    from runs.trainer.errors import DatasetError
    from runs.trainer.manifest import parse_manifest
    from runs.trainer.preflight import DeviceInfo, host_device, preflight

    text = _manifest_for(run, request, output_dir=str(output_dir_absolute(run.output_dir)))
    environ = trainer_environment()
    try:
        records = dataset_records(dataset, existing)
    except LookupError:
        raise DatasetError(f"dataset not found: {run.dataset_key}") from None
    if not records:
        raise DatasetError(f"dataset is empty: {run.dataset_key}")
    memory = settings.TUNIX_DEVICE_MEMORY_BYTES
    device = (
        DeviceInfo(platform="accelerator", memory_bytes=memory, label=DEVICE_MEMORY_LABEL)
        if memory
        else host_device()
    )
    with tempfile.TemporaryDirectory(prefix="tunix-dry-run-") as directory:
        manifest = parse_manifest(
            yaml.safe_load(text),
            manifest_path=Path(directory) / "manifest.yaml",
            environ=environ,
        )
        offline = environ.get("HF_HUB_OFFLINE") == "1"
        return preflight(manifest, records, device=device, hub_offline=offline).lines()


def _first_words(reason: str, limit: int = 120) -> str:
    """The head of a trainer reason, up to its first ': ' or ' (' (for the run's message)."""
    cut = min((i for i in (reason.find(": "), reason.find(" (")) if i > 0), default=len(reason))
    head = reason[:cut]
    return head if len(head) <= limit else head[: limit - 1].rstrip() + "\u2026"


# --- Local run --------------------------------------------------------------------------


def _prepare_failure(stderr: str) -> RunOutcome:
    return RunOutcome(
        status=RunStatus.FAILED,
        stderr=f"Failed to prepare files: {stderr}",
        message="Local execution failed: file preparation error",
    )


def _execute_local(started: StartedRun, request: TunixRunRequest) -> RunOutcome | None:
    """The trainer's outcome; None when the run was finished elsewhere while it trained."""
    run, run_dir = started.run, started.directory
    key = run.dataset_key
    try:
        (run_dir / "datasets").mkdir(parents=True, exist_ok=True)
        manifest_path = run_dir / "manifest.yaml"
        manifest_path.write_text(
            _manifest_for(run, request, output_dir=str(output_dir_absolute(run.output_dir))),
            encoding="utf-8",
        )
        dataset_write_jsonl(key=key, path=run_dir / "datasets" / f"{key}.jsonl", fmt="tunix_sft")
    except LookupError:
        return _prepare_failure(f"Dataset not found: {key}")
    except OSError as exc:
        logger.exception("run %s: preparing the run directory failed", run.run_id)
        return _prepare_failure(exc.strerror or type(exc).__name__)

    argv = [*settings.TUNIX_TRAINER_COMMAND, "--config", str(manifest_path)]
    stdout_log, stderr_log = run_dir / "stdout.log", run_dir / "stderr.log"
    with stdout_log.open("wb") as out, stderr_log.open("wb") as err:
        try:
            process = process_start(
                argv,
                cwd=run_dir,
                # The run id goes into the exported model's card (docs/training.md).
                env={**trainer_environment(), "TUNIX_RUN_ID": str(run.run_id)},
                stdout=out,
                stderr=err,
            )
        except OSError as exc:
            logger.exception("run %s: the trainer command could not be started", run.run_id)
            return RunOutcome(
                status=RunStatus.FAILED,
                stderr=f"Failed to start the trainer: {exc.strerror or type(exc).__name__}",
                message="Local execution failed: trainer could not be started",
            )
    run.host, run.pid = host_name(), process.pid
    if started.recorded:
        run_trainer_record(run_id=run.run_id, host=run.host, pid=run.pid)
    timeout = settings.TUNIX_RUN_TIMEOUT_SECONDS
    supervision = trainer_supervise(
        run_id=run.run_id,
        process=process,
        run_dir=run_dir,
        record=started.recorded,
        note=lambda ending: _ENDING_NOTES.get(ending, "").format(timeout=timeout) or None,
    )
    if supervision.ending == Ending.SUPERSEDED:
        return None
    stderr = log_excerpt(stderr_log, size=supervision.stderr_bytes)
    if supervision.note:
        stderr = f"{stderr}\n{supervision.note}" if stderr else supervision.note
    outcome = RunOutcome(
        status=RunStatus.FAILED,
        message="",
        stdout=log_excerpt(stdout_log),
        stderr=stderr,
        metrics=supervision.metrics,
        artifacts=artifacts_scan(output_dir_absolute(run.output_dir)),
        training=_training_of(run),
    )
    if supervision.ending == Ending.TIMEOUT:
        outcome.status = RunStatus.TIMEOUT
        outcome.message = f"Local execution timed out after {timeout} seconds"
    elif supervision.ending == Ending.CANCELLED:
        outcome.status = RunStatus.CANCELLED
        outcome.message = "Local execution cancelled"
    elif supervision.returncode == 0:
        outcome.status = RunStatus.COMPLETED
        outcome.exit_code = 0
        outcome.message = "Local execution completed successfully"
    else:
        outcome.exit_code = code = supervision.returncode
        outcome.message = f"Local execution failed with exit code {code}"
    return outcome


# The line added to stderr.log (after what the trainer wrote) when the registry stops it.
_ENDING_NOTES = {
    Ending.TIMEOUT: "Execution timeout (exceeded {timeout} seconds)",
    Ending.CANCELLED: "Execution cancelled on request (the trainer was stopped)",
}


def trainer_environment() -> dict[str, str]:
    """The trainer's whole environment: nothing of the server's beyond the basics."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", str(settings.DATA_DIR)),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(settings.BASE_DIR),
        "HF_HUB_OFFLINE": "1",
        "TUNIX_OUTPUT_ROOTS": os.pathsep.join(
            str(p) for p in [outputs_root(), *settings.TUNIX_OUTPUT_ROOTS]
        ),
        "TUNIX_MODEL_ROOTS": trainer_model_roots(),
    }
    for name in ("LANG", "LC_ALL", "TMPDIR"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env
