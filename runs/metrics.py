"""A trainer's metrics.jsonl: parsed into one row per step, and summarised on the run.

The supervisor (`runs.supervisor`) reads the file as it grows and stores new rows
and the summary while the run trains (`runs.logs.run_metrics_store`);
`runs.services.run_finish` stores the complete series with the outcome.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
# A runaway metrics file is ingested up to this many steps.
MAX_METRIC_ROWS = 100_000


# The level of a series' first row: above any other's, so every selection by level keeps it.
FIRST_LEVEL = 31


def metric_level(position: int) -> int:
    """The level of the row at `position` (from 0, by step) of a run's series.

    The number of trailing zero bits of `position`, and FIRST_LEVEL for the first
    row: the rows of level L and above are the first and every 2**L-th after it.
    """
    if position == 0:
        return FIRST_LEVEL
    return (position & -position).bit_length() - 1


def series_level(count: int | None, max_points: int) -> int:
    """The smallest level at which a series of `count` steps keeps at most `max_points`
    (0, every step, when the count is unknown)."""
    level = 0
    if count is None:
        return level
    while math.ceil(count / 2**level) > max_points:
        level += 1
    return level


def metric_rows(rows: list[dict[str, Any]], series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` (some steps of `series`, the whole series by step) with their `level`."""
    positions = {row["step"]: position for position, row in enumerate(series)}
    return [{**row, "level": metric_level(positions.get(row["step"], 0))} for row in rows]


def complete_lines(path: Path, offset: int, *, final: bool = False) -> bytes:
    """What a process still writing `path` has added after `offset`, up to its last newline
    (`final`: everything, a last line without its newline included). Raises OSError."""
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    return data if final else data[: data.rfind(b"\n") + 1]


def _number(value: Any, *, optional: bool) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not finite")
    return number


class MetricsReader:
    """Reads a trainer's metrics.jsonl as it grows: one row per step (a later line wins).

    `read()` parses the complete lines written since the last call and returns the
    rows they added or changed; `read(final=True)` also takes a last line without
    its newline. Malformed lines are skipped and logged; a missing file is no
    metrics (yet). `rows()` is the whole series so far, by step.
    """

    def __init__(self, path: Path, *, run_id: uuid.UUID) -> None:
        self.path = path
        self.run_id = run_id
        self.offset = 0
        self.line_number = 0
        self.by_step: dict[int, dict[str, Any]] = {}
        self._full = False

    def read(self, *, final: bool = False) -> list[dict[str, Any]]:
        """The rows of the lines written since the last call (in file order)."""
        if self._full:
            return []
        try:
            data = complete_lines(self.path, self.offset, final=final)
        except OSError:
            return []
        if not data:
            return []
        self.offset += len(data)
        changed: dict[int, dict[str, Any]] = {}
        for raw in data.splitlines():
            self.line_number += 1
            row = self._row(raw)
            if row is None:
                continue
            step = row["step"]
            if step not in self.by_step and len(self.by_step) >= MAX_METRIC_ROWS:
                logger.warning(
                    "run %s: metrics.jsonl has more than %d steps; rest ignored",
                    self.run_id,
                    MAX_METRIC_ROWS,
                )
                self._full = True
                break
            self.by_step[step] = changed[step] = row
        return list(changed.values())

    def rows(self) -> list[dict[str, Any]]:
        """Every step read so far, in step order."""
        return [self.by_step[s] for s in sorted(self.by_step)]

    def _row(self, raw: bytes) -> dict[str, Any] | None:
        if not raw.strip():
            return None
        try:
            item = json.loads(raw)
            if not isinstance(item, dict):
                raise ValueError("not an object")
            step = item.get("step")
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise ValueError("step must be a non-negative integer")
            return {
                "step": step,
                "loss": _number(item.get("loss"), optional=False),
                "eval_loss": _number(item.get("eval_loss"), optional=True),
                "tokens_per_second": _number(item.get("tokens_per_second"), optional=True),
                "elapsed_seconds": _number(item.get("elapsed_seconds"), optional=True),
            }
        except (ValueError, TypeError) as exc:
            logger.warning(
                "run %s: skipping malformed line %d of metrics.jsonl (%s)",
                self.run_id,
                self.line_number,
                exc,
            )
            return None


def metrics_parse(path: Path, *, run_id: uuid.UUID) -> list[dict[str, Any]]:
    """The valid lines of a whole metrics.jsonl, one per step (a later line wins)."""
    reader = MetricsReader(path, run_id=run_id)
    reader.read(final=True)
    return reader.rows()


def metrics_summary(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Run fields summarising the series: last step and loss, how many steps, best eval loss,
    mean tokens/s."""
    if not metrics:
        return {}
    evals = [m["eval_loss"] for m in metrics if m["eval_loss"] is not None]
    speeds = [m["tokens_per_second"] for m in metrics if m["tokens_per_second"] is not None]
    return {
        "metrics_steps": metrics[-1]["step"],
        "metrics_count": len(metrics),
        "final_loss": metrics[-1]["loss"],
        "best_eval_loss": min(evals) if evals else None,
        "tokens_per_second": sum(speeds) / len(speeds) if speeds else None,
    }
