"""Everything that writes runs: launch, execute, finish, reap.

One launch is `run_start` = `run_launch` (create the row `running` + an event) →
`run_execute` (dry-run validation or the local trainer subprocess; returns a
`RunOutcome` and writes nothing but the trainer's pid) → `run_finish` (one
compare-and-set update from `running` + an event + the metrics). Every status
change, the reaper's included, goes through `run_finish`.

Execution beats persistence (seed answer 8): a failed database write is logged,
rolled back, and the caller still gets the outcome. When the final write fails,
the outcome is kept as `outcome.json` in the run directory and `run_reap`
records it later.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from datasets.keys import InvalidDatasetKey, dataset_key_validate
from datasets.selectors import dataset_get, dataset_trace_count
from datasets.services import dataset_write_jsonl
from runs.models import RunEvent, RunMetric, RunMode, RunStatus, TunixRun
from runs.schemas import TunixRunRequest
from runs.selectors import run_directory

logger = logging.getLogger(__name__)

OUTPUT_LIMIT_BYTES = 10240
TRUNCATION_MARKER = f"\n\n[... output truncated to {OUTPUT_LIMIT_BYTES} bytes ...]"

RUNTIME_UNAVAILABLE_MESSAGE = (
    "Tunix runtime not available. Install with: pip install -e '.[tunix]' "
    "or set dry_run=true to validate without executing."
)
STATUS_AVAILABLE_MESSAGE = (
    "Tunix runtime is available. Supports dry-run validation and local execution. "
    "Use POST /api/tunix/run with dry_run=false to execute training runs locally."
)
STATUS_UNAVAILABLE_MESSAGE = (
    "Tunix runtime not installed. Dry-run mode available for validation. "
    "Install Tunix for local execution: pip install -e '.[tunix]'"
)
INTERRUPTED_MESSAGE = (
    "Run interrupted: the process executing it is gone (server restart or killed worker)"
)
INTERNAL_ERROR_MESSAGE = "Run failed: internal error (details in the server log)"
TUNIX_DISTRIBUTION = "google-tunix"

# Seconds between SIGTERM and SIGKILL when a trainer's process group is stopped.
KILL_GRACE_SECONDS = 3.0
# A runaway metrics file is ingested up to this many steps.
MAX_METRIC_ROWS = 100_000
OUTCOME_FILE = "outcome.json"
# libyaml's emitter when PyYAML has it: the same bytes as the pure-Python dump
# (tested), four times faster, and every dry-run renders a manifest.
_YAML_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class TunixRuntimeUnavailable(Exception):
    """A local run was requested but the Tunix runtime is not installed (HTTP 501)."""

    def __init__(self) -> None:
        super().__init__(RUNTIME_UNAVAILABLE_MESSAGE)


class InvalidRunRequest(ValueError):
    """The request cannot be launched; `field` names the culprit (HTTP 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class RunOutcome:
    """The result of executing a run, before (or without) it reaching the database."""

    status: str
    message: str
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    completed_at: datetime = field(default_factory=timezone.now)
    metrics: list[dict[str, Any]] = field(default_factory=list)


# --- Tunix runtime -----------------------------------------------------------------


def tunix_runtime_available() -> bool:
    """Whether the runtime module can be imported, found without importing it (no JAX here)."""
    try:
        return importlib.util.find_spec(settings.TUNIX_RUNTIME_MODULE) is not None
    except (ImportError, ValueError):
        return False


def tunix_status() -> dict[str, Any]:
    """GET /api/tunix/status (REFERENCE §6.1)."""
    available = tunix_runtime_available()
    version: str | None = None
    if available:
        try:
            version = importlib.metadata.version(TUNIX_DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
    return {
        "available": available,
        "version": version,
        "runtime_required": not available,
        "message": STATUS_AVAILABLE_MESSAGE if available else STATUS_UNAVAILABLE_MESSAGE,
    }


# --- Manifest, output directory, truncation --------------------------------------------


def manifest_yaml(
    *,
    dataset_key: str,
    model_id: str,
    output_dir: str,
    learning_rate: float,
    num_epochs: int,
    batch_size: int,
    max_seq_length: int,
) -> str:
    """The training manifest YAML of REFERENCE §6.3, byte for byte."""
    manifest = {
        "version": "1.0",
        "runner": "tunix",
        "mode": "sft",
        "model": {"model_id": model_id},
        "dataset": {"format": "tunix_sft", "path": f"./datasets/{dataset_key}.jsonl"},
        "training": {
            "learning_rate": learning_rate,
            "num_epochs": num_epochs,
            "batch_size": batch_size,
            "max_seq_length": max_seq_length,
        },
        "output": {"output_dir": output_dir},
    }
    return yaml.dump(
        manifest, Dumper=_YAML_DUMPER, sort_keys=False, default_flow_style=False, allow_unicode=True
    )


def outputs_root() -> Path:
    return settings.DATA_DIR / "outputs"


def output_dir_resolve(*, run_id: uuid.UUID, output_dir: str | None) -> tuple[str, Path]:
    """(stored form, absolute path) of a run's output directory, or InvalidRunRequest.

    Default `outputs/tunix_run_<first 8 of run_id>` under the data directory. A
    relative path resolves under DATA_DIR/outputs and may not leave it; an absolute
    one must lie under the data directory or an operator's TUNIX_OUTPUT_ROOTS. The
    stored form is relative to the data directory whenever the path is under it.
    """
    data_dir = Path(settings.DATA_DIR).resolve()
    root = data_dir / "outputs"
    if output_dir is None:
        resolved = root / f"tunix_run_{str(run_id)[:8]}"
    else:
        if "\x00" in output_dir or not output_dir.strip():
            raise InvalidRunRequest("output_dir", "output_dir must be a non-empty path")
        given = Path(output_dir)
        if given.is_absolute():
            resolved = given.resolve()
            allowed = [data_dir, *settings.TUNIX_OUTPUT_ROOTS]
            if not any(_strictly_under(resolved, Path(r).resolve()) for r in allowed):
                raise InvalidRunRequest(
                    "output_dir",
                    "output_dir must be a relative path (under the data directory's outputs/) "
                    "or lie under one of the allowed output roots",
                )
        else:
            resolved = (root / given).resolve()
            if not _strictly_under(resolved, root):
                raise InvalidRunRequest(
                    "output_dir", "output_dir must stay inside the outputs directory"
                )
    if resolved.is_relative_to(data_dir):
        stored = resolved.relative_to(data_dir).as_posix()
    else:
        stored = str(resolved)
    if len(stored) > 512:
        raise InvalidRunRequest("output_dir", "output_dir is longer than 512 characters")
    return stored, resolved


def output_dir_absolute(stored: str) -> Path:
    """The absolute path of a stored output_dir."""
    path = Path(stored)
    return path if path.is_absolute() else Path(settings.DATA_DIR) / path


def _strictly_under(path: Path, root: Path) -> bool:
    return path != root and path.is_relative_to(root)


def truncate_output(data: bytes) -> str:
    """REFERENCE §6.6: the first 10,240 bytes, a cut character dropped, then the marker."""
    if not data:
        return ""
    if len(data) <= OUTPUT_LIMIT_BYTES:
        return data.decode("utf-8", errors="replace")
    return data[:OUTPUT_LIMIT_BYTES].decode("utf-8", errors="ignore") + TRUNCATION_MARKER


def _read_head(path: Path) -> bytes:
    """Enough of a log file for `truncate_output` (one byte more than the limit)."""
    try:
        with path.open("rb") as handle:
            return handle.read(OUTPUT_LIMIT_BYTES + 1)
    except OSError:
        return b""


# --- Supervisor identity (for the reaper) ----------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


@functools.cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_fingerprint(pid: int) -> str:
    """A token naming this very process (boot id + start time), "" where /proc is absent."""
    stat = _proc_stat(pid)
    if stat is None or len(stat) < 20:
        return ""
    return f"{_boot_id()}:{stat[19]}"


def process_alive(pid: int, fingerprint: str = "") -> bool:
    """Whether `pid` is a live (non-zombie) process and, given a fingerprint, the same one."""
    if pid <= 0:
        return False
    if Path("/proc/self/stat").exists():
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        return not fingerprint or process_fingerprint(pid) == fingerprint
    try:  # pragma: no cover - platforms without /proc
        os.kill(pid, 0)
    except ProcessLookupError:  # pragma: no cover
        return False
    except PermissionError:  # pragma: no cover
        return True
    return True  # pragma: no cover


# --- Launch --------------------------------------------------------------------------


def run_start(*, request: TunixRunRequest) -> TunixRun:
    """Launch a run synchronously: validate, create the row, execute, record the outcome.

    Raises TunixRuntimeUnavailable (501) or InvalidRunRequest (422) before any row
    exists. Returns the run with its final values (an unsaved instance carrying the
    outcome when the database could not record it).
    """
    mode = RunMode.DRY_RUN if request.dry_run else RunMode.LOCAL
    if mode == RunMode.LOCAL and not tunix_runtime_available():
        raise TunixRuntimeUnavailable
    try:
        dataset_key_validate(request.dataset_key)
    except InvalidDatasetKey as exc:
        raise InvalidRunRequest("dataset_key", str(exc)) from None
    run_id = uuid.uuid4()
    stored_output_dir, _ = output_dir_resolve(run_id=run_id, output_dir=request.output_dir)
    run = run_launch(request=request, run_id=run_id, output_dir=stored_output_dir)
    try:
        outcome = run_execute(run=run)
    except BaseException as exc:
        logger.exception("run %s: internal error while executing", run.run_id)
        outcome = RunOutcome(
            status=RunStatus.FAILED,
            message=INTERNAL_ERROR_MESSAGE,
            stderr=f"Internal error: {type(exc).__name__}",
        )
        run = run_finish(run=run, outcome=outcome, reason="internal error during execution")
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt / SystemExit: recorded, then let them through
        return run
    return run_finish(run=run, outcome=outcome, reason=_finish_reason(outcome))


def _finish_reason(outcome: RunOutcome) -> str:
    if outcome.exit_code is not None:
        return f"{outcome.message} (exit code {outcome.exit_code})"
    return outcome.message


def run_launch(
    *, request: TunixRunRequest, output_dir: str, run_id: uuid.UUID | None = None
) -> TunixRun:
    """Create the run row (`running`) and its first event; the row is a promise to finish it.

    A failed insert is logged and rolled back; the returned (unsaved) run is still
    executed, as the original did.
    """
    mode = RunMode.DRY_RUN if request.dry_run else RunMode.LOCAL
    now = timezone.now()
    pid = os.getpid()
    run = TunixRun(
        run_id=run_id or uuid.uuid4(),
        dataset_key=request.dataset_key,
        model_id=request.model_id,
        mode=mode,
        status=RunStatus.RUNNING,
        started_at=now,
        created_at=now,
        output_dir=output_dir,
        config=request.model_dump(mode="json"),
        supervisor_host=socket.gethostname()[:255],
        supervisor_pid=pid,
        supervisor_fingerprint=process_fingerprint(pid),
    )
    try:
        with transaction.atomic():
            _limit_lock_wait()
            run.save(force_insert=True)
            RunEvent.objects.create(
                run=run, from_status=None, to_status=RunStatus.RUNNING, reason=f"launched ({mode})"
            )
    except DatabaseError:
        logger.exception("Failed to create run record %s", run.run_id)
        run._state.adding = True
    return run


def run_execute(*, run: TunixRun) -> RunOutcome:
    """Do the run's work (dry-run validation or the local trainer); writes only the pid."""
    request = TunixRunRequest.model_validate(run.config)
    if run.mode == RunMode.LOCAL:
        return _execute_local(run, request)
    return _execute_dry_run(run, request)


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


def _prepare_failure(stderr: str) -> RunOutcome:
    return RunOutcome(
        status=RunStatus.FAILED,
        stderr=f"Failed to prepare files: {stderr}",
        message="Local execution failed: file preparation error",
    )


def _execute_local(run: TunixRun, request: TunixRunRequest) -> RunOutcome:
    key = run.dataset_key
    run_dir = run_directory(run_id=run.run_id)
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
        _record_process(run, process.pid)
        timed_out = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # Timeout, or this process is being interrupted: the trainer goes too.
            _stop_process_group(process)

    metrics = metrics_parse(run_dir / "metrics.jsonl", run_id=run.run_id)
    stdout = truncate_output(_read_head(stdout_log))
    stderr = truncate_output(_read_head(stderr_log))
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


def _record_process(run: TunixRun, pid: int) -> None:
    """Note the trainer's host and pid on the running row (best effort)."""
    run.host, run.pid = socket.gethostname()[:255], pid
    try:
        with transaction.atomic():
            _limit_lock_wait()
            TunixRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
                host=run.host, pid=pid
            )
    except DatabaseError:
        logger.exception("Failed to record the trainer pid of run %s", run.run_id)


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it after a grace period, reap the leader."""
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
    # Whatever the leader left behind in its group (children that ignored SIGTERM,
    # daemons it forked) goes too.
    _signal_group(process.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# --- Metrics ---------------------------------------------------------------------------


def _number(value: Any, *, optional: bool) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not finite")
    return number


def metrics_parse(path: Path, *, run_id: uuid.UUID) -> list[dict[str, Any]]:
    """The valid lines of a trainer's metrics.jsonl, one per step (a later line wins).

    Malformed lines are skipped and logged; a missing file is no metrics.
    """
    by_step: dict[int, dict[str, Any]] = {}
    try:
        handle = path.open("rb")
    except OSError:
        return []
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
                if not isinstance(item, dict):
                    raise ValueError("not an object")
                step = item.get("step")
                if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                    raise ValueError("step must be a non-negative integer")
                row = {
                    "step": step,
                    "loss": _number(item.get("loss"), optional=False),
                    "eval_loss": _number(item.get("eval_loss"), optional=True),
                    "tokens_per_second": _number(item.get("tokens_per_second"), optional=True),
                    "elapsed_seconds": _number(item.get("elapsed_seconds"), optional=True),
                }
            except (ValueError, TypeError) as exc:
                logger.warning(
                    "run %s: skipping malformed line %d of metrics.jsonl (%s)", run_id, number, exc
                )
                continue
            if step not in by_step and len(by_step) >= MAX_METRIC_ROWS:
                logger.warning(
                    "run %s: metrics.jsonl has more than %d steps; rest ignored",
                    run_id,
                    MAX_METRIC_ROWS,
                )
                break
            by_step[step] = row
    return [by_step[s] for s in sorted(by_step)]


def metrics_summary(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Run fields summarising the series: last step and loss, best eval loss, mean tokens/s."""
    if not metrics:
        return {}
    evals = [m["eval_loss"] for m in metrics if m["eval_loss"] is not None]
    speeds = [m["tokens_per_second"] for m in metrics if m["tokens_per_second"] is not None]
    return {
        "metrics_steps": metrics[-1]["step"],
        "final_loss": metrics[-1]["loss"],
        "best_eval_loss": min(evals) if evals else None,
        "tokens_per_second": sum(speeds) / len(speeds) if speeds else None,
    }


# --- Finish -----------------------------------------------------------------------------


def _outcome_fields(run: TunixRun, outcome: RunOutcome) -> dict[str, Any]:
    duration = max(0.0, (outcome.completed_at - run.started_at).total_seconds())
    return {
        "status": outcome.status,
        "exit_code": outcome.exit_code,
        "stdout": outcome.stdout,
        "stderr": outcome.stderr,
        "message": outcome.message,
        "completed_at": outcome.completed_at,
        "duration_seconds": duration,
        **metrics_summary(outcome.metrics),
    }


def _limit_lock_wait() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, true)",
                [f"{settings.TUNIX_RUN_DB_LOCK_TIMEOUT_MS}ms"],
            )


def run_finish(*, run: TunixRun, outcome: RunOutcome, reason: str) -> TunixRun:
    """Move a running run to its terminal status: compare-and-set, event, metrics.

    0 rows updated means someone else (the reaper) already finished it; a database
    error is logged and rolled back and the outcome saved to the run directory for
    `run_reap`. Either way the returned run carries this outcome.
    """
    fields = _outcome_fields(run, outcome)
    try:
        with transaction.atomic():
            _limit_lock_wait()
            updated = TunixRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(**fields)
            if updated:
                RunEvent.objects.create(
                    run_id=run.pk,
                    from_status=RunStatus.RUNNING,
                    to_status=outcome.status,
                    reason=reason,
                    created_at=outcome.completed_at,
                )
                RunMetric.objects.bulk_create(
                    [RunMetric(run_id=run.pk, **m) for m in outcome.metrics], batch_size=1000
                )
    except DatabaseError:
        logger.exception("Failed to update run record %s", run.run_id)
        _save_pending_outcome(run, outcome)
    else:
        if not updated and not run._state.adding:
            logger.warning(
                "run %s was no longer running when its outcome (%s) arrived; kept the stored one",
                run.run_id,
                outcome.status,
            )
    for name, value in fields.items():
        setattr(run, name, value)
    return run


def _save_pending_outcome(run: TunixRun, outcome: RunOutcome) -> None:
    if run._state.adding:
        return  # never reached the database: there is no row to finish later
    record = {
        "status": outcome.status,
        "message": outcome.message,
        "exit_code": outcome.exit_code,
        "stdout": outcome.stdout,
        "stderr": outcome.stderr,
        "completed_at": outcome.completed_at.isoformat(),
        "metrics": outcome.metrics,
    }
    try:
        run_dir = run_directory(run_id=run.run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / f".{OUTCOME_FILE}.tmp"
        tmp.write_text(json.dumps(record), encoding="utf-8")
        tmp.replace(run_dir / OUTCOME_FILE)
    except OSError:
        logger.exception("run %s: could not keep the outcome for later", run.run_id)


def _load_pending_outcome(run: TunixRun) -> RunOutcome | None:
    path = run_directory(run_id=run.run_id) / OUTCOME_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return RunOutcome(
            status=str(record["status"]),
            message=str(record["message"]),
            exit_code=record["exit_code"],
            stdout=str(record["stdout"]),
            stderr=str(record["stderr"]),
            completed_at=datetime.fromisoformat(record["completed_at"]),
            metrics=list(record["metrics"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        logger.exception("run %s: unreadable %s ignored", run.run_id, OUTCOME_FILE)
        return None


# --- Reaper ---------------------------------------------------------------------------


def run_reap(*, now: datetime | None = None, hosts_gone: Iterable[str] = ()) -> list[uuid.UUID]:
    """Finish runs left `running` that nobody will finish; return their ids.

    - A run whose outcome could not be recorded (outcome.json in its directory) gets it.
    - A run of this host whose supervising process is gone is marked `failed`
      (interrupted); a still-alive orphaned trainer of it is killed first.
    - Runs of the hosts named in `hosts_gone` (an operator's word that those machines
      are gone for good) are marked `failed` too.
    Other hosts' runs are left alone: their processes cannot be checked from here.
    """
    now = now or timezone.now()
    host = socket.gethostname()[:255]
    gone = set(hosts_gone) - {host}
    reaped: list[uuid.UUID] = []
    running = TunixRun.objects.filter(status=RunStatus.RUNNING).defer("stdout", "stderr")
    for run in running:
        pending = _load_pending_outcome(run)
        if pending is not None:
            if _finished(run, pending, "outcome recorded after a failed database write"):
                reaped.append(run.run_id)
                (run_directory(run_id=run.run_id) / OUTCOME_FILE).unlink(missing_ok=True)
            continue
        if run.supervisor_host not in gone and not _supervisor_gone(run, host):
            continue
        outcome = _interrupted_outcome(run, now)
        if _finished(run, outcome, "reaped: supervising process gone"):
            reaped.append(run.run_id)
    return reaped


def _supervisor_gone(run: TunixRun, host: str) -> bool:
    """Whether this host can tell that the process executing `run` no longer exists."""
    if run.supervisor_host != host or run.supervisor_pid is None:
        return False
    return not process_alive(run.supervisor_pid, run.supervisor_fingerprint)


def _finished(run: TunixRun, outcome: RunOutcome, reason: str) -> bool:
    run_finish(run=run, outcome=outcome, reason=reason)
    return not TunixRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).exists()


def _interrupted_outcome(run: TunixRun, now: datetime) -> RunOutcome:
    metrics: list[dict[str, Any]] = []
    stdout = stderr = ""
    if run.mode == RunMode.LOCAL:
        run_dir = run_directory(run_id=run.run_id)
        if run.pid is not None and run.host == socket.gethostname()[:255]:
            _kill_orphans(run.pid, run_dir)
        stdout = truncate_output(_read_head(run_dir / "stdout.log"))
        stderr = truncate_output(_read_head(run_dir / "stderr.log"))
        metrics = metrics_parse(run_dir / "metrics.jsonl", run_id=run.run_id)
    return RunOutcome(
        status=RunStatus.FAILED,
        message=INTERRUPTED_MESSAGE,
        stdout=stdout,
        stderr=f"{stderr}\n{INTERRUPTED_MESSAGE}" if stderr else INTERRUPTED_MESSAGE,
        completed_at=now,
        metrics=metrics,
    )


def _orphans(pgid: int, run_dir: Path) -> Iterable[int]:
    """Live processes of process group `pgid` working in `run_dir` (Linux /proc)."""
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:  # pragma: no cover - no /proc
        return []
    found = []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is None or stat[0] in ("Z", "X") or len(stat) < 3 or stat[2] != str(pgid):
            continue
        with contextlib.suppress(OSError):
            if (entry / "cwd").readlink().resolve() == run_dir.resolve():
                found.append(int(entry.name))
    return found


def _kill_orphans(pgid: int, run_dir: Path) -> None:
    """Kill a dead run's trainer group, if its processes still work in the run directory.

    The cwd check keeps a recycled pid of an unrelated process safe.
    """
    if not list(_orphans(pgid, run_dir)):
        return
    logger.warning("killing the orphaned trainer process group %d of %s", pgid, run_dir.name)
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    while time.monotonic() < deadline and list(_orphans(pgid, run_dir)):
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)


# --- Response shape --------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def run_response(run: TunixRun) -> dict[str, Any]:
    """The TunixRunResponse dict of a run (REFERENCE §6.4; timestamps end in +00:00)."""
    return {
        "run_id": run.run_id,
        "status": run.status,
        "mode": run.mode,
        "dataset_key": run.dataset_key,
        "model_id": run.model_id,
        "output_dir": run.output_dir,
        "exit_code": run.exit_code,
        "stdout": run.stdout,
        "stderr": run.stderr,
        "duration_seconds": run.duration_seconds,
        "started_at": _iso(run.started_at),
        "completed_at": _iso(run.completed_at),
        "message": run.message,
        "metrics": run.metrics_summary,
    }
