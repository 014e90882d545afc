"""What executing a run produced, before (or without) it reaching the database.

- `RunOutcome`: the terminal status, message, exit code, output excerpts and metrics.
- Output excerpts: the first 10 KB of a log, cut as docs/decisions.md#output-truncation
  says; the complete logs stay in the run directory.
- The pending-outcome file: when the final database write fails, the outcome waits
  as `outcome.json` in the run directory until `runs.services.run_reap` records it
  (docs/decisions.md#database-failure-never-fails-the-user).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.utils import timezone

from runs.metrics import metrics_summary
from runs.selectors import run_directory

logger = logging.getLogger(__name__)

OUTPUT_LIMIT_BYTES = 10240
TRUNCATION_MARKER = f"\n\n[... output truncated to {OUTPUT_LIMIT_BYTES} bytes ...]"
OUTCOME_FILE = "outcome.json"


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
    # The files of a local run's output directory when it ended (runs.artifacts);
    # None for a dry-run, or when nothing was recorded.
    artifacts: list[dict[str, Any]] | None = None
    # A local run's training report (runs.training); None for a dry-run, or when
    # its trainer reported nothing.
    training: dict[str, Any] | None = None


def outcome_fields(*, started_at: datetime, outcome: RunOutcome) -> dict[str, Any]:
    """The run's fields once it has this outcome (the metrics rows aside)."""
    duration = max(0.0, (outcome.completed_at - started_at).total_seconds())
    return {
        "status": outcome.status,
        "exit_code": outcome.exit_code,
        "stdout": outcome.stdout,
        "stderr": outcome.stderr,
        "message": outcome.message,
        "completed_at": outcome.completed_at,
        "duration_seconds": duration,
        "artifacts": outcome.artifacts,
        "training": outcome.training,
        **metrics_summary(outcome.metrics),
    }


# --- Output excerpts -------------------------------------------------------------------


def truncate_output(data: bytes) -> str:
    """The first 10,240 bytes, a character cut at the limit dropped, then the marker."""
    if not data:
        return ""
    if len(data) <= OUTPUT_LIMIT_BYTES:
        return data.decode("utf-8", errors="replace")
    return data[:OUTPUT_LIMIT_BYTES].decode("utf-8", errors="ignore") + TRUNCATION_MARKER


def log_excerpt(path: Path, *, size: int | None = None) -> str:
    """The stored excerpt of a log file, or of its first `size` bytes ("" if unreadable)."""
    # One byte more than the limit tells truncate_output that there is more.
    limit = OUTPUT_LIMIT_BYTES + 1 if size is None else min(size, OUTPUT_LIMIT_BYTES + 1)
    try:
        with path.open("rb") as handle:
            return truncate_output(handle.read(limit))
    except OSError:
        return ""


# --- The pending-outcome file ------------------------------------------------------------


def pending_outcome_save(*, run_id: uuid.UUID, outcome: RunOutcome) -> None:
    """Keep an outcome the database refused, for the reaper (best effort, atomic rename)."""
    record = {
        "status": outcome.status,
        "message": outcome.message,
        "exit_code": outcome.exit_code,
        "stdout": outcome.stdout,
        "stderr": outcome.stderr,
        "completed_at": outcome.completed_at.isoformat(),
        "metrics": outcome.metrics,
        "artifacts": outcome.artifacts,
        "training": outcome.training,
    }
    try:
        run_dir = run_directory(run_id=run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / f".{OUTCOME_FILE}.tmp"
        tmp.write_text(json.dumps(record), encoding="utf-8")
        tmp.replace(run_dir / OUTCOME_FILE)
    except OSError:
        logger.exception("run %s: could not keep the outcome for later", run_id)


def pending_outcome_load(*, run_id: uuid.UUID) -> RunOutcome | None:
    """The outcome kept for a run, or None (none kept, or unreadable: logged)."""
    path = run_directory(run_id=run_id) / OUTCOME_FILE
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
            artifacts=record.get("artifacts"),
            training=record.get("training"),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        logger.exception("run %s: unreadable %s ignored", run_id, OUTCOME_FILE)
        return None


def pending_outcome_exists(*, run_id: uuid.UUID) -> bool:
    """Whether an outcome is kept for a run (its final write failed)."""
    return (run_directory(run_id=run_id) / OUTCOME_FILE).is_file()


def pending_outcome_discard(*, run_id: uuid.UUID) -> None:
    """Remove the kept outcome once the database has it."""
    (run_directory(run_id=run_id) / OUTCOME_FILE).unlink(missing_ok=True)
