"""Executing a started run: the dry-run validation or the local trainer subprocess.

`run_execute(started=...)` takes what `runs.services.run_start` returned, does the
run's work and records its outcome with `runs.services.run_finish`. It needs only
the row (configuration, output directory) and the run's directory, not the request
that launched it, so another process (a worker given the run) can execute it.

The trainer runs as an argument list in its own process group, with a scrubbed
environment, in the run's directory; its output streams to files there, and the
group is killed on timeout.
"""

from __future__ import annotations

import logging
import os
import subprocess

from django.conf import settings

from datasets.selectors import dataset_get, dataset_trace_count
from datasets.services import dataset_write_jsonl
from runs.manifest import manifest_yaml
from runs.metrics import METRICS_FILE, metrics_parse
from runs.models import RunMode, RunStatus, TunixRun
from runs.outcomes import RunOutcome, log_excerpt, outcome_fields
from runs.outputs import output_dir_absolute, outputs_root
from runs.processes import host_name, process_group_stop
from runs.runtime import RUNTIME_UNAVAILABLE_MESSAGE
from runs.schemas import TunixRunRequest
from runs.services import StartedRun, run_finish, run_trainer_record

logger = logging.getLogger(__name__)

INTERNAL_ERROR_MESSAGE = "Run failed: internal error (details in the server log)"


def run_execute(*, started: StartedRun) -> TunixRun:
    """Execute a started run, record its outcome, return the run carrying that outcome.

    Never raises for a failed run: an unexpected error ends it `failed` with an
    internal-error message (details in the log). KeyboardInterrupt and SystemExit
    are recorded the same way, then let through. The returned run carries this
    execution's outcome, also when the database could not record it or another
    process finished the run first (the stored row keeps that one).
    """
    run = started.run
    try:
        outcome = _execute(started)
    except BaseException as exc:
        logger.exception("run %s: internal error while executing", run.run_id)
        outcome = RunOutcome(
            status=RunStatus.FAILED,
            message=INTERNAL_ERROR_MESSAGE,
            stderr=f"Internal error: {type(exc).__name__}",
        )
        _record(started, outcome, reason="internal error during execution")
        if not isinstance(exc, Exception):
            raise
        return run
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


def _record(started: StartedRun, outcome: RunOutcome, *, reason: str) -> None:
    if started.recorded:
        run_finish(run=started.run, outcome=outcome, reason=reason)
    for name, value in outcome_fields(started_at=started.run.started_at, outcome=outcome).items():
        setattr(started.run, name, value)


def _finish_reason(outcome: RunOutcome) -> str:
    if outcome.exit_code is not None:
        return f"{outcome.message} (exit code {outcome.exit_code})"
    return outcome.message


def _execute(started: StartedRun) -> RunOutcome:
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
    )


# --- Dry-run ----------------------------------------------------------------------------


def _execute_dry_run(run: TunixRun, request: TunixRunRequest) -> RunOutcome:
    key = run.dataset_key
    if dataset_get(key=key) is None:
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
    count = dataset_trace_count(key=key)
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
    return RunOutcome(
        status=RunStatus.COMPLETED, stdout=stdout, message="Dry-run validation successful"
    )


# --- Local run --------------------------------------------------------------------------


def _prepare_failure(stderr: str) -> RunOutcome:
    return RunOutcome(
        status=RunStatus.FAILED,
        stderr=f"Failed to prepare files: {stderr}",
        message="Local execution failed: file preparation error",
    )


def _execute_local(started: StartedRun, request: TunixRunRequest) -> RunOutcome:
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
    timeout = settings.TUNIX_RUN_TIMEOUT_SECONDS
    stdout_log, stderr_log = run_dir / "stdout.log", run_dir / "stderr.log"
    with stdout_log.open("wb") as out, stderr_log.open("wb") as err:
        try:
            process = subprocess.Popen(
                argv,
                cwd=run_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=trainer_environment(),
                start_new_session=True,
                close_fds=True,
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
        timed_out = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # Timeout, or this process is being interrupted: the trainer goes too.
            process_group_stop(process)

    metrics = metrics_parse(run_dir / METRICS_FILE, run_id=run.run_id)
    stdout = log_excerpt(stdout_log)
    stderr = log_excerpt(stderr_log)
    if timed_out:
        note = f"Execution timeout (exceeded {timeout} seconds)"
        with stderr_log.open("ab") as err:
            err.write(f"\n{note}\n".encode())
        stderr = f"{stderr}\n{note}" if stderr else note
        return RunOutcome(
            status=RunStatus.TIMEOUT,
            stdout=stdout,
            stderr=stderr,
            message=f"Local execution timed out after {timeout} seconds",
            metrics=metrics,
        )
    code = process.returncode
    if code == 0:
        return RunOutcome(
            status=RunStatus.COMPLETED,
            exit_code=0,
            stdout=stdout,
            stderr=stderr,
            message="Local execution completed successfully",
            metrics=metrics,
        )
    return RunOutcome(
        status=RunStatus.FAILED,
        exit_code=code,
        stdout=stdout,
        stderr=stderr,
        message=f"Local execution failed with exit code {code}",
        metrics=metrics,
    )


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
    }
    for name in ("LANG", "LC_ALL", "TMPDIR"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env
