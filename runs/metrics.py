"""A trainer's metrics.jsonl: parsed into one row per step, and summarised on the run.

The rows become RunMetric rows and the summary the run's metrics fields, both
written by `runs.services.run_finish`.
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
